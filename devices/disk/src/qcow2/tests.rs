//! Unit tests for qcow2: round trips through `DiskImage`, backing files,
//! concurrency, crash-order invariants via `check`, resize, hostile headers,
//! and a proptest corpus over the header and table parser.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::check::check_qcow2;
use crate::{open_image, DiskImage, Format, OpenOptions};

use crate::test_tmp::Tmp;

fn new_qcow2(tag: &str, size: u64, cluster_size: u64) -> (Tmp, Box<dyn DiskImage>) {
    let t = Tmp::new(tag);
    create(
        &t.0,
        &CreateOptions {
            size,
            cluster_size,
            ..CreateOptions::default()
        },
    )
    .unwrap();
    let img = open_image(&t.0, &OpenOptions::default()).unwrap();
    (t, img)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn write_read_round_trip_and_consistent_refcounts() {
    for cs in [512u64, 4096, 65536] {
        let (t, img) = new_qcow2("rt", 8 << 20, cs);
        let a = pattern(10_000, 1);
        img.write_at(&a, 12_345).unwrap();
        img.write_at(&a[..100], 7 << 20).unwrap();
        let mut b = vec![0u8; 10_000];
        img.read_at(&mut b, 12_345).unwrap();
        assert_eq!(a, b);
        let mut z = vec![1u8; 4096];
        img.read_at(&mut z, 4 << 20).unwrap();
        assert!(z.iter().all(|&x| x == 0));
        img.flush().unwrap();
        drop(img);
        let rep = check_qcow2(&t.0).unwrap();
        assert!(rep.is_clean(), "cs {cs}: {:?} {:?}", rep.errors, rep.leaks);
        let img = open_image(
            &t.0,
            &OpenOptions {
                read_only: true,
                ..OpenOptions::default()
            },
        )
        .unwrap();
        img.read_at(&mut b, 12_345).unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn small_clusters_grow_the_refcount_table() {
    // 512-byte clusters: one refcount table cluster covers 64 blocks of 256
    // clusters = 8 MiB of file, so 12 MiB of data forces table growth.
    let (t, img) = new_qcow2("grow", 16 << 20, 512);
    let data = pattern(1 << 20, 9);
    for i in 0..12u64 {
        img.write_at(&data, i << 20).unwrap();
    }
    img.flush().unwrap();
    let mut back = vec![0u8; 1 << 20];
    img.read_at(&mut back, 11 << 20).unwrap();
    assert_eq!(back, data);
    drop(img);
    let rep = check_qcow2(&t.0).unwrap();
    assert!(
        rep.is_clean(),
        "{:?} {:?}",
        rep.errors.first(),
        rep.leaks.first()
    );
}

#[test]
fn errors_not_panics_for_bad_requests() {
    let (_t, img) = new_qcow2("range", 1 << 20, 65536);
    let mut b = [0u8; 16];
    assert!(matches!(
        img.read_at(&mut b, (1 << 20) - 8),
        Err(DiskError::OutOfRange { .. })
    ));
    assert!(matches!(
        img.write_at(&b, u64::MAX - 4),
        Err(DiskError::OutOfRange { .. })
    ));
    let (t, _) = new_qcow2("ro", 1 << 20, 65536);
    let ro = open_image(
        &t.0,
        &OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    assert!(matches!(
        ro.write_at(&b, 0),
        Err(DiskError::ReadOnly { .. })
    ));
    assert!(matches!(
        ro.discard(0, 512),
        Err(DiskError::ReadOnly { .. })
    ));
}

#[test]
fn overlay_reads_backing_and_cows_partial_clusters() {
    let base = Tmp::new("base");
    crate::RawImage::create(&base.0, 1 << 20).unwrap();
    let raw = open_image(&base.0, &OpenOptions::default()).unwrap();
    let b = pattern(1 << 20, 3);
    raw.write_at(&b, 0).unwrap();
    drop(raw);
    let ov = crate::create_overlay(&base.0, Some(Format::Raw), None).unwrap();
    ov.write_at(&[0xee; 100], 70_000).unwrap();
    let mut got = vec![0u8; 1 << 20];
    ov.read_at(&mut got, 0).unwrap();
    let mut want = b.clone();
    want[70_000..70_100].fill(0xee);
    assert_eq!(got, want);
    ov.write_zeroes(0, 65536).unwrap();
    ov.read_at(&mut got[..65536], 0).unwrap();
    assert!(got[..65536].iter().all(|&x| x == 0));
    ov.flush().unwrap();
    // The backing file is untouched.
    assert_eq!(std::fs::read(&base.0).unwrap(), b);
}

#[test]
fn parallel_writers_and_readers() {
    let (t, img) = new_qcow2("par", 32 << 20, 65536);
    let img: Arc<dyn DiskImage> = Arc::from(img);
    let threads: Vec<_> = (0..8u8)
        .map(|k| {
            let img = img.clone();
            std::thread::spawn(move || {
                for i in 0..64u64 {
                    let off = ((i * 8 + u64::from(k)) * 4096 * 7) % (32 << 20);
                    let off = off - off % 4096;
                    let d = vec![k.wrapping_add(i as u8); 4096];
                    img.write_at(&d, off).unwrap();
                    let mut r = vec![0u8; 4096];
                    img.read_at(&mut r, off).unwrap();
                    assert_eq!(r, d);
                    if i % 16 == 0 {
                        img.flush().unwrap();
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    img.flush().unwrap();
    drop(img);
    assert!(check_qcow2(&t.0).unwrap().is_clean());
}

#[test]
fn discard_frees_clusters_after_flush() {
    let (t, img) = new_qcow2("discard", 4 << 20, 65536);
    img.write_at(&vec![7u8; 1 << 20], 0).unwrap();
    img.flush().unwrap();
    let before = std::fs::metadata(&t.0).unwrap().len();
    img.discard(0, 1 << 20).unwrap();
    img.flush().unwrap();
    let mut r = vec![1u8; 4096];
    img.read_at(&mut r, 65536).unwrap();
    assert!(r.iter().all(|&x| x == 0));
    // Freed clusters are reused: the file does not grow.
    img.write_at(&vec![8u8; 1 << 20], 2 << 20).unwrap();
    img.flush().unwrap();
    assert_eq!(std::fs::metadata(&t.0).unwrap().len(), before);
    drop(img);
    let rep = check_qcow2(&t.0).unwrap();
    assert!(rep.is_clean(), "{:?} {:?}", rep.errors, rep.leaks);
}

#[test]
fn resize_grows_l1_and_shrink_drops_data() {
    let (t, img) = new_qcow2("resize", 1 << 20, 512);
    img.write_at(&[5u8; 4096], 900 << 10).unwrap();
    // 512-byte clusters map 32 KiB per L1 entry: 64 MiB needs a bigger L1.
    img.resize(64 << 20).unwrap();
    img.write_at(&[6u8; 4096], 60 << 20).unwrap();
    img.resize(800 << 10).unwrap();
    img.resize(1 << 20).unwrap();
    let mut r = vec![1u8; 4096];
    img.read_at(&mut r, 900 << 10).unwrap();
    assert!(r.iter().all(|&x| x == 0), "data past a shrink came back");
    img.flush().unwrap();
    drop(img);
    let rep = check_qcow2(&t.0).unwrap();
    assert!(
        rep.is_clean(),
        "{:?} {:?}",
        rep.errors.first(),
        rep.leaks.first()
    );
}

fn valid_header_bytes() -> (Tmp, Vec<u8>) {
    let (t, img) = new_qcow2("hdr", 1 << 20, 4096);
    img.write_at(&[1u8; 8192], 4096).unwrap();
    drop(img);
    let bytes = std::fs::read(&t.0).unwrap();
    (t, bytes)
}

/// Opens mutated image bytes and reads everything: must never panic.
fn open_and_read(bytes: &[u8]) {
    let t = Tmp::new("fuzz");
    std::fs::write(&t.0, bytes).unwrap();
    let opts = OpenOptions {
        format: Some(Format::Qcow2),
        read_only: true,
        ..OpenOptions::default()
    };
    if let Ok(img) = open_image(&t.0, &opts) {
        let mut buf = vec![0u8; 65536];
        let size = img.virtual_size().min(1 << 20);
        let mut off = 0;
        while off + 4096 <= size {
            let _ = img.read_at(&mut buf[..4096], off);
            off += 4096;
        }
    }
    let _ = check_qcow2(&t.0);
}

#[test]
fn hostile_headers_give_clear_errors() {
    let (_t, good) = valid_header_bytes();
    let cases: &[(usize, &[u8], &str)] = &[
        (20, &[0, 0, 0, 40], "cluster_bits"),
        (24, &[0xff; 8], "virtual size"),
        (36, &[0xff, 0xff, 0xff, 0xff], "L1 table has"),
        (
            40,
            &[0, 0, 0, 0, 0, 0, 0, 0],
            "points into the image header",
        ),
        (40, &[0, 0, 0, 1, 0, 0, 0, 0], "past the end of the file"),
        (48, &[0, 0, 0, 0, 0, 0, 0x10, 0x01], "not aligned"),
        (56, &[0xff, 0xff, 0, 0], "refcount table of"),
        (96, &[0, 0, 0, 9], "refcount_order"),
        (72, &[0, 0, 0, 0, 0, 0, 0, 0x80], "incompatible"),
    ];
    for (at, patch, msg) in cases {
        let mut b = good.clone();
        b[*at..at + patch.len()].copy_from_slice(patch);
        let file_len = b.len() as u64;
        let err = Header::parse(&b, file_len).unwrap_err().to_string();
        assert!(err.contains(msg), "patch at {at}: {err}");
        open_and_read(&b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic the header parser.
    #[test]
    fn header_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), len in 0u64..1 << 40) {
        let _ = Header::parse(&bytes, len);
    }

    /// Random entries never panic the table decoders.
    #[test]
    fn table_decoders_never_panic(e in any::<u64>(), bits in 9u32..=21, end in any::<u64>()) {
        let b = table::Bounds { cluster_bits: bits, file_end: end };
        let _ = table::decode_l1(e, &b);
        if let Ok(Mapping::Compressed { host, len }) = table::decode_l2(e, &b) {
            prop_assert!(host < end);
            let _ = table::compressed_clusters(host, len, bits);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// A valid small image with random bytes overwritten anywhere (header,
    /// refcount table, L1, L2, data) opens, reads and checks without panics.
    #[test]
    fn mutated_images_never_panic(muts in proptest::collection::vec((0usize..40960, any::<u8>()), 1..24)) {
        let (_t, mut b) = valid_header_bytes();
        for (at, v) in muts {
            let i = at % b.len();
            b[i] = v;
        }
        open_and_read(&b);
    }
}
