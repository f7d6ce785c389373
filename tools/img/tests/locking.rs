//! Image locks against QEMU 7.2 both ways: a QEMU VM holding an image makes
//! casemate-disk and casemate-img refuse it, and an image casemate-disk holds
//! makes qemu-img and qemu-io refuse it, with QEMU's message; the exact lock
//! bytes are read back from /proc/locks. Without QEMU these print a skip line
//! (they fail with CI=true).

mod common;

use std::path::Path;

use casemate_disk::{open_image, DiskError, OpenOptions};
use common::*;

fn have_qemu(test: &str) -> bool {
    have("qemu-img", test) && have("qemu-io", test) && have("qemu-system-x86_64", test)
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn qemu_vm_holding_a_raw_image_makes_casemate_refuse_it() {
    if !have_qemu("qemu_vm_holding_a_raw_image_makes_casemate_refuse_it") {
        return;
    }
    let d = TempDir::new("lock-vm-raw");
    let f = d.path("disk.raw");
    std::fs::write(&f, vec![0x5a; 1 << 20]).unwrap();
    // What a QEMU 7.2 VM holds on a read-write raw drive: consistent read
    // and write (100, 101), refusing to share write (201).
    let _vm = QemuVm::start(
        &format!("file={f},format=raw,if=virtio"),
        &f,
        &[(100, 101), (201, 201)],
    );

    let e = open_image(Path::new(&f), &OpenOptions::default()).unwrap_err();
    assert!(
        matches!(
            e,
            DiskError::Locked {
                perm: "write",
                shared: false,
                ..
            }
        ),
        "{e:?}"
    );
    let ro = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    let e = open_image(Path::new(&f), &ro).unwrap_err();
    assert!(e
        .to_string()
        .starts_with("Failed to get shared \"write\" lock"));
    // locking=off and -U get through.
    let off = OpenOptions {
        locking: false,
        ..OpenOptions::default()
    };
    open_image(Path::new(&f), &off).expect("locking off bypasses the locks");

    let msg = fails(BIN, &["resize", "-f", "raw", &f, "2M"]);
    assert!(msg.contains("Failed to get \"write\" lock"), "{msg}");
    assert!(
        msg.contains(&format!("Is another process using the image [{f}]?")),
        "{msg}"
    );
    let msg = fails(BIN, &["create", "-f", "qcow2", &f, "1M"]);
    assert!(msg.contains("Failed to get \"write\" lock"), "{msg}");
    let src = d.path("src.raw");
    std::fs::write(&src, vec![1u8; 4096]).unwrap();
    let msg = fails(BIN, &["convert", "-O", "raw", &src, &f]);
    assert!(msg.contains("Failed to get \"write\" lock"), "{msg}");
    // Nothing was truncated or resized under the VM.
    assert_eq!(read(&f), vec![0x5a; 1 << 20]);
    // Reading is refused too (qemu-img convert refuses the same way) but
    // -U reads next to the writer.
    let msg = fails(BIN, &["convert", "-O", "raw", &f, &d.path("copy.raw")]);
    assert!(msg.contains("Failed to get shared \"write\" lock"), "{msg}");
    ok(
        BIN,
        &["convert", "-U", "-O", "raw", &f, &d.path("copy.raw")],
    );
}

#[test]
fn qemu_vm_holding_a_qcow2_image_blocks_info_and_check_unless_u() {
    if !have_qemu("qemu_vm_holding_a_qcow2_image_blocks_info_and_check_unless_u") {
        return;
    }
    let d = TempDir::new("lock-vm-qcow2");
    let f = d.path("disk.qcow2");
    ok(BIN, &["create", "-q", "-f", "qcow2", &f, "64M"]);
    // qcow2 adds resize (103) and refuses to share it (203).
    let _vm = QemuVm::start(
        &format!("file={f},format=qcow2,if=virtio"),
        &f,
        &[(100, 101), (103, 103), (201, 201), (203, 203)],
    );
    for cmd in [&["info"][..], &["check"][..]] {
        let mut args = cmd.to_vec();
        args.push(&f);
        let msg = fails(BIN, &args);
        assert!(msg.contains("Failed to get shared \"write\" lock"), "{msg}");
        args.insert(1, "-U");
        ok(BIN, &args);
    }
}

#[test]
fn casemate_disk_holding_an_image_makes_qemu_refuse_it() {
    if !have_qemu("casemate_disk_holding_an_image_makes_qemu_refuse_it") {
        return;
    }
    let d = TempDir::new("lock-cm");
    let raw = d.path("disk.raw");
    let q = d.path("disk.qcow2");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    ok(BIN, &["create", "-q", "-f", "qcow2", &q, "1M"]);
    let a = open_image(Path::new(&raw), &OpenOptions::default()).unwrap();
    let b = open_image(Path::new(&q), &OpenOptions::default()).unwrap();
    // The same bytes a QEMU VM takes, as open file description locks (the
    // kernel merges adjacent ranges, for QEMU's locks too).
    let l = proc_locks(&raw);
    assert!(l.iter().all(|l| l.0 == "OFDLCK" && l.1 == "READ"), "{l:?}");
    let bytes: Vec<_> = l.iter().map(|l| (l.2, l.3)).collect();
    assert_eq!(bytes, [(100, 101), (201, 201)]);
    let bytes: Vec<_> = proc_locks(&q).iter().map(|l| (l.2, l.3)).collect();
    assert_eq!(bytes, [(100, 101), (103, 103), (201, 201), (203, 203)]);

    let msg = fails("qemu-io", &["-f", "raw", "-c", "write 0 512", &raw]);
    assert!(msg.contains("Failed to get \"write\" lock"), "{msg}");
    assert!(
        msg.contains(&format!("Is another process using the image [{raw}]?")),
        "{msg}"
    );
    let msg = fails("qemu-img", &["info", &q]);
    assert!(msg.contains("Failed to get shared \"write\" lock"), "{msg}");
    ok("qemu-img", &["info", "-U", &q]);
    drop((a, b));
    ok("qemu-io", &["-f", "raw", "-c", "write 0 512", &raw]);
    ok("qemu-img", &["info", &q]);
}

#[test]
fn locking_off_lets_qemu_in() {
    if !have_qemu("locking_off_lets_qemu_in") {
        return;
    }
    let d = TempDir::new("lock-off");
    let raw = d.path("disk.raw");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let off = OpenOptions {
        locking: false,
        ..OpenOptions::default()
    };
    let _a = open_image(Path::new(&raw), &off).unwrap();
    assert!(proc_locks(&raw).is_empty());
    ok("qemu-io", &["-f", "raw", "-c", "write -P 7 0 512", &raw]);
    assert_eq!(read(&raw)[..512], [7u8; 512]);
}
