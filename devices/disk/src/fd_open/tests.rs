//! Images opened from an fd lock as path opens do (OFD locks, so two opens
//! in this process behave as two processes would), whatever other fds on
//! the same description are closed; a qcow2 whose backing file the fd's
//! name cannot reach is refused by name.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::{open_image, open_image_file, qcow2, DiskError, Format, OpenOptions, RawImage};

const FDSET: &str = "/dev/fdset/0";

use crate::test_tmp::Tmp;

fn raw(tag: &str) -> Tmp {
    let t = Tmp::new(tag);
    RawImage::create(&t.0, 1 << 20).unwrap();
    t
}

fn opts(read_only: bool, locking: bool) -> OpenOptions {
    OpenOptions {
        format: Some(Format::Raw),
        read_only,
        locking,
        ..OpenOptions::default()
    }
}

/// Opens `path` as a launcher would and hands the image a duplicate,
/// closing the original: the lock must not go with it.
fn via_fd(path: &Path, o: &OpenOptions) -> Result<Box<dyn crate::DiskImage>, DiskError> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(!o.read_only)
        .open(path)
        .unwrap();
    let dup: File = f.try_clone().unwrap();
    drop(f);
    open_image_file(dup, Path::new(FDSET), o)
}

fn is_locked(e: &DiskError, perm: &str) -> bool {
    matches!(e, DiskError::Locked { perm: p, .. } if *p == perm)
}

#[test]
fn an_fd_writer_keeps_writers_and_readers_out() {
    let t = raw("w");
    let img = via_fd(&t.0, &opts(false, true)).unwrap();
    let e = open_image(&t.0, &opts(false, true)).expect_err("second writer");
    assert!(is_locked(&e, "write"), "{e}");
    assert!(
        e.to_string().starts_with("Failed to get \"write\" lock"),
        "{e}"
    );
    let e = open_image(&t.0, &opts(true, true)).expect_err("reader next to a writer");
    assert!(is_locked(&e, "write"), "{e}");
    let shared = OpenOptions {
        force_share: true,
        ..opts(true, true)
    };
    open_image(&t.0, &shared).expect("-U reads next to a writer");
    drop(img);
    open_image(&t.0, &opts(false, true)).expect("the lock goes with the image");
}

#[test]
fn an_fd_open_is_refused_by_a_path_writer_and_named() {
    let t = raw("refused");
    let _w = open_image(&t.0, &opts(false, true)).unwrap();
    let e = via_fd(&t.0, &opts(false, true)).expect_err("second writer");
    assert!(is_locked(&e, "write"), "{e}");
    assert!(e.to_string().contains(FDSET), "{e}");
    let e = via_fd(&t.0, &opts(true, true)).expect_err("reader next to a writer");
    assert!(is_locked(&e, "write"), "{e}");
}

#[test]
fn an_fd_reader_lets_readers_in_and_writers_not() {
    let t = raw("r");
    let _r = via_fd(&t.0, &opts(true, true)).unwrap();
    open_image(&t.0, &opts(true, true)).expect("two readers");
    via_fd(&t.0, &opts(true, true)).expect("two fd readers");
    let e = open_image(&t.0, &opts(false, true)).expect_err("writer next to a reader");
    assert!(is_locked(&e, "write"), "{e}");
}

#[test]
fn locking_off_on_an_fd_takes_no_lock() {
    let t = raw("off");
    let _img = via_fd(&t.0, &opts(false, false)).unwrap();
    open_image(&t.0, &opts(false, true)).expect("nothing held");
}

#[test]
fn a_qcow2_fd_locks_its_format_and_its_reachable_backing() {
    let base = raw("base");
    let top = Tmp::new("top");
    qcow2::create(
        &top.0,
        &qcow2::CreateOptions {
            size: 1 << 20,
            backing_file: Some(base.0.to_string_lossy().into_owned()),
            backing_format: Some(Format::Raw),
            ..qcow2::CreateOptions::default()
        },
    )
    .unwrap();
    let o = OpenOptions::default();
    let img = via_fd(&top.0, &o).unwrap();
    assert_eq!(img.format(), Format::Qcow2);
    let e = open_image(&top.0, &o).expect_err("second writer of the qcow2");
    assert!(matches!(e, DiskError::Locked { .. }), "{e}");
    let e = open_image(&base.0, &opts(false, true)).expect_err("writer of the backing");
    assert!(is_locked(&e, "write"), "{e}");
    open_image(&base.0, &opts(true, true)).expect("the backing shares reading");
}

#[test]
fn a_qcow2_fd_whose_backing_is_out_of_reach_is_refused_by_name() {
    let top = Tmp::new("rel");
    qcow2::create(
        &top.0,
        &qcow2::CreateOptions {
            size: 1 << 20,
            backing_file: Some("base.raw".into()),
            backing_format: Some(Format::Raw),
            ..qcow2::CreateOptions::default()
        },
    )
    .unwrap();
    let e = via_fd(&top.0, &OpenOptions::default()).expect_err("relative to /dev/fdset");
    let DiskError::BackingOutOfReach { path, backing, .. } = &e else {
        panic!("{e:?}");
    };
    assert_eq!(path, Path::new(FDSET));
    assert_eq!(backing, "base.raw");
    let msg = e.to_string();
    for want in [
        "backing file base.raw (at /dev/fdset/base.raw) of /dev/fdset/0,",
        "flatten the image (qemu-img convert",
    ] {
        assert!(msg.contains(want), "no {want:?} in {msg}");
    }
    // Nothing stays locked after the refusal.
    open_image(
        &top.0,
        &OpenOptions {
            no_backing: true,
            ..OpenOptions::default()
        },
    )
    .expect("the refused open let go of its lock");
}

fn qcow_over(tag: &str, backing: &str, format: Format) -> Tmp {
    let t = Tmp::new(tag);
    qcow2::create(
        &t.0,
        &qcow2::CreateOptions {
            size: 1 << 20,
            backing_file: Some(backing.into()),
            backing_format: Some(format),
            ..qcow2::CreateOptions::default()
        },
    )
    .unwrap();
    t
}

fn handed(path: &Path, set: u32, format: Option<Format>) -> crate::HandedBacking {
    crate::HandedBacking {
        file: File::open(path).unwrap(),
        name: PathBuf::from(format!("/dev/fdset/{set}")),
        format,
    }
}

fn top_fd(path: &Path) -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

#[test]
fn a_handed_chain_replaces_the_header_backing_and_is_locked() {
    let base = raw("chain-base");
    {
        let b = open_image(&base.0, &opts(false, true)).unwrap();
        b.write_at(&[0x77; 512], 0).unwrap();
    }
    let mid = qcow_over("chain-mid", "nowhere/base.raw", Format::Raw);
    let top = qcow_over("chain-top", "nowhere/mid.qcow2", Format::Qcow2);
    let chain = vec![
        handed(&mid.0, 1, Some(Format::Qcow2)),
        handed(&base.0, 2, None),
    ];
    let img = crate::open_image_file_with(
        top_fd(&top.0),
        Path::new(FDSET),
        &OpenOptions::default(),
        chain,
    )
    .unwrap();
    let mut b = [0u8; 512];
    img.read_at(&mut b, 0).unwrap();
    assert_eq!(b, [0x77; 512], "the base's data through the handed chain");
    img.write_at(&[0x55; 512], 512).unwrap();
    img.read_at(&mut b, 512).unwrap();
    assert_eq!(b, [0x55; 512]);
    let info = img.info();
    assert_eq!(
        info.full_backing_file.as_deref(),
        Some(Path::new("/dev/fdset/1"))
    );
    for (t, what) in [(&mid, "mid"), (&base, "base")] {
        let e = open_image(&t.0, &opts(false, true)).expect_err(what);
        assert!(matches!(e, DiskError::Locked { .. }), "{what}: {e}");
    }
    open_image(&base.0, &opts(true, true)).expect("backing files share reading");
    drop(img);
    let b0 = std::fs::read(&base.0).unwrap();
    assert!(b0[..512].iter().all(|&x| x == 0x77) && b0[512..1024].iter().all(|&x| x == 0));
    open_image(&base.0, &opts(false, true)).expect("the locks went with the image");
}

#[test]
fn a_handed_backing_that_is_locked_or_given_to_raw_is_refused() {
    let base = raw("chain-held");
    let top = qcow_over("chain-held-top", "base.raw", Format::Raw);
    let _w = open_image(&base.0, &opts(false, true)).unwrap();
    let e = crate::open_image_file_with(
        top_fd(&top.0),
        Path::new(FDSET),
        &OpenOptions::default(),
        vec![handed(&base.0, 1, Some(Format::Raw))],
    )
    .expect_err("the backing has a writer");
    let msg = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(
        msg.contains("/dev/fdset/1") && msg.contains(FDSET) && msg.contains("\"write\" lock"),
        "{msg}"
    );
    drop(_w);
    let other = raw("chain-rawtop");
    let e = crate::open_image_file_with(
        top_fd(&other.0),
        Path::new(FDSET),
        &opts(false, true),
        vec![handed(&base.0, 1, Some(Format::Raw))],
    )
    .expect_err("raw has no backing");
    assert!(
        matches!(e, DiskError::Unsupported { format: "raw", .. }),
        "{e}"
    );
}
