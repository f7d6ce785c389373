//! Lock conflicts between opens inside one process (OFD locks belong to the
//! open file description, so these behave as two processes would), the
//! `locking` switch, backing files and create-over-a-held-image. Interop
//! with QEMU itself is tested in tools/img/tests/locking.rs.

use crate::{create_overlay, open_image, qcow2, DiskError, Format, OpenOptions, RawImage};

use crate::test_tmp::Tmp;

fn rw() -> OpenOptions {
    OpenOptions::default()
}

fn ro() -> OpenOptions {
    OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    }
}

fn open_err(t: &Tmp, o: &OpenOptions) -> DiskError {
    open_image(&t.0, o).expect_err("second open must conflict")
}

fn raw(tag: &str) -> Tmp {
    let t = Tmp::new(tag);
    RawImage::create(&t.0, 1 << 20).unwrap();
    t
}

fn qcow(tag: &str) -> Tmp {
    let t = Tmp::new(tag);
    let o = qcow2::CreateOptions {
        size: 1 << 20,
        ..qcow2::CreateOptions::default()
    };
    qcow2::create(&t.0, &o).unwrap();
    t
}

#[test]
fn two_writers_in_one_process_conflict_with_qemus_message() {
    let t = raw("ww");
    let _a = open_image(&t.0, &rw()).unwrap();
    let e = open_err(&t, &rw());
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
    assert_eq!(
        e.to_string(),
        format!(
            "Failed to get \"write\" lock\nIs another process using the image [{}]?",
            t.0.display()
        )
    );
}

#[test]
fn reader_next_to_writer_conflicts_both_ways_readers_share() {
    let t = qcow("rw");
    {
        let _w = open_image(&t.0, &rw()).unwrap();
        let e = open_err(&t, &ro());
        assert!(
            matches!(
                e,
                DiskError::Locked {
                    perm: "write",
                    shared: true,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e
            .to_string()
            .starts_with("Failed to get shared \"write\" lock"));
    }
    let _r1 = open_image(&t.0, &ro()).unwrap();
    let _r2 = open_image(&t.0, &ro()).expect("readers share");
    assert!(matches!(
        open_err(&t, &rw()),
        DiskError::Locked {
            perm: "write",
            shared: false,
            ..
        }
    ));
}

#[test]
fn dropping_the_image_releases_its_locks() {
    let t = raw("drop");
    drop(open_image(&t.0, &rw()).unwrap());
    open_image(&t.0, &rw()).expect("the first image is closed");
}

#[test]
fn locking_off_and_force_share_bypass() {
    let t = raw("off");
    let _w = open_image(&t.0, &rw()).unwrap();
    let off = OpenOptions {
        locking: false,
        ..OpenOptions::default()
    };
    open_image(&t.0, &off).expect("locking=off takes no locks");
    let shared = OpenOptions {
        force_share: true,
        ..ro()
    };
    open_image(&t.0, &shared).expect("-U reads next to a writer");
    // And an unlocked writer does not block anyone either.
    drop(_w);
    let _x = open_image(&t.0, &off).unwrap();
    open_image(&t.0, &rw()).expect("no locks were taken by the unlocked open");
}

#[test]
fn backing_files_and_snapshot_bases_are_locked_shared_read() {
    let base = qcow("base");
    let top = Tmp::new("top");
    let o = qcow2::CreateOptions {
        size: 1 << 20,
        backing_file: Some(base.0.to_string_lossy().into_owned()),
        backing_format: Some(Format::Qcow2),
        ..qcow2::CreateOptions::default()
    };
    qcow2::create(&top.0, &o).unwrap();
    {
        let _img = open_image(&top.0, &rw()).unwrap();
        assert!(matches!(
            open_err(&base, &rw()),
            DiskError::Locked { perm: "write", .. }
        ));
        open_image(&base.0, &ro()).expect("another reader of the base is fine");
    }
    let ov = create_overlay(&base.0, Some(Format::Qcow2), None).unwrap();
    assert!(matches!(
        open_err(&base, &rw()),
        DiskError::Locked { perm: "write", .. }
    ));
    open_image(&base.0, &ro()).expect("-snapshot shares reading");
    drop(ov);
    open_image(&base.0, &rw()).expect("overlay closed");
}

#[test]
fn create_over_a_held_image_fails_and_keeps_its_data() {
    let t = raw("create");
    let img = open_image(&t.0, &rw()).unwrap();
    img.write_at(&[0xab; 512], 0).unwrap();
    let e = RawImage::create(&t.0, 4096).expect_err("held by a writer");
    assert!(
        matches!(e, DiskError::Locked { perm: "write", .. }),
        "{e:?}"
    );
    let o = qcow2::CreateOptions {
        size: 4096,
        ..qcow2::CreateOptions::default()
    };
    assert!(matches!(
        qcow2::create(&t.0, &o),
        Err(DiskError::Locked { .. })
    ));
    let mut b = [0u8; 512];
    img.read_at(&mut b, 0).unwrap();
    assert_eq!(b, [0xab; 512]);
    assert_eq!(img.virtual_size(), 1 << 20);
}
