//! virtio-gpu 2D seen through VNC: the probe's `gpu` mode draws a known
//! pattern (tools/probe/src/probes/gpu.rs) and the tests' RFB client
//! captures exactly that pattern on microvm (virtio-mmio), pc and q35
//! (virtio-pci); `gpu-evil` gets every error it provokes, the memory cap
//! holds and the device draws afterwards; QEMU 7.2 shows the same screen
//! to the same client. One PNG per machine type is kept under
//! target/display-artefacts/ for a person to look at.

use std::process::Command;

use casemate_tests::rfb::free_display;
use casemate_tests::screen::{assert_same, capture, keep, pattern, spawn};
use casemate_tests::{bin, kvm_or_skip, qemu_or_skip, qemu_probe, Scratch};

fn casemate_gpu(machine: &str, device: &str, append: &str, n: u16) -> Command {
    let mut c = Command::new(bin("casemate"));
    c.args(["-M", machine, "-device", device])
        .args(["-vnc", &format!(":{n}"), "-append", append]);
    c
}

#[test]
fn the_pattern_drawn_through_virtio_gpu_is_captured_exactly() {
    if !kvm_or_skip("gpu capture") {
        return;
    }
    let want = pattern(256, 160);
    for (machine, device) in [
        ("microvm", "virtio-gpu-device"),
        ("pc", "virtio-gpu-pci"),
        ("q35", "virtio-gpu-pci"),
    ] {
        let n = free_display();
        let c = casemate_gpu(machine, device, "probe=gpu hold=60000", n);
        let (shot, lines, err, _) = capture(spawn(c), n, "probe: gpu-drawn", &want);
        let info = lines
            .iter()
            .find(|l| l.contains("xres="))
            .expect("display info line");
        assert!(
            info.contains("xres=1280 yres=800 enabled=1 edid_size=128 edid_header_ok=1"),
            "{info}"
        );
        assert_same(&shot, &want, machine);
        keep(&shot, &format!("gpu-{machine}.png"));
        assert!(!err.contains("SIGSYS") && !err.contains("refused"), "{err}");
    }
}

#[test]
fn gpu_evil_gets_its_errors_stays_capped_and_draws_after() {
    if !kvm_or_skip("gpu-evil") {
        return;
    }
    let want = pattern(256, 160);
    let n = free_display();
    let c = casemate_gpu(
        "q35",
        "virtio-gpu-pci,max_hostmem=32M",
        "probe=gpu-evil hold=60000",
        n,
    );
    let (shot, lines, err, hwm) = capture(spawn(c), n, "probe: gpu-drawn", &want);
    let sum = lines
        .iter()
        .find(|l| l.starts_with("probe: gpu-evil checks="))
        .unwrap_or_else(|| panic!("no summary: {lines:#?}"));
    // 28 refusals and successes in the table; 7 resources of 4 MiB fit
    // under 32 MiB with their bookkeeping, the 8th is refused.
    assert_eq!(sum.trim(), "probe: gpu-evil checks=28 capped_after=7");
    assert_same(&shot, &want, "after gpu-evil");
    // Guest RAM (128 MiB, mostly untouched) plus the 32 MiB cap plus the
    // VMM's own: far below what the refused resources would have taken.
    assert!(hwm < 160 * 1024, "VmHWM {hwm} KiB");
    // Guest errors are logged, but only a few times.
    assert!(
        err.lines().filter(|l| l.contains("refused")).count() <= 8,
        "{err}"
    );
}

#[test]
fn qemu_shows_the_same_screen() {
    if !kvm_or_skip("gpu qemu peer") || !qemu_or_skip("gpu qemu peer") {
        return;
    }
    let s = Scratch::new("gpu-qemu");
    let probe = s.probe();
    let want = pattern(256, 160);
    for (machine, device) in [("microvm", "virtio-gpu-device"), ("q35", "virtio-gpu-pci")] {
        let n = free_display();
        let ours = casemate_gpu(machine, device, "probe=gpu hold=60000", n);
        let (ours, ..) = capture(spawn(ours), n, "probe: gpu-drawn", &want);

        let n = free_display();
        let mut q = qemu_probe(machine, &probe, "1", "probe=gpu hold=60000");
        q.args(["-global", "virtio-mmio.force-legacy=false"]).args([
            "-device",
            device,
            "-vnc",
            &format!("127.0.0.1:{n}"),
        ]);
        let (theirs, ..) = capture(spawn(q), n, "probe: gpu-drawn", &want);
        keep(&theirs, &format!("gpu-{machine}-qemu.png"));
        assert_same(&theirs, &want, &format!("QEMU {machine}"));
        assert_eq!(ours, theirs, "{machine}");
    }
}
