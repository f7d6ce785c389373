//! `Meta`: the qcow2 metadata one image keeps behind its lock: header, L1
//! table, L2 cache and refcounts. It maps guest clusters, installs new L2
//! entries and flushes in crash-safe order: data sync, refcount increments,
//! sync, L2/L1 tables, sync, then the deferred frees.

use super::header::Header;
use super::l2cache::L2Cache;
use super::refcount::Refcounts;
use super::table::{self, Bounds, Mapping};
use crate::error::DiskError;
use crate::io::ImageFile;

pub struct Meta {
    pub header: Header,
    pub l1: Vec<u64>,
    /// Range of L1 indices changed since the last flush.
    pub l1_dirty: Option<(usize, usize)>,
    pub l2: L2Cache,
    pub rc: Refcounts,
    /// Next free byte in the host cluster that compressed streams are being
    /// packed into (0: none), as qemu's `qcow2_alloc_bytes` packs them.
    pub zcursor: u64,
}

impl Meta {
    pub fn cluster_bits(&self) -> u32 {
        self.header.cluster_bits
    }

    pub fn bounds(&self) -> Bounds {
        Bounds {
            cluster_bits: self.header.cluster_bits,
            file_end: self.rc.file_end,
        }
    }

    /// (L1 index, L2 index) of a guest offset.
    pub fn split(&self, guest: u64) -> (u64, usize) {
        let cb = self.cluster_bits();
        let l1i = guest >> (2 * cb - 3);
        let l2i = ((guest >> cb) & ((1 << (cb - 3)) - 1)) as usize;
        (l1i, l2i)
    }

    fn l2_offset(&self, f: &ImageFile, l1i: u64) -> Result<Option<u64>, DiskError> {
        let Some(&e) = self.l1.get(l1i as usize) else {
            return Ok(None);
        };
        table::decode_l1(e, &self.bounds()).map_err(|e| DiskError::qcow(f.path(), e))
    }

    /// Raw L2 entry for a guest offset (0 when no L2 table).
    pub fn l2_entry(&mut self, f: &ImageFile, guest: u64) -> Result<u64, DiskError> {
        let (l1i, l2i) = self.split(guest);
        let Some(off) = self.l2_offset(f, l1i)? else {
            return Ok(0);
        };
        Ok(self.l2.load(f, l1i, off)?.entries[l2i])
    }

    /// Where the guest cluster containing `guest` lives.
    pub fn lookup(&mut self, f: &ImageFile, guest: u64) -> Result<Mapping, DiskError> {
        let e = self.l2_entry(f, guest)?;
        table::decode_l2(e, &self.bounds()).map_err(|e| DiskError::qcow(f.path(), e))
    }

    /// Stores a raw L2 entry, allocating the L2 table if needed. A zero entry
    /// in a missing table is a no-op.
    pub fn set_l2_entry(&mut self, f: &ImageFile, guest: u64, entry: u64) -> Result<(), DiskError> {
        let (l1i, l2i) = self.split(guest);
        let off = match self.l2_offset(f, l1i)? {
            Some(off) => off,
            None if entry == 0 => return Ok(()),
            None => {
                if self.l2.full_of_dirty() {
                    self.flush(f, false)?;
                }
                let off = self.rc.alloc(f)?;
                self.l2.insert_new(l1i, off);
                self.l1[l1i as usize] = table::encode_l1(off);
                let i = l1i as usize;
                self.l1_dirty = Some(match self.l1_dirty {
                    Some((a, b)) => (a.min(i), b.max(i + 1)),
                    None => (i, i + 1),
                });
                off
            }
        };
        let t = self.l2.load(f, l1i, off)?;
        t.entries[l2i] = entry;
        t.dirty = true;
        Ok(())
    }

    /// Reserves `n` bytes (`n` < cluster size) for a compressed stream:
    /// after the previous stream when it fits in the same host cluster (one
    /// more reference to that cluster), else at the start of a new cluster.
    pub fn alloc_bytes(&mut self, f: &ImageFile, n: u64) -> Result<u64, DiskError> {
        let cs = 1u64 << self.cluster_bits();
        let used = self.zcursor % cs;
        if self.zcursor != 0 && used != 0 && used + n <= cs {
            let at = self.zcursor;
            self.rc.incref(f, at >> self.cluster_bits())?;
            self.zcursor += n;
            return Ok(at);
        }
        let host = self.rc.alloc(f)?;
        self.zcursor = host + n;
        Ok(host)
    }

    /// Schedules the host clusters behind a mapping to be freed.
    pub fn release(&mut self, m: Mapping) {
        let cb = self.cluster_bits();
        match m {
            Mapping::Data { host, .. } | Mapping::Zero { host: Some(host) } => {
                self.rc.free_later(host >> cb);
            }
            Mapping::Compressed { host, len } => {
                for c in table::compressed_clusters(host, len, cb) {
                    self.rc.free_later(c);
                }
            }
            Mapping::Unallocated | Mapping::Zero { host: None } => {}
        }
    }

    /// Crash-safe metadata write-back; `apply_frees` only when no data I/O
    /// can still be in flight to the clusters being freed.
    pub fn flush(&mut self, f: &ImageFile, apply_frees: bool) -> Result<(), DiskError> {
        // 1. Data first: nothing may point at a cluster whose data is not on disk.
        f.sync_data()?;
        // 2. Refcount increments before the tables that reference the clusters.
        self.rc.write_dirty(f)?;
        f.sync_data()?;
        // 3. L2 tables, then the L1 entries that reach them.
        self.l2.write_dirty(f)?;
        if let Some((a, b)) = self.l1_dirty.take() {
            f.sync_data()?;
            let raw: Vec<u8> = self.l1[a..b].iter().flat_map(|e| e.to_be_bytes()).collect();
            f.write_at(&raw, self.header.l1_table_offset + a as u64 * 8)?;
        }
        f.sync_data()?;
        // 4. Only now may dropped clusters lose their references.
        if apply_frees && self.rc.has_pending_frees() {
            self.rc.apply_pending(f)?;
            self.rc.write_dirty(f)?;
            f.sync_data()?;
        }
        Ok(())
    }
}
