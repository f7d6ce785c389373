//! The standard VGA and bochs-display seen through VNC: the probe's
//! `vga` mode sets a bochs dispi mode and writes the pattern straight
//! into the BAR0 framebuffer (a KVM memory slot: the report's draw time
//! shows no exits); the refresh worker finds it through the slot's dirty
//! log and the tests' RFB client captures exactly the pattern, also after
//! the guest moved BAR0. QEMU 7.2's `-device VGA` shows the same screen.

use std::process::Command;

use casemate_tests::rfb::free_display;
use casemate_tests::screen::{assert_same, capture, keep, pattern, spawn};
use casemate_tests::{bin, kvm_or_skip, qemu_or_skip, qemu_probe, Scratch};

fn casemate_vga(machine: &str, device: &[&str], append: &str, n: u16) -> Command {
    let mut c = Command::new(bin("casemate"));
    c.args(["-M", machine])
        .args(device)
        .args(["-vnc", &format!(":{n}"), "-append", append]);
    c
}

/// The `draw_us=` of the drawn line.
fn draw_us(lines: &[String]) -> u64 {
    lines
        .iter()
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("draw_us="))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no draw_us: {lines:#?}"))
}

#[test]
fn the_pattern_written_to_the_framebuffer_is_captured_exactly() {
    if !kvm_or_skip("vga capture") {
        return;
    }
    let want = pattern(256, 160);
    for (machine, device, append, class, artefact) in [
        (
            "pc",
            &["-vga", "std"][..],
            "probe=vga hold=60000",
            "0x300",
            "vga-pc.png",
        ),
        (
            "q35",
            &["-device", "VGA"][..],
            "probe=vga hold=60000",
            "0x300",
            "vga-q35.png",
        ),
        (
            "q35",
            &["-device", "bochs-display"][..],
            "probe=vga hold=60000",
            "0x380",
            "bochs-display-q35.png",
        ),
        (
            "q35",
            &["-vga", "std"][..],
            "probe=vga fb_move=0xd0000000 hold=60000",
            "0x300",
            "vga-q35-moved.png",
        ),
    ] {
        let n = free_display();
        let c = casemate_vga(machine, device, append, n);
        let (shot, lines, err, _) = capture(spawn(c), n, "probe: vga-drawn", &want);
        let info = lines
            .iter()
            .find(|l| l.starts_with("probe: vga "))
            .expect("vga line");
        assert!(info.contains(&format!("class={class}")), "{info}");
        assert!(info.contains("dispi_id=0xb0c5 vram=16777216"), "{info}");
        if append.contains("fb_move") {
            assert!(info.contains("fb=0xd0000000"), "{info}");
        }
        // 40960 stores: milliseconds at most through a memory slot; about
        // a second if each one exited to the VMM.
        let us = draw_us(&lines);
        assert!(us < 200_000, "{machine} {device:?}: draw took {us} us");
        assert_same(&shot, &want, &format!("{machine} {device:?} {append}"));
        keep(&shot, artefact);
        assert!(!err.contains("SIGSYS") && !err.contains("WARN"), "{err}");
    }
}

#[test]
fn vga_is_refused_where_there_is_no_pci() {
    let out = casemate_tests::casemate(&["-M", "microvm", "-vga", "std", "-append", "probe=hello"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("VGA does not exist on machine microvm (use virtio-gpu-device)"),
        "{err}"
    );
}

#[test]
fn qemu_shows_the_same_screen() {
    if !kvm_or_skip("vga qemu peer") || !qemu_or_skip("vga qemu peer") {
        return;
    }
    let s = Scratch::new("vga-qemu");
    let probe = s.probe();
    let want = pattern(256, 160);
    let n = free_display();
    let ours = casemate_vga("pc", &["-device", "VGA"], "probe=vga hold=60000", n);
    let (ours, ..) = capture(spawn(ours), n, "probe: vga-drawn", &want);

    let n = free_display();
    let mut q = qemu_probe("pc", &probe, "1", "probe=vga hold=60000");
    q.args(["-device", "VGA", "-vnc", &format!("127.0.0.1:{n}")]);
    let (theirs, lines, ..) = capture(spawn(q), n, "probe: vga-drawn", &want);
    keep(&theirs, "vga-pc-qemu.png");
    assert_same(&theirs, &want, "QEMU pc -device VGA");
    assert_eq!(ours, theirs);
    assert!(
        lines.iter().any(|l| l.contains("dispi_id=0xb0c5")),
        "{lines:#?}"
    );
}
