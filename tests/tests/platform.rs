//! The device platform end to end with the probe guest: resources opened
//! once (an image handed over as an inherited fd through `-add-fd` and
//! `/dev/fdset`, readable by no path), machines as data (isapc; pc and q35
//! without ACPI, where the probe finds its CPUs in the MP table), and
//! virtio devices placed by one path on every machine.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use casemate_tests::blkcheck::check;
use casemate_tests::{bin, boot_probe, kvm_or_skip, run_with_limit, Report, Scratch};

const DISK: usize = 16 << 20;
/// Where the handed-over image lands in the child.
const CHILD_FD: i32 = 10;

#[test]
fn a_disk_from_an_inherited_fd_with_its_path_gone() {
    if !kvm_or_skip("a_disk_from_an_inherited_fd_with_its_path_gone") {
        return;
    }
    let s = Scratch::new("add-fd");
    let path = s.file("d.raw", &vec![0u8; DISK]);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    // Nothing can reach the image by name any more: only the fd.
    std::fs::remove_file(&path).unwrap();
    let fd = file.as_raw_fd();
    let mut cmd = Command::new(bin("casemate"));
    cmd.args([
        "-M",
        "q35",
        "-add-fd",
        &format!("fd={CHILD_FD},set=7"),
        "-drive",
        "file=/dev/fdset/7,format=raw,if=virtio",
        "-append",
        "probe=blk",
    ]);
    // SAFETY: dup2 is async-signal-safe; it runs in the child between fork
    // and exec and leaves CHILD_FD without FD_CLOEXEC, so casemate
    // inherits the image.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(fd, CHILD_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = run_with_limit(cmd, Duration::from_secs(60));
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{console}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Report::parse(&console).assert_ok();
    let mut image = vec![0u8; DISK];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut image, 0).unwrap();
    let n = check(&console, &image).unwrap_or_else(|e| panic!("{e}\n{console}"));
    assert!(n >= 19, "only {n} sectors checked");
}

#[test]
fn an_fdset_nobody_added_is_refused_by_name() {
    let out = casemate_tests::casemate(&[
        "-drive",
        "file=/dev/fdset/9,format=raw",
        "-append",
        "probe=hello",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/dev/fdset/9") && err.contains("set 9"),
        "{err}"
    );
}

#[test]
fn isapc_boots_from_the_mp_table_and_resets_through_the_i8042() {
    if !kvm_or_skip("isapc_boots_from_the_mp_table_and_resets_through_the_i8042") {
        return;
    }
    let (r, _) = boot_probe(&[
        "-M",
        "isapc",
        "-smp",
        "2",
        "-no-reboot",
        "-append",
        "probe=hello",
    ]);
    r.assert_ok();
    assert_eq!(r.want("acpi"), "0");
    assert_eq!(r.want("cpus_src"), "mptable");
    assert_eq!(r.want("cpus"), "2");
    assert_eq!(r.want("poweroff"), "i8042");
}

/// pc and q35 without ACPI: CPUs and (for Linux) PCI interrupts come from
/// the MP table, and the disk still works.
#[test]
fn pc_and_q35_run_without_acpi() {
    if !kvm_or_skip("pc_and_q35_run_without_acpi") {
        return;
    }
    for m in ["pc", "q35"] {
        let s = Scratch::new(&format!("noacpi-{m}"));
        let d = s.file("d.raw", &vec![0u8; DISK]);
        let (r, out) = boot_probe(&[
            "-M",
            &format!("{m},acpi=off"),
            "-no-reboot",
            "-drive",
            &format!("file={d},format=raw,if=virtio"),
            "-append",
            "probe=blk",
        ]);
        r.assert_ok();
        let console = String::from_utf8_lossy(&out.stdout);
        assert!(console.contains("transport=pci"), "{m}:\n{console}");
        let n = check(&console, &std::fs::read(&d).unwrap()).unwrap();
        assert!(n >= 19, "{m}: only {n} sectors checked");
    }
}
