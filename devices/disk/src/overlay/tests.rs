//! Overlays on an open base: reads fall through to the base, writes stay in
//! the overlay (memfd), the base file stays byte-identical and locked
//! against writers for as long as the overlay lives.

use std::path::Path;

use super::*;
use crate::{open_image, qcow2, DiskImage, Format, OpenOptions};

use crate::test_tmp::Tmp;

const SIZE: usize = 1 << 20;

/// Byte `i` of the base: its sector number mixed with its offset, so a
/// read from the wrong place shows.
fn pattern() -> Vec<u8> {
    (0..SIZE).map(|i| ((i / 512) as u8) ^ (i as u8)).collect()
}

fn raw_base(tag: &str) -> Tmp {
    let t = Tmp::new(tag);
    std::fs::write(&t.0, pattern()).unwrap();
    t
}

/// The base as the jailer hands it over: an fd open read-only.
fn on_fd(base: &Path, opts: &OpenOptions) -> Box<dyn DiskImage> {
    let f = File::open(base).unwrap();
    overlay_on_file(f, Path::new("/dev/fdset/0"), opts).unwrap()
}

fn read(img: &dyn DiskImage, off: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    img.read_at(&mut b, off).unwrap();
    b
}

#[test]
fn reads_fall_through_and_writes_stay_in_the_overlay() {
    let t = raw_base("rw");
    let want = pattern();
    let img = on_fd(&t.0, &OpenOptions::default());
    assert_eq!(img.virtual_size(), SIZE as u64);
    assert_eq!(img.format(), Format::Qcow2);
    assert!(!img.is_read_only());
    assert_eq!(
        read(img.as_ref(), 0, SIZE),
        want,
        "untouched: all from the base"
    );

    // Unaligned, across a 64 KiB cluster boundary, and the last bytes.
    let writes: [(u64, usize); 3] = [(1000, 300), (65536 - 100, 200), (SIZE as u64 - 7, 7)];
    let mut model = want.clone();
    for (n, (off, len)) in writes.iter().enumerate() {
        let data = vec![0xA0 + n as u8; *len];
        img.write_at(&data, *off).unwrap();
        model[*off as usize..*off as usize + len].copy_from_slice(&data);
    }
    img.flush().unwrap();
    assert_eq!(
        read(img.as_ref(), 0, SIZE),
        model,
        "overlay writes over the base"
    );
    // Copy-on-write kept the rest of each touched cluster from the base.
    assert_eq!(
        read(img.as_ref(), 65536 + 100, 1000),
        want[65536 + 100..65536 + 1100]
    );

    img.write_zeroes(4096, 8192).unwrap();
    model[4096..4096 + 8192].fill(0);
    assert_eq!(read(img.as_ref(), 0, SIZE), model);

    assert_eq!(
        std::fs::read(&t.0).unwrap(),
        want,
        "the base file is untouched"
    );
    let info = img.info();
    assert_eq!(info.backing_file.as_deref(), Some("/dev/fdset/0"));
    assert_eq!(info.backing_format, Some(Format::Raw));
    drop(img);
    assert_eq!(
        std::fs::read(&t.0).unwrap(),
        want,
        "still untouched after close"
    );
}

#[test]
fn a_qcow2_base_reads_through_its_own_clusters() {
    let t = Tmp::new("q");
    qcow2::create(
        &t.0,
        &qcow2::CreateOptions {
            size: SIZE as u64,
            ..qcow2::CreateOptions::default()
        },
    )
    .unwrap();
    {
        let b = open_image(&t.0, &OpenOptions::default()).unwrap();
        b.write_at(&[7u8; 4096], 131072).unwrap();
        b.flush().unwrap();
    }
    let before = std::fs::read(&t.0).unwrap();
    let img = on_fd(
        &t.0,
        &OpenOptions {
            format: Some(Format::Qcow2),
            ..OpenOptions::default()
        },
    );
    assert_eq!(read(img.as_ref(), 131072, 4096), vec![7u8; 4096]);
    assert_eq!(read(img.as_ref(), 0, 4096), vec![0u8; 4096]);
    img.write_at(&[9u8; 512], 131072 + 512).unwrap();
    let mut want = vec![7u8; 4096];
    want[512..1024].fill(9);
    assert_eq!(read(img.as_ref(), 131072, 4096), want);
    assert_eq!(img.info().backing_format, Some(Format::Qcow2));
    drop(img);
    assert_eq!(
        std::fs::read(&t.0).unwrap(),
        before,
        "the qcow2 base is untouched"
    );
}

#[test]
fn the_base_is_locked_shared_read_while_the_overlay_lives() {
    let t = raw_base("lock");
    let img = on_fd(&t.0, &OpenOptions::default());
    let writer = open_image(&t.0, &OpenOptions::default());
    assert!(
        matches!(writer, Err(DiskError::Locked { .. })),
        "a writer while the overlay lives: {writer:?}"
    );
    let reader = open_image(
        &t.0,
        &OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    );
    assert!(reader.is_ok(), "a reader shares: {reader:?}");
    drop(reader);
    drop(img);
    assert!(
        open_image(&t.0, &OpenOptions::default()).is_ok(),
        "released at close"
    );
}

#[test]
fn locking_off_takes_no_lock() {
    let t = raw_base("nolock");
    let img = on_fd(
        &t.0,
        &OpenOptions {
            locking: false,
            ..OpenOptions::default()
        },
    );
    assert!(open_image(&t.0, &OpenOptions::default()).is_ok());
    drop(img);
}

#[test]
fn overlays_are_independent_of_each_other() {
    let t = raw_base("two");
    let ro = OpenOptions {
        locking: false,
        ..OpenOptions::default()
    };
    let a = on_fd(&t.0, &ro);
    let b = on_fd(&t.0, &ro);
    a.write_at(&[1u8; 512], 0).unwrap();
    assert_eq!(read(a.as_ref(), 0, 512), vec![1u8; 512]);
    assert_eq!(read(b.as_ref(), 0, 512), pattern()[..512]);
}
