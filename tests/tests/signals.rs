//! SIGTERM, SIGINT and SIGHUP end the VM as QEMU 7.2 does: the vCPUs stop,
//! in-flight requests drain, every image is flushed, one line on stderr
//! (`terminating on signal N from pid P (comm)`), exit 0. Checked on qcow2
//! under the default cache=writeback, where nothing reaches the file's
//! metadata before a flush: the same scripts run against QEMU as the peer.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use casemate_tests::blkcheck::check;
use casemate_tests::{bin, kvm_or_skip, qemu_microvm_probe, qemu_or_skip, Scratch, Watchdog};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Vmm {
    Casemate,
    Qemu,
}

/// The probe with `append` on the qcow2 at `disk` (default cache), with
/// its console piped.
fn spawn(vmm: Vmm, s: &Scratch, disk: &str, append: &str) -> Child {
    let mut c = match vmm {
        Vmm::Casemate => {
            let mut c = Command::new(bin("casemate"));
            c.args(["-drive", &format!("file={disk},format=qcow2,if=virtio")])
                .args(["-append", append]);
            c
        }
        Vmm::Qemu => {
            let mut c = qemu_microvm_probe(&s.probe(), "1", append);
            // QEMU 7.2's virtio-mmio is legacy by default; the probe
            // drives version 2 only.
            c.args(["-global", "virtio-mmio.force-legacy=false"])
                .args(["-drive", &format!("file={disk},format=qcow2,if=none,id=d0")])
                .args(["-device", "virtio-blk-device,drive=d0"]);
            c
        }
    };
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {vmm:?}: {e}"))
}

fn qemu_img(args: &[&str]) -> std::process::Output {
    Command::new("qemu-img").args(args).output().unwrap()
}

fn new_qcow2(s: &Scratch, name: &str) -> String {
    let p = s.path(name).to_string_lossy().into_owned();
    let out = qemu_img(&["create", "-q", "-f", "qcow2", &p, "64M"]);
    assert!(out.status.success(), "{out:?}");
    p
}

/// Send `sig` to the child, then reap it (within 60 s); returns its exit
/// code, console and stderr.
fn signal_and_wait(child: Child, sig: i32) -> (Option<i32>, String, String) {
    // SAFETY: kill(2) on our own child, not reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
    let dog = Watchdog::arm(child.id(), Duration::from_secs(60));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!dog.disarm(), "did not end after signal {sig}:\n{stderr}");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// `qemu-img check` passes and `qemu-img map` lists allocated data.
fn assert_consistent_and_mapped(disk: &str, who: Vmm) -> usize {
    let c = qemu_img(&["check", disk]);
    let text = String::from_utf8_lossy(&c.stdout);
    assert!(
        c.status.success(),
        "{who:?}: qemu-img check failed: {text}{}",
        String::from_utf8_lossy(&c.stderr)
    );
    let m = qemu_img(&["map", "--output=json", disk]);
    let map = String::from_utf8_lossy(&m.stdout);
    let mapped = map.matches("\"data\": true").count();
    assert!(
        mapped > 0,
        "{who:?}: nothing mapped after the signal; check said:\n{text}\nmap:\n{map}"
    );
    mapped
}

/// Random 4 KiB writes keep running until the signal; it lands once the
/// file has grown by 1 MiB (clusters allocated, metadata not yet flushed).
fn randwrite_then_sigterm(vmm: Vmm, s: &Scratch) {
    let disk = new_qcow2(s, &format!("{vmm:?}.qcow2"));
    let empty = std::fs::metadata(&disk).unwrap().len();
    let child = spawn(
        vmm,
        s,
        &disk,
        "probe=blk-bench mode=randwrite bs=4096 qd=32 ms=60000",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(&disk).unwrap().len() < empty + (1 << 20) {
        assert!(Instant::now() < deadline, "{vmm:?}: the guest never wrote");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, console, stderr) = signal_and_wait(child, libc::SIGTERM);
    assert_eq!(code, Some(0), "{vmm:?} exit status\n{console}\n{stderr}");
    let line = "terminating on signal 15 from pid ";
    assert_eq!(stderr.matches(line).count(), 1, "{vmm:?}: {stderr}");
    assert_consistent_and_mapped(&disk, vmm);
}

#[test]
fn sigterm_during_qcow2_random_writes_leaves_a_flushed_image() {
    if !kvm_or_skip("sigterm_during_qcow2_random_writes_leaves_a_flushed_image") {
        return;
    }
    let s = Scratch::new("sigterm-randwrite");
    randwrite_then_sigterm(Vmm::Casemate, &s);
}

#[test]
fn qemu_peer_sigterm_during_qcow2_random_writes() {
    if !kvm_or_skip("qemu_peer_sigterm_during_qcow2_random_writes")
        || !qemu_or_skip("qemu_peer_sigterm_during_qcow2_random_writes")
    {
        return;
    }
    let s = Scratch::new("sigterm-randwrite-qemu");
    randwrite_then_sigterm(Vmm::Qemu, &s);
}

/// The guest writes a known pattern, is told it completed (no flush), and
/// spins; after each termination signal the image holds that pattern.
fn completed_write_survives(vmm: Vmm, sig: i32, s: &Scratch) {
    let disk = new_qcow2(s, &format!("{vmm:?}-{sig}.qcow2"));
    let mut child = spawn(vmm, s, &disk, "probe=blk wait_after_write=1");
    let mut console = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let dog = Watchdog::arm(child.id(), Duration::from_secs(60));
    for l in lines.by_ref() {
        let l = l.unwrap();
        console.push_str(&l);
        console.push('\n');
        if l.contains("blk write_done") {
            break;
        }
    }
    assert!(!dog.disarm(), "{vmm:?}: no write_done:\n{console}");
    assert!(console.contains("write_done"), "{vmm:?}:\n{console}");
    let (code, _, stderr) = signal_and_wait(child, sig);
    assert_eq!(code, Some(0), "{vmm:?} signal {sig}: {stderr}");
    assert!(
        stderr.contains(&format!("terminating on signal {sig}")),
        "{vmm:?}: {stderr}"
    );
    assert_consistent_and_mapped(&disk, vmm);
    let raw = s.path(&format!("{vmm:?}-{sig}.raw"));
    let raw = raw.to_string_lossy();
    let out = qemu_img(&["convert", "-f", "qcow2", "-O", "raw", &disk, &raw]);
    assert!(out.status.success(), "{out:?}");
    let image = std::fs::read(Path::new(raw.as_ref())).unwrap();
    check(&console, &image).unwrap_or_else(|e| {
        panic!("{vmm:?}: completed write lost after signal {sig}: {e}\n{console}")
    });
}

#[test]
fn sigterm_sigint_sighup_keep_completed_qcow2_writes() {
    if !kvm_or_skip("sigterm_sigint_sighup_keep_completed_qcow2_writes") {
        return;
    }
    let s = Scratch::new("signals-pattern");
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        completed_write_survives(Vmm::Casemate, sig, &s);
    }
}

#[test]
fn qemu_peer_keeps_completed_qcow2_writes_on_sigterm() {
    if !kvm_or_skip("qemu_peer_keeps_completed_qcow2_writes_on_sigterm")
        || !qemu_or_skip("qemu_peer_keeps_completed_qcow2_writes_on_sigterm")
    {
        return;
    }
    let s = Scratch::new("signals-pattern-qemu");
    completed_write_survives(Vmm::Qemu, libc::SIGTERM, &s);
}
