//! Bad input: each gets a clear message naming the problem, a non-zero exit
//! and no panic. None of these reach a running guest, but several get as far
//! as opening /dev/kvm, so they run where KVM does.

use casemate_tests::elf::tiny_elf64;
use casemate_tests::{casemate, kvm_or_skip, Scratch};

/// Run casemate, expect failure with `needle` in stderr.
fn refuses(args: &[&str], needle: &str) {
    let out = casemate(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected '{needle}' in:\n{err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout");
}

#[test]
fn missing_kernel_file() {
    if kvm_or_skip("missing_kernel_file") {
        refuses(
            &["-kernel", "/nonexistent/vmlinux"],
            "cannot open kernel /nonexistent/vmlinux",
        );
    }
}

#[test]
fn kernel_that_is_not_elf_or_bzimage() {
    if !kvm_or_skip("kernel_that_is_not_elf_or_bzimage") {
        return;
    }
    let s = Scratch::new("notkernel");
    let k = s.file("k", b"#!/bin/sh\necho this is not a kernel\n");
    refuses(&["-kernel", &k], "not an ELF or bzImage kernel");
    let empty = s.file("empty", b"");
    refuses(&["-kernel", &empty], "not an ELF or bzImage kernel");
}

#[test]
fn truncated_elf() {
    if !kvm_or_skip("truncated_elf") {
        return;
    }
    let s = Scratch::new("truncated");
    let probe = std::fs::read(s.probe()).unwrap();
    for len in [20, 64, 100] {
        let k = s.file("trunc.elf", &probe[..len]);
        refuses(&["-kernel", &k], "bad ELF");
    }
    // Cut inside the loadable segment itself.
    let whole = tiny_elf64(&[0x90; 4096]);
    let k = s.file("trunc2.elf", &whole[..whole.len() - 1]);
    refuses(&["-kernel", &k], "bad ELF: segment 0: truncated");
}

#[test]
fn truncated_bzimage() {
    if !kvm_or_skip("truncated_bzimage") {
        return;
    }
    let s = Scratch::new("bz");
    let mut img = vec![0u8; 0x400];
    img[0x202..0x206].copy_from_slice(b"HdrS");
    let k = s.file("bz", &img);
    refuses(
        &["-kernel", &k],
        "bad bzImage: boot protocol 0.00: 2.00 or later is needed",
    );
}

#[test]
fn kernel_that_does_not_fit_in_ram() {
    if !kvm_or_skip("kernel_that_does_not_fit_in_ram") {
        return;
    }
    let s = Scratch::new("toobig");
    let mut elf = tiny_elf64(&[0x0f, 0x0b]);
    // Claim a 64 MiB memory size for the one segment.
    elf[64 + 40..64 + 48].copy_from_slice(&(64u64 << 20).to_le_bytes());
    let k = s.file("big.elf", &elf);
    refuses(
        &["-kernel", &k, "-m", "32M"],
        "needs guest RAM up to 0x4100000",
    );
}

#[test]
fn memory_size_zero_and_too_large() {
    if !kvm_or_skip("memory_size_zero_and_too_large") {
        return;
    }
    refuses(&["-m", "0"], "-m 0 B: guest RAM must be at least 2 MiB");
    refuses(&["-m", "1T"], "-m 1 TiB: more than this host's memory");
    refuses(&["-m", "lots"], "-m: invalid value 'lots'");
}

#[test]
fn zero_cpus() {
    if kvm_or_skip("zero_cpus") {
        refuses(&["-smp", "0"], "cpus must be at least 1");
    }
}

#[test]
fn unknown_and_unsupported_options() {
    refuses(&["-frobnicate"], "unknown option '-frobnicate'");
    refuses(
        &["-netdev", "vde,id=n0"],
        "only tap, bridge and user networking are supported",
    );
    refuses(
        &["-vga", "cirrus"],
        "not supported: use -vga std, -vga virtio or -vga none",
    );
    refuses(&["-m"], "option '-m' needs a value");
}

#[test]
fn command_line_longer_than_the_protocol_allows() {
    if !kvm_or_skip("command_line_longer_than_the_protocol_allows") {
        return;
    }
    let long = format!("probe=hello {}", "x".repeat(3000));
    refuses(&["-append", &long], "the boot protocol allows at most 2047");
}

#[test]
fn missing_initrd() {
    if kvm_or_skip("missing_initrd") {
        refuses(
            &["-initrd", "/nonexistent/initrd"],
            "cannot open initrd /nonexistent/initrd",
        );
    }
}

#[test]
fn block_device_on_the_wrong_machine() {
    let s = Scratch::new("wrongbus");
    let d = s.file("d.raw", &[0u8; 4096]);
    let drive = format!("file={d},format=raw,if=none,id=d0");
    refuses(
        &[
            "-M",
            "pc",
            "-drive",
            &drive,
            "-device",
            "virtio-blk-device,drive=d0",
        ],
        "device d0: virtio-blk-device does not exist on machine pc (use virtio-blk-pci)",
    );
    refuses(
        &[
            "-M",
            "microvm",
            "-drive",
            &drive,
            "-device",
            "virtio-blk-pci,drive=d0",
        ],
        "device d0: virtio-blk-pci does not exist on machine microvm (use virtio-blk-device)",
    );
    refuses(
        &[
            "-M",
            "q35",
            "-drive",
            &drive,
            "-device",
            "virtio-blk-pci,drive=d0",
            "-device",
            "virtio-blk-pci,drive=d0",
        ],
        "already used by a device",
    );
}

#[test]
fn a_missing_image_is_named_once_and_a_bzimage_says_which_field_is_wrong() {
    let out = casemate(&["-drive", "file=/nonexistent/disk.img,format=raw"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("/nonexistent/disk.img").count(), 1, "{err}");
    assert!(err.contains("drive drive0"), "{err}");
    if !kvm_or_skip("a_bzimage_says_which_field_is_wrong") {
        return;
    }
    let s = Scratch::new("bz-fields");
    let mut img = vec![0u8; 0x1000];
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
    img[0x1f1] = 60; // setup sectors past the file's end
    let k = s.file("bz", &img);
    refuses(
        &["-kernel", &k],
        "setup_sects=60 puts the kernel at byte 0x7a00",
    );
    img[0x1f1] = 1;
    img[0x1f4..0x1f8].copy_from_slice(&0x1000u32.to_le_bytes());
    let k = s.file("bz2", &img);
    refuses(&["-kernel", &k], "syssize says the kernel is 0x10000 bytes");
}
