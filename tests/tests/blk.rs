//! virtio-blk driven from inside the probe guest, on every machine: microvm
//! (virtio-mmio), pc (virtio-pci over mechanism #1) and q35 (virtio-pci
//! over ECAM): data lands at the right offsets, read-only and -snapshot
//! leave the image alone, writethrough survives SIGKILL, malformed
//! descriptors don't stop the device; and qcow2 images (with a backing
//! file) work and stay valid. Also (ignored until the platform refactor
//! lands): a guest-moved BAR, and writes that survive a guest reset under
//! `-snapshot`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use casemate_tests::blkcheck::check;
use casemate_tests::{bin, boot_probe, have, in_ci, kvm_or_skip, Scratch, Watchdog};

const DISK: usize = 16 << 20;

fn raw_disk(s: &Scratch, name: &str) -> String {
    s.file(name, &vec![0u8; DISK])
}

fn drive(path: &str, extra: &str) -> String {
    format!("file={path},if=virtio{extra}")
}

/// The transport the probe reports on each machine.
fn transport(machine: &str) -> &'static str {
    if machine == "microvm" {
        "mmio"
    } else {
        "pci"
    }
}

/// One `#[test]` per machine for a scenario taking the machine's name.
macro_rules! on_every_machine {
    ($scenario:ident) => {
        mod $scenario {
            #[test]
            fn microvm() {
                super::$scenario("microvm");
            }
            #[test]
            fn pc() {
                super::$scenario("pc");
            }
            #[test]
            fn q35() {
                super::$scenario("q35");
            }
        }
    };
}

/// As `on_every_machine!`, for the listed machines, each test ignored: the
/// scenario needs VMM work not merged yet.
macro_rules! pending_on {
    ($scenario:ident: $($machine:ident),+) => {
        mod $scenario {
            $(
                #[test]
                fn $machine() {
                    super::$scenario(stringify!($machine));
                }
            )+
        }
    };
}

on_every_machine!(guest_patterns_land_at_the_right_offsets);
on_every_machine!(read_only_and_snapshot_leave_the_image_byte_identical);
on_every_machine!(writethrough_write_survives_sigkill);
on_every_machine!(malformed_descriptors_fail_requests_not_the_vmm);
pending_on!(moved_bar_keeps_the_disk_working: q35, pc);
pending_on!(snapshot_writes_survive_a_guest_reset: microvm, pc, q35);
pending_on!(with_event_idx_patterns_land_too: microvm, q35);

fn guest_patterns_land_at_the_right_offsets(machine: &str) {
    patterns_land(machine, "probe=blk", "0");
}

/// The same with the probe asking for VIRTIO_RING_F_EVENT_IDX: the device
/// must write `avail_event` or the probe stops notifying and times out.
fn with_event_idx_patterns_land_too(machine: &str) {
    patterns_land(machine, "probe=blk event_idx=1", "1");
}

fn patterns_land(machine: &str, append: &str, event_idx: &str) {
    if !kvm_or_skip(&format!("{append} on {machine}")) {
        return;
    }
    let s = Scratch::new(&format!("{machine}-blk-raw-{event_idx}"));
    let d = raw_disk(&s, "d.raw");
    let (r, out) = boot_probe(&[
        "-M",
        machine,
        "-drive",
        &drive(&d, ",format=raw"),
        "-append",
        append,
    ]);
    r.assert_ok();
    assert_eq!(r.want("event_idx"), event_idx, "{}", r.raw);
    assert_eq!(r.want("transport"), transport(machine));
    let console = String::from_utf8_lossy(&out.stdout);
    // q35's probe must reach the device through the MCFG's ECAM window.
    let access = match machine {
        "q35" => Some("access=ecam"),
        "pc" => Some("access=cam"),
        _ => None,
    };
    if let Some(a) = access {
        assert!(console.contains(a), "expected PCI {a}:\n{console}");
    } else {
        // Announced in the DSDT (LNRO0005), as QEMU's microvm does with ACPI.
        assert_eq!(r.want("src"), "dsdt", "{}", r.raw);
    }
    let image = std::fs::read(&d).unwrap();
    assert_eq!(image.len(), DISK, "image size unchanged");
    let n = check(&console, &image).unwrap_or_else(|e| panic!("{e}\n{console}"));
    assert!(n >= 19, "only {n} sectors checked");
}

fn read_only_and_snapshot_leave_the_image_byte_identical(machine: &str) {
    if !kvm_or_skip(&format!(
        "read_only_and_snapshot_leave_the_image_byte_identical on {machine}"
    )) {
        return;
    }
    let s = Scratch::new(&format!("{machine}-blk-ro"));
    let d = s.file(
        "d.raw",
        &(0..DISK).map(|i| (i / 512) as u8).collect::<Vec<u8>>(),
    );
    let before = std::fs::read(&d).unwrap();
    let (r, _) = boot_probe(&[
        "-M",
        machine,
        "-drive",
        &drive(&d, ",format=raw,readonly=on"),
        "-append",
        "probe=blk",
    ]);
    r.assert_ok();
    assert_eq!(r.want("transport"), transport(machine));
    assert_eq!(r.want("ro"), "1", "{}", r.raw);
    assert!(
        std::fs::read(&d).unwrap() == before,
        "read-only image changed"
    );
    let (r, out) = boot_probe(&[
        "-M",
        machine,
        "-drive",
        &drive(&d, ",format=raw"),
        "-snapshot",
        "-append",
        "probe=blk",
    ]);
    r.assert_ok();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("blk wrote lba="),
        "the guest did write"
    );
    assert!(
        std::fs::read(&d).unwrap() == before,
        "-snapshot image changed"
    );
}

fn writethrough_write_survives_sigkill(machine: &str) {
    if !kvm_or_skip(&format!("writethrough_write_survives_sigkill on {machine}")) {
        return;
    }
    let s = Scratch::new(&format!("{machine}-blk-kill"));
    let d = raw_disk(&s, "d.raw");
    let mut child = Command::new(bin("casemate"))
        .args(["-M", machine])
        .args(["-drive", &drive(&d, ",format=raw,cache=writethrough")])
        .args(["-append", "probe=blk wait_after_write=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dog = Watchdog::arm(child.id(), std::time::Duration::from_secs(60));
    let mut console = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let seen = loop {
        match lines.next() {
            Some(Ok(l)) => {
                console.push_str(&l);
                console.push('\n');
                if l.contains("blk write_done") {
                    break true;
                }
            }
            _ => break false,
        }
    };
    child.kill().unwrap();
    assert!(
        !dog.disarm(),
        "VMM hung before the guest's write:\n{console}"
    );
    child.wait().unwrap();
    assert!(seen, "guest never reported a completed write:\n{console}");
    let t = format!("transport={}", transport(machine));
    assert!(console.contains(&t), "expected {t}:\n{console}");
    let image = std::fs::read(&d).unwrap();
    check(&console, &image)
        .unwrap_or_else(|e| panic!("completed write lost after SIGKILL: {e}\n{console}"));
}

fn malformed_descriptors_fail_requests_not_the_vmm(machine: &str) {
    if !kvm_or_skip(&format!(
        "malformed_descriptors_fail_requests_not_the_vmm on {machine}"
    )) {
        return;
    }
    let s = Scratch::new(&format!("{machine}-blk-evil"));
    let d = raw_disk(&s, "d.raw");
    let (r, out) = boot_probe(&[
        "-M",
        machine,
        "-drive",
        &drive(&d, ",format=raw"),
        "-append",
        "probe=blk-evil",
    ]);
    r.assert_ok();
    assert_eq!(r.want("transport"), transport(machine));
    assert_eq!(r.want("round_trip"), "1");
    let console = String::from_utf8_lossy(&out.stdout);
    let cases = console.lines().filter(|l| l.contains("evil case=")).count();
    assert!(cases >= 7, "{console}");
    assert!(
        !console.contains("result=no-completion"),
        "a request hung:\n{console}"
    );
    assert_eq!(
        std::fs::metadata(&d).unwrap().len(),
        DISK as u64,
        "nothing written past the disk end"
    );
}

/// The worker's polling (`-object iothread,poll-max-ns=`, default 32768)
/// changes when it sleeps, never what it does: off, and at 1 ms (the
/// worker then polls through most of each guest turn), the probe's
/// patterns land as with the default the other tests run.
#[test]
fn iothread_polling_off_or_long_keeps_the_data_right() {
    if !kvm_or_skip("iothread_polling_off_or_long_keeps_the_data_right") {
        return;
    }
    for ns in ["0", "1000000"] {
        let s = Scratch::new(&format!("blk-iothread-{ns}"));
        let d = raw_disk(&s, "d.raw");
        let (r, out) = boot_probe(&[
            "-M",
            "q35",
            "-object",
            &format!("iothread,id=io0,poll-max-ns={ns}"),
            "-drive",
            &format!("file={d},if=none,id=d0,format=raw"),
            "-device",
            "virtio-blk-pci,drive=d0,iothread=io0",
            "-append",
            "probe=blk",
        ]);
        r.assert_ok();
        let console = String::from_utf8_lossy(&out.stdout);
        let n = check(&console, &std::fs::read(&d).unwrap())
            .unwrap_or_else(|e| panic!("poll-max-ns={ns}: {e}\n{console}"));
        assert!(n >= 19, "poll-max-ns={ns}: only {n} sectors checked");
    }
}

#[test]
fn acpi_off_announces_the_disk_on_the_command_line() {
    if !kvm_or_skip("acpi_off_announces_the_disk_on_the_command_line") {
        return;
    }
    let s = Scratch::new("blk-acpi-off");
    let d = raw_disk(&s, "d.raw");
    // No ACPI: the probe ends the VM through the i8042 (-no-reboot).
    let (r, out) = boot_probe(&[
        "-M",
        "microvm,acpi=off",
        "-no-reboot",
        "-drive",
        &drive(&d, ",format=raw"),
        "-append",
        "probe=blk",
    ]);
    r.assert_ok();
    assert_eq!(r.want("src"), "cmdline", "{}", r.raw);
    let console = String::from_utf8_lossy(&out.stdout);
    let n =
        check(&console, &std::fs::read(&d).unwrap()).unwrap_or_else(|e| panic!("{e}\n{console}"));
    assert!(n >= 19, "only {n} sectors checked");
}

#[test]
fn qcow2_plain_and_with_backing_file_work_and_stay_valid() {
    if !kvm_or_skip("qcow2_plain_and_with_backing_file_work_and_stay_valid") {
        return;
    }
    if !have("qemu-img") {
        assert!(
            !in_ci(),
            "qemu-img missing in CI: the test command installs it"
        );
        println!(
            "SKIP qcow2_plain_and_with_backing_file_work_and_stay_valid: qemu-img is not installed"
        );
        return;
    }
    let s = Scratch::new("blk-qcow2");
    let base = s.file("base.raw", &vec![0x11u8; DISK]);
    let plain = s.path("plain.qcow2").to_string_lossy().into_owned();
    let top = s.path("top.qcow2").to_string_lossy().into_owned();
    let backing = format!("backing_file={base},backing_fmt=raw");
    let create = |args: &[&str]| {
        let st = Command::new(bin("casemate-img"))
            .arg("create")
            .args(["-q", "-f", "qcow2"])
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "casemate-img create {args:?}");
    };
    create(&[&plain, "16M"]);
    create(&["-o", &backing, &top]);
    for (img, fill) in [(&plain, 0x00u8), (&top, 0x11)] {
        let (r, out) = boot_probe(&[
            "-drive",
            &drive(img, ",format=qcow2"),
            "-append",
            "probe=blk",
        ]);
        r.assert_ok();
        let chk = Command::new("qemu-img")
            .args(["check", img])
            .output()
            .unwrap();
        assert!(
            chk.status.success(),
            "qemu-img check {img}: {}",
            String::from_utf8_lossy(&chk.stdout)
        );
        let flat = s.path("flat.raw");
        let st = Command::new("qemu-img")
            .args(["convert", "-O", "raw", img, flat.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(st.success());
        let console = String::from_utf8_lossy(&out.stdout);
        let flat = std::fs::read(&flat).unwrap();
        check(&console, &flat).unwrap_or_else(|e| panic!("{img}: {e}\n{console}"));
        assert_eq!(
            flat[4096], fill,
            "{img}: unwritten sectors read as the backing file (or zero)"
        );
    }
    assert!(
        std::fs::read(&base).unwrap().iter().all(|&b| b == 0x11),
        "backing file untouched"
    );
}

/// `probe=bar-move`: the guest moves the virtio-blk function's BAR inside
/// the 32-bit window (0xc0000000..0xe0000000); the old address must read
/// all-ones and the blk sequence must pass at the new one, its data landing
/// in the file.
fn moved_bar_keeps_the_disk_working(machine: &str) {
    if !kvm_or_skip(&format!("moved_bar_keeps_the_disk_working on {machine}")) {
        return;
    }
    let s = Scratch::new(&format!("{machine}-bar-move"));
    let d = raw_disk(&s, "d.raw");
    let (r, out) = boot_probe(&[
        "-M",
        machine,
        "-drive",
        &drive(&d, ",format=raw"),
        "-append",
        "probe=bar-move",
    ]);
    r.assert_ok();
    let console = String::from_utf8_lossy(&out.stdout);
    let moved = r
        .lines
        .iter()
        .find(|l| l.contains_key("bar-move"))
        .unwrap_or_else(|| panic!("no bar-move line\n{console}"));
    let hex = |k: &str| u64::from_str_radix(moved[k].trim_start_matches("0x"), 16).unwrap();
    assert_ne!(hex("old"), hex("new"), "{console}");
    assert!(
        (0xc000_0000..0xe000_0000).contains(&hex("new")),
        "{console}"
    );
    assert_eq!(moved["old_reads"], "0xffffffff", "{console}");
    assert_eq!(r.want("common"), moved["new"], "{console}");
    let n =
        check(&console, &std::fs::read(&d).unwrap()).unwrap_or_else(|e| panic!("{e}\n{console}"));
    assert!(n >= 19, "only {n} sectors checked");
}

/// `probe=blk-reboot` with `-snapshot` (and no `-no-reboot`: Casemate
/// reboots the guest on reset): boot 1 writes a marker and a pattern and
/// resets (0xCF9 on pc/q35, the i8042 on microvm), boot 2 reads them back
/// from the overlay, and the image file is byte-identical at exit.
fn snapshot_writes_survive_a_guest_reset(machine: &str) {
    if !kvm_or_skip(&format!(
        "snapshot_writes_survive_a_guest_reset on {machine}"
    )) {
        return;
    }
    let s = Scratch::new(&format!("{machine}-blk-reboot"));
    let d = s.file(
        "d.raw",
        &(0..DISK).map(|i| (i / 512) as u8).collect::<Vec<u8>>(),
    );
    let before = std::fs::read(&d).unwrap();
    let (r, out) = boot_probe(&[
        "-M",
        machine,
        "-drive",
        &drive(&d, ",format=raw"),
        "-snapshot",
        "-append",
        "probe=blk-reboot",
    ]);
    r.assert_ok();
    let console = String::from_utf8_lossy(&out.stdout);
    let via = if machine == "microvm" { "i8042" } else { "cf9" };
    assert!(
        console.contains("probe: blk-reboot phase=1 wrote=9 "),
        "{console}"
    );
    assert!(
        console.contains(&format!("probe: blk-reboot resetting={via}")),
        "{console}"
    );
    assert!(
        console.contains("probe: blk-reboot phase=2 read=ok ok=1"),
        "{console}"
    );
    assert_eq!(
        console.matches("probe: boot entry=").count(),
        2,
        "{console}"
    );
    assert!(
        std::fs::read(&d).unwrap() == before,
        "-snapshot image changed"
    );
}
