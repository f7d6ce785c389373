//! Linux's own display drivers through Casemate's devices: the init's
//! `fb` mode (tools/linux-guest/init/fb.rs) writes the probe's pattern to
//! /dev/fb0 (the fbdev emulation of virtio_gpu or bochs) at the screen's
//! bottom-right corner and a line of text to /dev/tty1, which the
//! framebuffer console draws at the top left. The tests' RFB client
//! captures the pattern exactly and finds text (a non-uniform region)
//! where the console prints: virtio-gpu on q35 and microvm, the standard
//! VGA (bochs driver) on pc. One PNG per machine type is kept.
//!
//! The pc and q35 boots also carry the emulated disks (the init's `ata`
//! mode, `casemate_tests::ata_rig`): Linux's ata_piix (pc) and ahci (q35,
//! through its MSI vector), sd and sr drivers write a plain `-drive` and
//! mount an ISO from `-cdrom`. A Linux boot costs most of a minute here,
//! so one boot per machine proves both.

use std::time::Duration;

use casemate_tests::ata_rig::AtaRig;
use casemate_tests::linux::{artifacts_or_skip, microvm, pci_machine, LinuxBoot};
use casemate_tests::rfb::{free_display, Screen};
use casemate_tests::screen::{capture_where, keep, pattern, shows_at, spawn};
use casemate_tests::{have, in_ci, kvm_or_skip};

/// The pattern at the bottom-right corner, and console text at the top.
fn drawn(s: &Screen, want: &Screen) -> bool {
    s.width >= want.width
        && s.height >= want.height
        && shows_at(s, want, s.width - want.width, s.height - want.height)
        && has_text(s)
}

/// Where fbcon prints the init's line (row 0, 8x16 cells): some pixels
/// lit, not all the same.
fn has_text(s: &Screen) -> bool {
    let (w, h) = (s.width.min(400), s.height.min(16));
    let lit = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .filter(|&(x, y)| s.at(x, y) != 0)
        .count();
    lit > 100 && lit < (w * h) as usize
}

/// The ATA controller's Linux driver when the boot carries the `ata`
/// mode too (pc and q35).
fn fb_test(
    name: &str,
    boot: impl Fn(&casemate_tests::linux::Artifacts) -> LinuxBoot,
    device: &[&str],
    driver: &str,
    ata: Option<&str>,
) {
    if !kvm_or_skip(name) {
        return;
    }
    let Some(a) = artifacts_or_skip(name) else {
        return;
    };
    if ata.is_some() && !have("genisoimage") {
        assert!(!in_ci(), "{name}: genisoimage missing (scripts/setup.sh)");
        println!("SKIP {name}: genisoimage is not installed");
        return;
    }
    let rig = ata.map(|_| AtaRig::new(&name.replace(' ', "-")));
    let modes = if rig.is_some() { "ata,fb" } else { "fb" };
    let b = boot(&a)
        .init_arg(&format!("casemate.mode={modes}"))
        .init_arg("casemate.hold=120000")
        .init_arg("vt.global_cursor_default=0");
    let n = free_display();
    let mut c = b.casemate();
    c.args(device).args(["-vnc", &format!(":{n}")]);
    if let Some(r) = &rig {
        r.args(&mut c);
    }
    let want = pattern(256, 160);
    let (shot, lines, err, _) = capture_where(
        spawn(c),
        n,
        "init: fb-drawn",
        |s| drawn(s, &want),
        // The guest's fbdev flush copies the damage at CPL0, through
        // this host's instruction emulator: seconds, more under load.
        Duration::from_secs(120),
        Duration::from_secs(500),
    );
    keep(&shot, &format!("linux-fb-{}.png", b.machine.machine));
    let info = lines
        .iter()
        .find(|l| l.starts_with("init: fb "))
        .unwrap_or_else(|| panic!("no fb line: {lines:#?}"));
    assert!(info.contains(&format!("id={driver}")), "{info}");
    assert!(info.contains("bpp=32"), "{info}");
    assert!(
        shows_at(&shot, &want, shot.width - 256, shot.height - 160),
        "{name}: the pattern is not on screen ({}x{}): {lines:#?}",
        shot.width,
        shot.height
    );
    assert!(has_text(&shot), "{name}: no console text at the top left");
    assert!(!err.contains("SIGSYS"), "{err}");
    if let (Some(r), Some(ata_driver)) = (&rig, ata) {
        let console = lines.concat();
        r.check(&console, ata_driver);
        if ata_driver == "ahci" {
            assert!(uses_msi(&console), "AHCI not on its MSI vector\n{console}");
        }
    }
}

/// libata's port line names the Linux IRQ: MSI vectors are allocated
/// above the 24 IOAPIC pins, INTx stays below.
fn uses_msi(console: &str) -> bool {
    console
        .lines()
        .filter(|l| l.contains("ata1: SATA max"))
        .filter_map(|l| l.rsplit("irq ").next()?.trim().parse::<u32>().ok())
        .any(|irq| irq >= 24)
}

/// The boots run one at a time: each spends most of a minute in the
/// guest's emulated kernel (the fbcon set-up alone ~25 s), and three at
/// once on this host's two cores run past any sane limit.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn virtio_gpu_on_q35() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    fb_test(
        "linux fb q35",
        |a| LinuxBoot::new(pci_machine(a, "q35"), a),
        &["-device", "virtio-gpu-pci"],
        "virtio_gpudrmf",
        Some("ahci"),
    );
}

#[test]
fn bochs_on_pc() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    fb_test(
        "linux fb pc",
        |a| LinuxBoot::new(pci_machine(a, "pc"), a),
        &["-vga", "std"],
        "bochs-drmdrmf",
        Some("ata_piix"),
    );
}

#[test]
fn virtio_gpu_on_microvm() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    fb_test(
        "linux fb microvm",
        |a| LinuxBoot::new(microvm(a), a),
        &["-device", "virtio-gpu-device"],
        "virtio_gpudrmf",
        None,
    );
}
