//! casemate-img must never destroy the data it is given: convert onto its
//! own input, create over its own backing file or over an image in use,
//! resize to nothing. And convert must cost what the data costs, not the
//! virtual size: sparse inputs, `-S`, `-c`, `-p`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use casemate_disk::{open_image, OpenOptions};
use common::*;

fn write_at(path: &str, off: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, off).unwrap();
}

fn sparse_raw(path: &str, size: u64) {
    std::fs::File::create(path).unwrap().set_len(size).unwrap();
}

#[test]
fn convert_refuses_to_overwrite_its_input_or_backing_chain() {
    let d = TempDir::new("self-convert");
    let raw = d.path("data.raw");
    std::fs::write(&raw, vec![0x33; 1 << 20]).unwrap();
    for fmt in ["raw", "qcow2"] {
        let msg = fails(BIN, &["convert", "-f", "raw", "-O", fmt, &raw, &raw]);
        assert!(msg.contains("is the input image"), "{msg}");
    }
    // Another name for the same file (a symlink) is the same file.
    let link = d.path("link.raw");
    std::os::unix::fs::symlink(&raw, &link).unwrap();
    let msg = fails(BIN, &["convert", "-O", "raw", &raw, &link]);
    assert!(msg.contains("is the input image"), "{msg}");
    assert_eq!(std::fs::read(&raw).unwrap(), vec![0x33; 1 << 20]);

    let (base, top) = (d.path("base.qcow2"), d.path("top.qcow2"));
    ok(BIN, &["convert", "-O", "qcow2", &raw, &base]);
    ok(
        BIN,
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            &top,
        ],
    );
    let msg = fails(BIN, &["convert", "-O", "qcow2", &top, &top]);
    assert!(msg.contains("is the input image"), "{msg}");
    let msg = fails(BIN, &["convert", "-O", "qcow2", &top, &base]);
    assert!(msg.contains("in the backing chain"), "{msg}");
    // Both images still hold the data.
    ok(BIN, &["convert", "-O", "raw", &top, &d.path("out.raw")]);
    assert_eq!(
        std::fs::read(d.path("out.raw")).unwrap(),
        vec![0x33; 1 << 20]
    );
}

#[test]
fn resize_to_zero_is_refused_like_qemu_img() {
    let d = TempDir::new("resize0");
    let q = d.path("z.qcow2");
    let r = d.path("z.raw");
    ok(BIN, &["create", "-q", "-f", "qcow2", &q, "1M"]);
    std::fs::write(&r, vec![1u8; 4096]).unwrap();
    for (f, fmt) in [(&q, "qcow2"), (&r, "raw")] {
        for size in ["0", "-1M"] {
            let msg = fails(BIN, &["resize", "-f", fmt, "--shrink", f, size]);
            assert!(msg.contains("New image size must be positive"), "{msg}");
        }
    }
    let img = open_image(Path::new(&q), &OpenOptions::default()).unwrap();
    assert_eq!(img.virtual_size(), 1 << 20);
    assert_eq!(std::fs::read(&r).unwrap(), vec![1u8; 4096]);
}

#[test]
fn create_refuses_a_self_backed_image_by_any_name() {
    let d = TempDir::new("self-backed");
    let ex = d.path("ex.qcow2");
    ok(BIN, &["create", "-q", "-f", "qcow2", &ex, "1M"]);
    let before = std::fs::read(&ex).unwrap();
    std::os::unix::fs::symlink(&ex, d.path("exl.qcow2")).unwrap();
    for backing in ["ex.qcow2", "exl.qcow2"] {
        let msg = fails(
            BIN,
            &["create", "-f", "qcow2", "-b", backing, "-F", "qcow2", &ex],
        );
        assert!(msg.contains("same filename as the backing file"), "{msg}");
    }
    // One level down the chain is caught as well.
    let mid = d.path("mid.qcow2");
    ok(
        BIN,
        &[
            "create", "-q", "-f", "qcow2", "-b", "ex.qcow2", "-F", "qcow2", &mid,
        ],
    );
    let msg = fails(
        BIN,
        &[
            "create",
            "-f",
            "qcow2",
            "-b",
            "mid.qcow2",
            "-F",
            "qcow2",
            &ex,
        ],
    );
    assert!(msg.contains("same filename as the backing file"), "{msg}");
    assert_eq!(std::fs::read(&ex).unwrap(), before);
}

#[test]
fn create_over_an_image_in_use_fails_on_its_lock() {
    let d = TempDir::new("create-held");
    let f = d.path("held.qcow2");
    ok(BIN, &["create", "-q", "-f", "qcow2", &f, "1M"]);
    let img = open_image(Path::new(&f), &OpenOptions::default()).unwrap();
    img.write_at(&[9u8; 512], 0).unwrap();
    for fmt in ["raw", "qcow2"] {
        let msg = fails(BIN, &["create", "-f", fmt, &f, "2M"]);
        assert!(msg.contains("Failed to get \"write\" lock"), "{msg}");
        assert!(msg.contains("Is another process using the image"), "{msg}");
    }
    let mut b = [0u8; 512];
    img.read_at(&mut b, 0).unwrap();
    assert_eq!(b, [9u8; 512]);
    drop(img);
    ok(BIN, &["create", "-q", "-f", "raw", &f, "2M"]);
}

/// 10 GiB of holes with a few bytes of data: a full read takes minutes.
#[test]
fn convert_of_a_sparse_10g_image_reads_only_its_data() {
    let d = TempDir::new("sparse10g");
    let raw = d.path("big.raw");
    sparse_raw(&raw, 10 << 30);
    write_at(&raw, 5 << 30, b"middle");
    write_at(&raw, (10 << 30) - 4, b"end!");
    let (q, back) = (d.path("big.qcow2"), d.path("back.raw"));
    let t = Instant::now();
    ok(BIN, &["convert", "-f", "raw", "-O", "qcow2", &raw, &q]);
    ok(BIN, &["convert", "-O", "raw", &q, &back]);
    let took = t.elapsed();
    assert!(took < Duration::from_secs(5), "two converts took {took:?}");
    assert!(allocated(&q) < 2 << 20, "qcow2 uses {}", allocated(&q));
    assert!(allocated(&back) < 1 << 20, "raw uses {}", allocated(&back));
    let img = open_image(Path::new(&back), &OpenOptions::default()).unwrap();
    assert_eq!(img.virtual_size(), 10 << 30);
    let mut b = [0u8; 6];
    img.read_at(&mut b, 5 << 30).unwrap();
    assert_eq!(&b, b"middle");
    img.read_at(&mut b[..4], (10 << 30) - 4).unwrap();
    assert_eq!(&b[..4], b"end!");
}

#[test]
fn sparse_size_s_decides_which_zero_runs_become_holes() {
    let d = TempDir::new("sparse-s");
    let raw = d.path("in.raw");
    // 1 MiB of data with an 8 KiB zero run, then 1 MiB of written zeros.
    let mut data = vec![0xeeu8; 1 << 20];
    data[64 << 10..72 << 10].fill(0);
    data.extend(vec![0u8; 1 << 20]);
    std::fs::write(&raw, &data).unwrap();
    let conv = |s: &str, out: &str| {
        ok(BIN, &["convert", "-S", s, "-O", "raw", &raw, &d.path(out)]);
        assert_eq!(std::fs::read(d.path(out)).unwrap(), data);
        allocated(&d.path(out))
    };
    let default = conv("4k", "a.raw");
    let big = conv("16k", "b.raw");
    let full = conv("0", "c.raw");
    assert!(default <= (1 << 20) - (8 << 10), "-S 4k kept {default}");
    assert!(
        (1 << 20..(1 << 20) + (64 << 10)).contains(&big),
        "-S 16k: {big}"
    );
    assert!(full >= 2 << 20, "-S 0 fully allocates: {full}");
    let msg = fails(
        BIN,
        &["convert", "-S", "1000", "-O", "raw", &raw, &d.path("x.raw")],
    );
    assert!(
        msg.contains("Invalid buffer size for sparse output"),
        "{msg}"
    );
}

#[test]
fn compressed_convert_is_accepted_by_qemu_img() {
    if !have("qemu-img", "compressed_convert_is_accepted_by_qemu_img") {
        return;
    }
    let d = TempDir::new("compress");
    let raw = d.path("in.raw");
    // Compressible, with repeats further apart than qemu's 4 KiB window, a
    // hole, an incompressible cluster and a size that is not whole clusters.
    let mut data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 8191 % 251) as u8).collect();
    data[1 << 20..2 << 20].fill(0);
    let mut x = 1u32;
    for b in &mut data[(2 << 20) + 4096..(2 << 20) + 69632] {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    data.truncate((3 << 20) - 1000);
    std::fs::write(&raw, &data).unwrap();
    let (c, p) = (d.path("c.qcow2"), d.path("p.qcow2"));
    ok(BIN, &["convert", "-c", "-O", "qcow2", &raw, &c]);
    ok(BIN, &["convert", "-O", "qcow2", &raw, &p]);
    ok("qemu-img", &["check", &c]);
    ok(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "qcow2", &raw, &c],
    );
    let j: serde_json::Value =
        serde_json::from_str(&ok("qemu-img", &["check", "--output=json", &c])).unwrap();
    assert!(j["compressed-clusters"].as_u64().unwrap() > 10, "{j}");
    assert!(
        allocated(&c) < allocated(&p) / 2,
        "{} vs {}",
        allocated(&c),
        allocated(&p)
    );
    // Our reader agrees, and a raw output refuses -c as qemu-img does.
    ok(BIN, &["convert", "-O", "raw", &c, &d.path("back.raw")]);
    let back = std::fs::read(d.path("back.raw")).unwrap();
    assert_eq!(&back[..data.len()], &data[..]);
    let msg = fails(BIN, &["convert", "-c", "-O", "raw", &raw, &d.path("x.raw")]);
    assert!(msg.contains("Compression not supported"), "{msg}");
}

#[test]
fn progress_is_silent_when_stderr_is_not_a_terminal() {
    let d = TempDir::new("progress");
    let raw = d.path("in.raw");
    std::fs::write(&raw, vec![5u8; 1 << 20]).unwrap();
    let out = run(
        BIN,
        &["convert", "-p", "-O", "qcow2", &raw, &d.path("o.qcow2")],
    );
    assert!(out.status.success());
    assert!(out.stderr.is_empty() && out.stdout.is_empty(), "{out:?}");
}
