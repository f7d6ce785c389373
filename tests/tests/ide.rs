//! The emulated IDE controller on `pc`, driven from inside the probe
//! guest: PIO and bus-master DMA land at the right offsets of the host
//! file; `readonly=on` and `-snapshot` leave it alone; hostile commands
//! (PRDs outside RAM, short PRD tables, ranges past the end, an overlong
//! count, an absent unit) end in an error status and the VMM carries on;
//! QEMU 7.2 passes the same probe modes on its PIIX3 IDE; machines
//! without IDE refuse `if=ide` by name.

use std::time::Duration;

use casemate_tests::blkcheck::check;
use casemate_tests::{
    boot_probe, casemate, kvm_or_skip, qemu_or_skip, qemu_probe, run_with_limit, Report, Scratch,
};

const DISK: usize = 16 << 20;

fn patterns_land(mode: &str, drive_extra: &str) {
    let test = format!("{mode}: patterns land at the right offsets");
    if !kvm_or_skip(&test) {
        return;
    }
    let s = Scratch::new(&format!("ide-{mode}"));
    let d = s.file("d.raw", &vec![0u8; DISK]);
    let (r, out) = boot_probe(&[
        "-M",
        "pc",
        "-drive",
        &format!("file={d},format=raw{drive_extra}"),
        "-append",
        &format!("probe={mode}"),
    ]);
    r.assert_ok();
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        console.contains("probe: ide bus=0 unit=0 sectors=32768"),
        "{console}"
    );
    let image = std::fs::read(&d).unwrap();
    assert_eq!(image.len(), DISK, "image size unchanged");
    let n = check(&console, &image).unwrap_or_else(|e| panic!("{e}\n{console}"));
    // 1 + 1 + 1 + 40 sectors.
    assert_eq!(n, 43, "{console}");
}

#[test]
fn pio_patterns_land_at_the_right_offsets() {
    // A plain -drive is IDE on pc, as on QEMU.
    patterns_land("ide-pio", "");
}

#[test]
fn dma_patterns_land_at_the_right_offsets() {
    patterns_land("ide-dma", ",if=ide,index=0");
    // O_DIRECT: aligned transfers go straight between the file and guest
    // RAM (preadv/pwritev on the vCPU thread, under its filter).
    patterns_land("ide-dma", ",if=ide,index=0,cache=none");
}

#[test]
fn read_only_and_snapshot_leave_the_image_byte_identical() {
    if !kvm_or_skip("ide read_only_and_snapshot_leave_the_image_byte_identical") {
        return;
    }
    let s = Scratch::new("ide-ro");
    let d = s.file(
        "d.raw",
        &(0..DISK).map(|i| (i / 512) as u8).collect::<Vec<u8>>(),
    );
    let before = std::fs::read(&d).unwrap();
    for mode in ["ide-pio", "ide-dma"] {
        let (r, out) = boot_probe(&[
            "-M",
            "pc",
            "-drive",
            &format!("file={d},format=raw,if=ide,readonly=on"),
            "-append",
            &format!("probe={mode} ro=1"),
        ]);
        r.assert_ok();
        let console = String::from_utf8_lossy(&out.stdout);
        assert!(console.contains("ro=1 status=0x41 error=0x4"), "{console}");
        assert!(
            std::fs::read(&d).unwrap() == before,
            "read-only image changed"
        );
        let (r, out) = boot_probe(&[
            "-M",
            "pc",
            "-snapshot",
            "-drive",
            &format!("file={d},format=raw,if=ide"),
            "-append",
            &format!("probe={mode}"),
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
}

#[test]
fn hostile_commands_get_error_status_and_the_vmm_carries_on() {
    if !kvm_or_skip("hostile_commands_get_error_status_and_the_vmm_carries_on") {
        return;
    }
    let s = Scratch::new("ide-evil");
    let d = s.file("d.raw", &vec![0u8; DISK]);
    let (r, out) = boot_probe(&[
        "-M",
        "pc",
        "-drive",
        &format!("file={d},format=raw,if=ide"),
        "-append",
        "probe=ide-evil strict=1",
    ]);
    r.assert_ok();
    let console = String::from_utf8_lossy(&out.stdout);
    for case in [
        "prd-table-outside-ram",
        "prd-region-outside-ram",
        "prd-too-short",
        "dma-past-end",
        "pio-past-end",
        "overlong-count",
        "unknown-command",
    ] {
        let line = console
            .lines()
            .find(|l| l.contains(&format!("case={case} ")))
            .unwrap_or_else(|| panic!("no line for {case}\n{console}"));
        assert!(line.contains("refused=1"), "{line}");
        assert!(line.contains("status=0x41"), "ERR and DRDY: {line}");
    }
    assert!(console.contains("case=absent-unit status=0x0"), "{console}");
    // Only the final round trip wrote; nothing else touched the file.
    let image = std::fs::read(&d).unwrap();
    assert_eq!(check(&console, &image), Ok(4));
    assert!(image[..8 * 512].iter().all(|&b| b == 0));
    assert!(image[12 * 512..].iter().all(|&b| b == 0));
}

#[test]
fn the_same_probe_modes_pass_under_qemu_pc() {
    if !kvm_or_skip("ide probes under qemu pc") || !qemu_or_skip("ide probes under qemu pc") {
        return;
    }
    let s = Scratch::new("qemu-pc-ide");
    let probe = s.probe();
    for mode in ["ide-pio", "ide-dma", "ide-evil"] {
        let disk = s.file(&format!("{mode}.raw"), &vec![0u8; DISK]);
        let mut c = qemu_probe("pc", &probe, "1", &format!("probe={mode}"));
        c.args(["-drive", &format!("file={disk},format=raw,if=ide")]);
        let out = run_with_limit(c, Duration::from_secs(180));
        let console = String::from_utf8_lossy(&out.stdout);
        Report::parse(&console).assert_ok();
        assert_eq!(out.status.code(), Some(1), "{console}");
        let image = std::fs::read(&disk).unwrap();
        check(&console, &image).unwrap_or_else(|e| panic!("{e}\n{console}"));
    }
}

#[test]
fn machines_without_ide_refuse_it_by_name() {
    for (m, want) in [
        ("microvm", "machine microvm has no IDE controller"),
        ("isapc", "ISA IDE is not built"),
    ] {
        let out = casemate(&["-M", m, "-drive", "file=/nonexistent.raw,if=ide"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{m}: {err}");
    }
    let out = casemate(&["-M", "microvm", "-cdrom", "/nonexistent.iso"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no IDE controller"), "{err}");
}
