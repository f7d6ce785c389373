//! The emulated AHCI controller on `q35`, driven from inside the probe
//! guest: a plain `-drive` (AHCI there, as on QEMU) gets the pattern at
//! the right offsets of the host file through WRITE/READ DMA EXT and a
//! PIO command over the PRDT; `readonly=on` and `-snapshot` leave the file
//! alone; hostile command lists (tables and PRDs outside RAM, a short
//! PRDT, ranges past the end, an overlong count, an unknown command) fail
//! the command and the port works after recovery; an ATAPI CD-ROM from
//! `-cdrom` reads its disc and answers a read past the end with ILLEGAL
//! REQUEST / LBA out of range. QEMU 7.2 passes the same probe modes.

use std::time::Duration;

use casemate_tests::blkcheck::check;
use casemate_tests::{
    boot_probe, kvm_or_skip, qemu_or_skip, qemu_probe, run_with_limit, Report, Scratch,
};

const DISK: usize = 16 << 20;

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// A 180-block "disc": any bytes do for the ATAPI path.
fn disc(s: &Scratch) -> (String, Vec<u8>) {
    let d: Vec<u8> = (0..180 * 2048u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    (s.file("cd.iso", &d), d)
}

#[test]
fn patterns_land_at_the_right_offsets() {
    if !kvm_or_skip("ahci patterns_land_at_the_right_offsets") {
        return;
    }
    let s = Scratch::new("ahci-raw");
    // cache=none: O_DIRECT, so aligned transfers go straight between the
    // file and guest RAM, on the helper thread under its filter.
    for cache in ["", ",cache=none"] {
        let d = s.file("d.raw", &vec![0u8; DISK]);
        let (r, out) = boot_probe(&[
            "-M",
            "q35",
            "-drive",
            &format!("file={d},format=raw{cache}"),
            "-append",
            "probe=ahci",
        ]);
        r.assert_ok();
        let console = String::from_utf8_lossy(&out.stdout);
        assert!(
            console.contains("probe: ahci port=0 sectors=32768 atapi=0"),
            "{cache}: {console}"
        );
        let image = std::fs::read(&d).unwrap();
        assert_eq!(image.len(), DISK);
        assert_eq!(check(&console, &image), Ok(43), "{cache}: {console}");
    }
}

#[test]
fn read_only_and_snapshot_leave_the_image_byte_identical() {
    if !kvm_or_skip("ahci read_only_and_snapshot_leave_the_image_byte_identical") {
        return;
    }
    let s = Scratch::new("ahci-ro");
    let d = s.file(
        "d.raw",
        &(0..DISK).map(|i| (i / 512) as u8).collect::<Vec<u8>>(),
    );
    let before = std::fs::read(&d).unwrap();
    let (r, out) = boot_probe(&[
        "-M",
        "q35",
        "-drive",
        &format!("file={d},format=raw,if=ide,readonly=on"),
        "-append",
        "probe=ahci ro=1",
    ]);
    r.assert_ok();
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(console.contains("ro=1 tfd=0x441"), "{console}");
    assert!(
        std::fs::read(&d).unwrap() == before,
        "read-only image changed"
    );
    let (r, out) = boot_probe(&[
        "-M",
        "q35",
        "-snapshot",
        "-drive",
        &format!("file={d},format=raw"),
        "-append",
        "probe=ahci",
    ]);
    r.assert_ok();
    assert!(String::from_utf8_lossy(&out.stdout).contains("blk wrote lba="));
    assert!(
        std::fs::read(&d).unwrap() == before,
        "-snapshot image changed"
    );
}

#[test]
fn hostile_command_lists_fail_the_command_and_the_port_recovers() {
    if !kvm_or_skip("hostile_command_lists_fail_the_command_and_the_port_recovers") {
        return;
    }
    let s = Scratch::new("ahci-evil");
    let d = s.file("d.raw", &vec![0u8; DISK]);
    let (r, out) = boot_probe(&[
        "-M",
        "q35",
        "-drive",
        &format!("file={d},format=raw"),
        "-append",
        "probe=ahci-evil strict=1",
    ]);
    r.assert_ok();
    let console = String::from_utf8_lossy(&out.stdout);
    for (case, tfd) in [
        ("cmd-table-outside-ram", "0x441"),
        ("prd-outside-ram", "0x441"),
        ("prd-too-short", "0x441"),
        ("past-end", "0x1441"),
        ("overlong-count", "0x1441"),
        ("unknown-command", "0x441"),
    ] {
        let line = console
            .lines()
            .find(|l| l.contains(&format!("case={case} ")))
            .unwrap_or_else(|| panic!("no line for {case}\n{console}"));
        assert!(line.contains("refused=1"), "{line}");
        assert!(line.contains(&format!("tfd={tfd} ")), "{line}");
    }
    assert!(console.contains("case=absent-ports empty=5"), "{console}");
    let image = std::fs::read(&d).unwrap();
    assert_eq!(check(&console, &image), Ok(4));
    assert!(image[..8 * 512].iter().all(|&b| b == 0));
    assert!(image[12 * 512..].iter().all(|&b| b == 0));
}

#[test]
fn atapi_reads_the_disc_and_a_read_past_the_end_is_illegal_request() {
    if !kvm_or_skip("atapi_reads_the_disc_and_a_read_past_the_end_is_illegal_request") {
        return;
    }
    let s = Scratch::new("ahci-cd");
    let (iso, data) = disc(&s);
    let (r, out) = boot_probe(&[
        "-M",
        "q35",
        "-cdrom",
        &iso,
        "-append",
        "probe=ahci-cd port=2",
    ]);
    r.assert_ok();
    let console = String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "ahci-cd blocks=180 block_size=2048 read=4 fnv={:#x}",
        fnv1a(&data[..4 * 2048])
    );
    assert!(console.contains(&want), "{want}\n{console}");
    assert!(console.contains("sense_key=0x5 asc=0x21"), "{console}");
    // QEMU's long form: an if=none drive on `-device ide-cd` at port 3.
    let (r, out) = boot_probe(&[
        "-M",
        "q35",
        "-drive",
        &format!("file={iso},format=raw,if=none,id=cd0,media=cdrom"),
        "-device",
        "ide-cd,drive=cd0,bus=ide.3",
        "-append",
        "probe=ahci-cd port=3",
    ]);
    r.assert_ok();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&want));
}

#[test]
fn the_same_probe_modes_pass_under_qemu_q35() {
    if !kvm_or_skip("ahci probes under qemu q35") || !qemu_or_skip("ahci probes under qemu q35") {
        return;
    }
    let s = Scratch::new("qemu-q35-ahci");
    let probe = s.probe();
    let (iso, data) = disc(&s);
    for mode in ["ahci", "ahci-evil", "ahci-cd port=2"] {
        let disk = s.file("d.raw", &vec![0u8; DISK]);
        let mut c = qemu_probe("q35", &probe, "1", &format!("probe={mode}"));
        c.args(["-drive", &format!("file={disk},format=raw,if=ide")]);
        c.args(["-cdrom", &iso]);
        let out = run_with_limit(c, Duration::from_secs(180));
        let console = String::from_utf8_lossy(&out.stdout);
        Report::parse(&console).assert_ok();
        assert_eq!(out.status.code(), Some(1), "{console}");
        if mode == "ahci" {
            let image = std::fs::read(&disk).unwrap();
            assert_eq!(check(&console, &image), Ok(43), "{console}");
        }
        if mode.starts_with("ahci-cd") {
            assert!(
                console.contains(&format!("fnv={:#x}", fnv1a(&data[..4 * 2048]))),
                "{console}"
            );
        }
    }
}
