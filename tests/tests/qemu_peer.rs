//! The reference peer: the same probe ELF must boot under Debian's QEMU 7.2
//! (`-M microvm`, `-M q35`, `-M pc`, isa-debug-exit to end it) and report
//! `done status=ok`: hello, the disk probes, virtio-rng, a moved BAR, and
//! disk writes that survive a guest reset under `-snapshot`.

use std::time::Duration;

use casemate_tests::blkcheck::check;
use casemate_tests::{
    have, in_ci, kvm_or_skip, qemu_microvm_probe, qemu_or_skip, qemu_probe, qemu_probe_rebooting,
    run_with_limit, Report, Scratch,
};

/// QEMU's entropy backend, for `-object`.
const RNG_OBJECT: &str = "rng-random,id=rng0,filename=/dev/urandom";

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
        "probe=blk event_idx=1",
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
        if append.starts_with("probe=blk ") || append == "probe=blk" {
            let want = if append.contains("event_idx=1") {
                "1"
            } else {
                "0"
            };
            assert_eq!(r.want("event_idx"), want, "{console}");
            let image = std::fs::read(&disk).unwrap();
            let n = check(&console, &image).unwrap_or_else(|e| panic!("{e}\n{console}"));
            assert!(n >= 19, "only {n} sectors checked");
        } else {
            assert!(console.contains("probe: blk-bench "), "{console}");
        }
    }
}

/// `probe=rng` finds virtio-rng over virtio-mmio on microvm (listed in the
/// DSDT) and over virtio-pci on q35 (device 0x1044, modern only, and the
/// default transitional 0x1005) and gets 64 bytes that are not all equal.
#[test]
fn rng_probe_passes_under_qemu_microvm_and_q35() {
    let test = "rng_probe_passes_under_qemu_microvm_and_q35";
    if !kvm_or_skip(test) || !qemu_or_skip(test) {
        return;
    }
    let s = Scratch::new("qemu-rng");
    let probe = s.probe();
    let cases: [(&str, &[&str], &str); 3] = [
        (
            "microvm",
            &[
                "-global",
                "virtio-mmio.force-legacy=false",
                "-device",
                "virtio-rng-device,rng=rng0",
            ],
            "mmio",
        ),
        (
            "q35",
            &["-device", "virtio-rng-pci,rng=rng0,disable-legacy=on"],
            "pci",
        ),
        ("q35", &["-device", "virtio-rng-pci,rng=rng0"], "pci"),
    ];
    for (machine, device, transport) in cases {
        let mut c = qemu_probe(machine, &probe, "1", "probe=rng");
        c.args(["-object", RNG_OBJECT]).args(device);
        let out = run_with_limit(c, Duration::from_secs(120));
        let console = String::from_utf8_lossy(&out.stdout);
        let r = Report::parse(&console);
        r.assert_ok();
        assert_eq!(r.want("transport"), transport, "{console}");
        assert_eq!(r.want("bytes"), "64", "{console}");
        let distinct: u32 = r.want("distinct").parse().unwrap();
        assert!(distinct > 1, "{console}");
        assert_eq!(out.status.code(), Some(1), "{console}");
    }
}

/// `probe=bar-move` on q35: the blk function's BAR moves inside the host
/// bridge's `_CRS` window, the old address stops answering (QEMU 7.2 reads
/// unassigned memory as 0; hardware and Casemate as all-ones), and the
/// whole blk sequence passes at the new address with its data in the file.
#[test]
fn bar_move_probe_passes_under_qemu_q35() {
    let test = "bar_move_probe_passes_under_qemu_q35";
    if !kvm_or_skip(test) || !qemu_or_skip(test) {
        return;
    }
    let s = Scratch::new("qemu-bar-move");
    let probe = s.probe();
    let disk = s.file("d.raw", &vec![0u8; 16 << 20]);
    let mut c = qemu_probe("q35", &probe, "1", "probe=bar-move");
    c.args(["-drive", &format!("file={disk},format=raw,if=virtio")]);
    let out = run_with_limit(c, Duration::from_secs(180));
    let console = String::from_utf8_lossy(&out.stdout);
    let r = Report::parse(&console);
    r.assert_ok();
    let moved = r
        .lines
        .iter()
        .find(|l| l.contains_key("bar-move"))
        .unwrap_or_else(|| panic!("no bar-move line\n{console}"));
    let hex = |k: &str| u64::from_str_radix(moved[k].trim_start_matches("0x"), 16).unwrap();
    assert_ne!(hex("old"), hex("new"), "{console}");
    assert_eq!(moved["window_src"], "crs", "{console}");
    assert!(
        (hex("window_lo")..hex("window_hi")).contains(&hex("new")),
        "{console}"
    );
    assert!(
        ["0x0", "0xffffffff"].contains(&moved["old_reads"].as_str()),
        "{console}"
    );
    // The device was reopened at the new address.
    assert_eq!(r.want("common"), moved["new"], "{console}");
    assert_eq!(out.status.code(), Some(1), "{console}");
    let image = std::fs::read(&disk).unwrap();
    let n = check(&console, &image).unwrap_or_else(|e| panic!("{e}\n{console}"));
    assert!(n >= 19, "only {n} sectors checked");
}

/// `probe=blk-reboot` on q35 and pc with `-snapshot` and without
/// `-no-reboot`: boot 1 writes and resets through 0xCF9, SeaBIOS boots the
/// probe again, boot 2 sees the write; the image file is untouched.
#[test]
fn blk_reboot_probe_sees_its_write_after_reset_under_qemu_snapshot() {
    let test = "blk_reboot_probe_sees_its_write_after_reset_under_qemu_snapshot";
    if !kvm_or_skip(test) || !qemu_or_skip(test) {
        return;
    }
    let s = Scratch::new("qemu-blk-reboot");
    let probe = s.probe();
    let blank = vec![0u8; 16 << 20];
    let disk = s.file("d.raw", &blank);
    for machine in ["q35", "pc"] {
        let mut c = qemu_probe_rebooting(machine, &probe, "1", "probe=blk-reboot");
        c.args([
            "-snapshot",
            "-drive",
            &format!("file={disk},format=raw,if=virtio"),
        ]);
        let out = run_with_limit(c, Duration::from_secs(180));
        let console = String::from_utf8_lossy(&out.stdout);
        let r = Report::parse(&console);
        r.assert_ok();
        assert!(
            console.contains("probe: blk-reboot phase=1 wrote=9 "),
            "{console}"
        );
        assert!(
            console.contains("probe: blk-reboot resetting=cf9"),
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
        assert_eq!(out.status.code(), Some(1), "{console}");
        assert!(
            std::fs::read(&disk).unwrap() == blank,
            "{machine}: -snapshot image changed"
        );
    }
}
