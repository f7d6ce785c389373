//! `check_qcow2`: an offline consistency check of a qcow2 file, like
//! `qemu-img check` without repair. Recounts every reference (header, tables,
//! data, compressed runs) and compares with the stored refcounts; structural
//! damage is reported as corruption, never as a panic or a huge allocation.

use std::collections::HashSet;
use std::path::Path;

use crate::error::DiskError;
use crate::io::ImageFile;
use crate::qcow2::refcount::get_entry;
use crate::qcow2::table::{self, Bounds, Mapping, OFFSET_MASK};

/// Files with more clusters than this are not checked (2 bytes each in memory).
const MAX_CHECK_CLUSTERS: u64 = 1 << 27;

#[derive(Debug, Default)]
pub struct CheckReport {
    /// One line per corruption (qemu's "ERROR ..." lines).
    pub errors: Vec<String>,
    /// One line per leaked cluster.
    pub leaks: Vec<String>,
    pub total_clusters: u64,
    pub allocated_clusters: u64,
    pub fragmented_clusters: u64,
    pub compressed_clusters: u64,
    pub image_end_offset: u64,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.errors.is_empty() && self.leaks.is_empty()
    }
}

struct Counter {
    refs: Vec<u16>,
    /// (cluster, raw entry, what) of entries whose COPIED flag claims refcount 1.
    copied: Vec<(u64, u64, &'static str)>,
    cluster_bits: u32,
    errors: Vec<String>,
}

impl Counter {
    fn add(&mut self, what: &str, offset: u64, len: u64) {
        let first = offset >> self.cluster_bits;
        let last = (offset + len.max(1) - 1) >> self.cluster_bits;
        for c in first..=last {
            match self.refs.get_mut(c as usize) {
                Some(r) => *r = r.saturating_add(1),
                None => {
                    self.errors.push(format!(
                        "ERROR {what} at {offset:#x} is past the end of the image file"
                    ));
                    return;
                }
            }
        }
    }
}

fn read_u64s(f: &ImageFile, offset: u64, n: u64) -> Result<Vec<u64>, DiskError> {
    let mut raw = vec![0u8; (n * 8) as usize];
    f.read_at(&mut raw, offset)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

/// Checks the qcow2 image at `path`. `Err` means the check itself could not
/// run (unreadable file, header invalid, locked by a writer); findings are
/// in the report.
pub fn check_qcow2(path: &Path) -> Result<CheckReport, DiskError> {
    check_qcow2_with(path, true)
}

/// `check_qcow2`, taking the image lock (shared read, as qemu-img check
/// does) only when `locking`.
pub fn check_qcow2_with(path: &Path, locking: bool) -> Result<CheckReport, DiskError> {
    let f = crate::open_file(path, true, false)?;
    if locking {
        f.lock(crate::LockPerms::for_role(
            crate::LockRole::ReadOnly,
            crate::Format::Qcow2,
            false,
        ))?;
    }
    let (h, file_len) = crate::qcow2::read_header(&f)?;
    if h.nb_snapshots > 0 {
        return Err(DiskError::Unsupported {
            what: "checking images with internal snapshots",
            format: "qcow2",
        });
    }
    let cb = h.cluster_bits;
    let cs = h.cluster_size();
    let nclusters = file_len.div_ceil(cs);
    if nclusters > MAX_CHECK_CLUSTERS {
        return Err(DiskError::InvalidSize {
            size: file_len,
            reason: "image file has too many clusters to check",
        });
    }
    let mut c = Counter {
        refs: vec![0; nclusters as usize],
        copied: Vec::new(),
        cluster_bits: cb,
        errors: Vec::new(),
    };
    let mut rep = CheckReport {
        total_clusters: h.size.div_ceil(cs),
        ..CheckReport::default()
    };
    let b = Bounds {
        cluster_bits: cb,
        file_end: file_len,
    };
    c.add("header", 0, cs);
    c.add("L1 table", h.l1_table_offset, u64::from(h.l1_size) * 8);
    let rt_n = u64::from(h.refcount_table_clusters) * cs / 8;
    c.add("refcount table", h.refcount_table_offset, rt_n * 8);
    let rt = read_u64s(&f, h.refcount_table_offset, rt_n)?;
    for (i, &e) in rt.iter().enumerate() {
        let off = e & OFFSET_MASK;
        if off == 0 {
            continue;
        }
        match b.check_cluster("refcount block", off) {
            Ok(()) => c.add("refcount block", off, cs),
            Err(err) => c
                .errors
                .push(format!("ERROR refcount table entry {i}: {err}")),
        }
    }
    walk_l1(&f, &h, &b, &mut c, &mut rep)?;
    compare(&f, &h, &rt, &c, &mut rep)?;
    rep.errors.splice(0..0, c.errors);
    Ok(rep)
}

fn walk_l1(
    f: &ImageFile,
    h: &crate::qcow2::Header,
    b: &Bounds,
    c: &mut Counter,
    rep: &mut CheckReport,
) -> Result<(), DiskError> {
    let cs = h.cluster_size();
    let l1 = read_u64s(f, h.l1_table_offset, u64::from(h.l1_size))?;
    let mut seen = HashSet::new();
    let mut prev_host: Option<u64> = None;
    for (i, &e) in l1.iter().enumerate() {
        let l2_off = match table::decode_l1(e, b) {
            Ok(Some(o)) => o,
            Ok(None) => continue,
            Err(err) => {
                c.errors.push(format!("ERROR L1 entry {i}: {err}"));
                continue;
            }
        };
        c.add("L2 table", l2_off, cs);
        if e & table::COPIED != 0 {
            c.copied.push((l2_off / cs, e, "L2 table"));
        }
        if !seen.insert(l2_off) {
            // Shared L2 table: counted again above; its contents once only.
            continue;
        }
        let l2 = read_u64s(f, l2_off, cs / 8)?;
        for (j, &e2) in l2.iter().enumerate() {
            match table::decode_l2(e2, b) {
                Ok(Mapping::Data { host, copied }) => {
                    c.add("data cluster", host, cs);
                    if copied {
                        c.copied.push((host / cs, e2, "data cluster"));
                    }
                    rep.allocated_clusters += 1;
                    if prev_host.is_some_and(|p| p + cs != host) {
                        rep.fragmented_clusters += 1;
                    }
                    prev_host = Some(host);
                }
                Ok(Mapping::Zero { host: Some(host) }) => c.add("zero cluster", host, cs),
                Ok(Mapping::Compressed { host, len }) => {
                    // Count each host cluster the stream touches once.
                    let r = table::compressed_clusters(host, len.min(cs + 512), h.cluster_bits);
                    for hc in r {
                        c.add("compressed cluster", hc << h.cluster_bits, 1);
                    }
                    rep.allocated_clusters += 1;
                    rep.compressed_clusters += 1;
                }
                Ok(_) => {}
                Err(err) => c.errors.push(format!("ERROR L2 entry {i}/{j}: {err}")),
            }
        }
    }
    Ok(())
}

fn compare(
    f: &ImageFile,
    h: &crate::qcow2::Header,
    rt: &[u64],
    c: &Counter,
    rep: &mut CheckReport,
) -> Result<(), DiskError> {
    let cs = h.cluster_size();
    let order = h.refcount_order;
    let epb = (cs * 8) >> order;
    let max = if order == 6 {
        u64::MAX
    } else {
        (1u64 << (1u64 << order)) - 1
    };
    let mut stored = vec![0u64; c.refs.len()];
    let mut block = vec![0u8; cs as usize];
    for (bi, &e) in rt.iter().enumerate() {
        let off = e & OFFSET_MASK;
        if off == 0 || off & (cs - 1) != 0 || off < cs || off + cs > f.len()? {
            continue;
        }
        f.read_at(&mut block, off)?;
        for i in 0..epb {
            let v = get_entry(&block, i, order);
            let idx = bi as u64 * epb + i;
            // Like qemu-img, refcounts past the end of the file are ignored.
            if let Some(s) = stored.get_mut(idx as usize) {
                *s = v;
            }
        }
    }
    for &(idx, entry, what) in &c.copied {
        let s = stored.get(idx as usize).copied().unwrap_or(0);
        if s != 1 {
            rep.errors.push(format!(
                "ERROR OFLAG_COPIED {what}: entry={entry:#018x} refcount={s}"
            ));
        }
    }
    for (idx, (&s, &r)) in stored.iter().zip(c.refs.iter()).enumerate() {
        let r = u64::from(r);
        if r > max {
            rep.errors.push(format!(
                "ERROR cluster {idx} refcount overflow: {r} references"
            ));
        }
        if s > 0 || r > 0 {
            rep.image_end_offset = (idx as u64 + 1) * cs;
        }
        if s < r {
            rep.errors
                .push(format!("ERROR cluster {idx} refcount={s} reference={r}"));
        } else if s > r {
            rep.leaks
                .push(format!("Leaked cluster {idx} refcount={s} reference={r}"));
        }
    }
    Ok(())
}
