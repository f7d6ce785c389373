//! Header walks over hand-made qcow2 headers (only the fields the walk
//! reads): names resolved as QEMU does, the recorded format kept, the walk
//! ending at a raw or unreadable file, loops and bad headers refused.

use std::path::Path;

use super::*;

/// A qcow2 header (v3, 104 bytes) naming `backing` with `format` recorded.
fn qcow(path: &Path, backing: Option<&str>, format: Option<&str>) {
    let mut h = vec![0u8; 4096];
    h[0..4].copy_from_slice(&QCOW_MAGIC.to_be_bytes());
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&16u32.to_be_bytes());
    h[100..104].copy_from_slice(&104u32.to_be_bytes());
    let mut at = 104;
    // An unknown extension first: the walk must step over it.
    h[at..at + 4].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    h[at + 4..at + 8].copy_from_slice(&5u32.to_be_bytes());
    at += 16;
    if let Some(f) = format {
        h[at..at + 4].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
        h[at + 4..at + 8].copy_from_slice(&(f.len() as u32).to_be_bytes());
        h[at + 8..at + 8 + f.len()].copy_from_slice(f.as_bytes());
        at += 8 + f.len().div_ceil(8) * 8;
    }
    let _ = at; // type 0 (zeros) ends the list
    if let Some(b) = backing {
        h[8..16].copy_from_slice(&1024u64.to_be_bytes());
        h[16..20].copy_from_slice(&(b.len() as u32).to_be_bytes());
        h[1024..1024 + b.len()].copy_from_slice(b.as_bytes());
    }
    std::fs::write(path, h).unwrap();
}

#[test]
fn walks_a_chain_top_first_resolving_relative_names() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    std::fs::write(p("base.raw"), [0u8; 512]).unwrap();
    std::fs::create_dir(p("sub")).unwrap();
    qcow(&p("sub/mid.qcow2"), Some("../base.raw"), Some("raw"));
    let mid = p("sub/mid.qcow2");
    qcow(&p("top.qcow2"), Some(mid.to_str().unwrap()), Some("qcow2"));
    let c = backing_chain(&p("top.qcow2")).unwrap();
    assert_eq!(
        c,
        vec![
            Backing {
                path: mid.clone(),
                format: Some("qcow2")
            },
            Backing {
                path: p("sub/../base.raw"),
                format: Some("raw")
            },
        ]
    );
    assert!(backing_chain(&p("base.raw")).unwrap().is_empty());
    // A backing file with no recorded format is handed over but never
    // probed: the walk stops there.
    qcow(&p("unrecorded.qcow2"), Some("sub/mid.qcow2"), None);
    assert_eq!(
        backing_chain(&p("unrecorded.qcow2")).unwrap(),
        vec![Backing {
            path: p("sub/mid.qcow2"),
            format: None
        }]
    );
    assert!(backing_chain(&p("missing")).unwrap().is_empty());
    qcow(&p("alone.qcow2"), None, None);
    assert!(backing_chain(&p("alone.qcow2")).unwrap().is_empty());
    // A backing file that is not there ends the chain (its open reports it).
    qcow(&p("dangling.qcow2"), Some("gone.qcow2"), Some("qcow2"));
    assert_eq!(backing_chain(&p("dangling.qcow2")).unwrap().len(), 1);
}

#[test]
fn loops_depth_and_bad_headers_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = |n: &str| d.path().join(n);
    qcow(&p("a.qcow2"), Some("b.qcow2"), Some("qcow2"));
    qcow(&p("b.qcow2"), Some("a.qcow2"), Some("qcow2"));
    assert!(backing_chain(&p("a.qcow2")).unwrap_err().contains("loops"));
    for i in 0..=MAX_LEVELS + 1 {
        let next = format!("l{}.qcow2", i + 1);
        qcow(&p(&format!("l{i}.qcow2")), Some(&next), Some("qcow2"));
    }
    assert!(backing_chain(&p("l0.qcow2"))
        .unwrap_err()
        .contains("longer"));
    qcow(&p("vmdk.qcow2"), Some("x.vmdk"), Some("vmdk"));
    assert!(backing_chain(&p("vmdk.qcow2"))
        .unwrap_err()
        .contains("vmdk"));
    // A name past the header cluster.
    let mut h = std::fs::read(p("a.qcow2")).unwrap();
    h[8..16].copy_from_slice(&(1u64 << 40).to_be_bytes());
    std::fs::write(p("far.qcow2"), h).unwrap();
    assert!(backing_chain(&p("far.qcow2")).is_err());
}
