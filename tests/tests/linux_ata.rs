//! The Linux guest tier on the emulated ATA controllers: Linux's own
//! ata_piix (pc) and ahci (q35), sd and sr drivers read and write a disk
//! given as a plain `-drive` (IDE or AHCI there, as on QEMU) and mount an
//! ISO 9660 image given with `-cdrom` (AHCI through its MSI vector); the guest's writes land in the host file and the
//! file it reads from the CD is the one the host put in the image.

use std::process::Command;

use casemate_tests::blkcheck::check_lines;
use casemate_tests::linux::{artifacts_or_skip, pci_machine, run, LinuxBoot};
use casemate_tests::{have, in_ci, kvm_or_skip, Scratch};

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

#[test]
fn pc_linux_ata_piix_writes_a_disk_and_mounts_a_cdrom() {
    boot("pc", "ata_piix");
}

#[test]
fn q35_linux_ahci_writes_a_disk_and_mounts_a_cdrom() {
    boot("q35", "ahci");
}

/// One boot on `machine`, whose controller Linux's `driver` must drive.
fn boot(machine: &'static str, driver: &str) {
    let test = &format!("{machine}_linux_{driver}_writes_a_disk_and_mounts_a_cdrom");
    if !kvm_or_skip(test) {
        return;
    }
    let Some(a) = artifacts_or_skip(test) else {
        return;
    };
    if !have("genisoimage") {
        assert!(!in_ci(), "{test}: genisoimage missing (scripts/setup.sh)");
        println!("SKIP {test}: genisoimage is not installed");
        return;
    }
    let s = Scratch::new(&format!("linux-ata-{machine}"));
    let disk = s.file("disk.raw", &vec![0u8; 16 << 20]);
    // Three CD blocks and a bit: reads cross 2048-byte sectors.
    let data: Vec<u8> = (0..7000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::create_dir_all(s.path("iso")).unwrap();
    std::fs::write(s.path("iso").join("data.bin"), &data).unwrap();
    let iso = s.path("cd.iso");
    let st = Command::new("genisoimage")
        .args(["-quiet", "-R", "-o"])
        .arg(&iso)
        .arg(s.path("iso"))
        .status()
        .unwrap();
    assert!(st.success(), "genisoimage failed");

    let boot = LinuxBoot::new(pci_machine(&a, machine), &a).init_arg("casemate.mode=ata");
    let mut cmd = boot.casemate();
    cmd.args(["-drive", &format!("file={disk},format=raw")])
        .arg("-cdrom")
        .arg(&iso)
        .args(["--log", "debug"]);
    let (r, out) = run(cmd);
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    r.assert_ok();
    assert!(out.status.success(), "exit {:?}\n{log}", out.status);
    assert!(
        log.contains(&format!("scsi host0: {driver}")),
        "Linux's {driver} drove it\n{log}"
    );
    assert!(log.contains("[sr0]"), "the CD-ROM was found\n{log}");
    assert_eq!(r.want("disk"), "/dev/sda", "{log}");
    assert_eq!(r.want("mismatches"), "0", "{log}");
    let after = std::fs::read(&disk).unwrap();
    let n = check_lines(&log, &after, "init: blk ").unwrap_or_else(|e| panic!("{e}\n{log}"));
    assert!(n >= 35, "only {n} sectors checked\n{log}");
    assert_eq!(r.want("bytes"), data.len().to_string(), "{log}");
    assert_eq!(r.want("fnv"), fnv1a(&data).to_string(), "{log}");
    // AHCI's one MSI vector is what Linux uses when it is offered.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.contains("MSI route: GSI"),
        machine == "q35",
        "MSI on q35 only\n{stderr}"
    );
}
