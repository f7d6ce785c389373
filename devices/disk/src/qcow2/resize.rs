//! Changing a qcow2 image's virtual size. Growing may move the L1 table to a
//! larger copy; shrinking frees every cluster past the new end first (and
//! zeroes the tail of a partial last cluster), so no data survives out of
//! sight and a later grow reads zeros there.

use std::sync::atomic::Ordering;

use super::header::{Header, MAX_L1_BYTES, MAX_VIRTUAL_SIZE};
use super::table::{self, Mapping};
use super::{Qcow2Image, QcowError};
use crate::error::DiskError;
use crate::DiskImage;

pub fn resize(img: &Qcow2Image, new_size: u64) -> Result<(), DiskError> {
    let old = img.virtual_size();
    if new_size > MAX_VIRTUAL_SIZE {
        return Err(DiskError::InvalidSize {
            size: new_size,
            reason: "larger than the qcow2 maximum",
        });
    }
    if new_size < old {
        shrink_data(img, new_size, old)?;
    }
    let _g = img.gate.write().unwrap_or_else(|p| p.into_inner());
    let mut meta = img.lock();
    let f = &img.file;
    let needed = Header::l1_entries_for(img.cluster_bits, new_size);
    if needed > meta.l1.len() as u64 {
        grow_l1(img, &mut meta, needed)?;
    }
    meta.flush(f, true)?;
    meta.header.size = new_size;
    f.write_at(&new_size.to_be_bytes(), 24)?;
    f.sync_data()?;
    img.size.store(new_size, Ordering::Release);
    Ok(())
}

/// Zeroes `[new_size, end of its cluster)` and drops every cluster past it.
fn shrink_data(img: &Qcow2Image, new_size: u64, old: u64) -> Result<(), DiskError> {
    let cs = img.cs();
    let tail_end = new_size.div_ceil(cs) * cs;
    if tail_end > new_size && new_size < old {
        let n = tail_end.min(old) - new_size;
        let mut meta = img.lock();
        if !matches!(
            meta.lookup(&img.file, new_size)?,
            Mapping::Unallocated | Mapping::Zero { .. }
        ) || img.backing.is_some()
        {
            drop(meta);
            crate::write_zeroes_by_writing(img, new_size, n)?;
        }
    }
    let _g = img.gate.write().unwrap_or_else(|p| p.into_inner());
    let mut meta = img.lock();
    let f = &img.file;
    let mut guest = tail_end;
    while guest < old {
        let m = meta.lookup(f, guest)?;
        meta.release(m);
        if meta.l2_entry(f, guest)? != 0 {
            meta.set_l2_entry(f, guest, 0)?;
        }
        guest += cs;
    }
    // L2 tables wholly past the new end go too.
    let per_l1 = cs * (cs / 8);
    let first_free_l1 = tail_end.div_ceil(per_l1) as usize;
    for i in first_free_l1..meta.l1.len() {
        let e = meta.l1[i];
        let off = e & table::OFFSET_MASK;
        if off != 0 {
            meta.l2.remove(i as u64);
            meta.rc.free_later(off >> img.cluster_bits);
            meta.l1[i] = 0;
            meta.l1_dirty = Some(match meta.l1_dirty {
                Some((a, b)) => (a.min(i), b.max(i + 1)),
                None => (i, i + 1),
            });
        }
    }
    meta.flush(f, true)
}

/// Moves the L1 table to a new, larger run of clusters.
fn grow_l1(img: &Qcow2Image, meta: &mut super::Meta, needed: u64) -> Result<(), DiskError> {
    let f = &img.file;
    let cs = img.cs();
    if needed * 8 > MAX_L1_BYTES {
        return Err(DiskError::qcow(
            f.path(),
            QcowError::MetadataLimit("L1 table over 32 MiB"),
        ));
    }
    // Everything the new table references must be on disk before it goes live.
    meta.flush(f, false)?;
    let clusters = (needed * 8).div_ceil(cs);
    let new_off = meta.rc.alloc_run(f, clusters)?;
    meta.flush(f, false)?;
    let mut l1 = meta.l1.clone();
    l1.resize(needed as usize, 0);
    let mut raw: Vec<u8> = l1.iter().flat_map(|e| e.to_be_bytes()).collect();
    raw.resize((clusters * cs) as usize, 0);
    f.write_at(&raw, new_off)?;
    f.sync_data()?;
    let mut hdr = [0u8; 12];
    hdr[..4].copy_from_slice(&(needed as u32).to_be_bytes());
    hdr[4..].copy_from_slice(&new_off.to_be_bytes());
    f.write_at(&hdr, 36)?;
    f.sync_data()?;
    let old_off = meta.header.l1_table_offset;
    let old_clusters = (meta.l1.len() as u64 * 8).div_ceil(cs);
    if meta.header.l1_size > 0 || old_off != 0 {
        for c in 0..old_clusters {
            meta.rc.free_later(old_off / cs + c);
        }
    }
    meta.header.l1_table_offset = new_off;
    meta.header.l1_size = needed as u32;
    meta.l1 = l1;
    meta.l1_dirty = None;
    Ok(())
}
