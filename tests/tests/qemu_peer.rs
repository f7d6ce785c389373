//! The reference peer: the same probe ELF must boot under Debian's QEMU 7.2
//! (`-M microvm` and `-M q35`, isa-debug-exit to end it) and report
//! `done status=ok`.

use std::time::Duration;

use casemate_tests::blkcheck::check;
use casemate_tests::{
    have, in_ci, kvm_or_skip, qemu_microvm_probe, qemu_probe, run_with_limit, Report, Scratch,
};

#[test]
fn probe_boots_under_qemu_microvm() {
    if !kvm_or_skip("probe_boots_under_qemu_microvm") {
        return;
    }
    if !have("qemu-system-x86_64") {
        assert!(
            !in_ci(),
            "qemu-system-x86_64 missing in CI: the test command installs it"
        );
        println!("SKIP probe_boots_under_qemu_microvm: qemu-system-x86_64 is not installed");
        return;
    }
    let s = Scratch::new("qemu");
    let probe = s.probe();
    for smp in ["1", "2"] {
        let c = qemu_microvm_probe(&probe, smp, "probe=hello");
        let out = run_with_limit(c, Duration::from_secs(120));
        let console = String::from_utf8_lossy(&out.stdout);
        let r = Report::parse(&console);
        r.assert_ok();
        assert_eq!(r.want("cpus"), smp, "{console}");
        // isa-debug-exit: (0 << 1) | 1 for a passing probe.
        assert_eq!(
            out.status.code(),
            Some(1),
            "{console}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The disk probes under QEMU `-M q35 -drive if=virtio` (virtio-blk-pci,
/// ECAM from QEMU's MCFG): `blk` leaves its patterns in the file and
/// `blk-bench` reports figures.
#[test]
fn blk_probes_pass_under_qemu_q35() {
    if !kvm_or_skip("blk_probes_pass_under_qemu_q35") {
        return;
    }
    if !have("qemu-system-x86_64") {
        assert!(
            !in_ci(),
            "qemu-system-x86_64 missing in CI: the test command installs it"
        );
        println!("SKIP blk_probes_pass_under_qemu_q35: qemu-system-x86_64 is not installed");
        return;
    }
    let s = Scratch::new("qemu-q35-blk");
    let probe = s.probe();
    let disk = s.file("d.raw", &vec![0u8; 16 << 20]);
    for append in [
        "probe=blk",
        "probe=blk-bench mode=randwrite bs=4096 qd=32 n=2000",
    ] {
        let mut c = qemu_probe("q35", &probe, "1", append);
        c.args(["-drive", &format!("file={disk},format=raw,if=virtio")]);
        let out = run_with_limit(c, Duration::from_secs(180));
        let console = String::from_utf8_lossy(&out.stdout);
        let r = Report::parse(&console);
        r.assert_ok();
        assert_eq!(r.want("transport"), "pci", "{console}");
        assert!(console.contains("access=ecam"), "{console}");
        assert_eq!(out.status.code(), Some(1), "{console}");
        if append == "probe=blk" {
            let image = std::fs::read(&disk).unwrap();
            let n = check(&console, &image).unwrap_or_else(|e| panic!("{e}\n{console}"));
            assert!(n >= 19, "only {n} sectors checked");
        } else {
            assert!(console.contains("probe: blk-bench "), "{console}");
        }
    }
}
