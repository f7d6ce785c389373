//! Refcounts: the refcount table, a bounded cache of refcount blocks, cluster
//! allocation (first free cluster, growing blocks and the table in place) and
//! frees deferred until the L2 update that drops the reference is on disk, so
//! a crash can leak a cluster but never hand out one still referenced.

use std::collections::HashMap;

use super::header::MAX_REFTABLE_BYTES;
use super::table::{Bounds, OFFSET_MASK};
use super::QcowError;
use crate::error::DiskError;
use crate::io::ImageFile;

/// Clean blocks beyond this many are dropped from the cache.
const MAX_CACHED_BLOCKS: usize = 1024;
/// Host offsets are 56-bit in L2 entries.
const MAX_HOST_OFFSET: u64 = 1 << 56;

/// Reads entry `i` of a refcount block with `order` (bits = 1 << order).
pub fn get_entry(block: &[u8], i: u64, order: u32) -> u64 {
    let bits = 1u64 << order;
    if bits >= 8 {
        let n = (bits / 8) as usize;
        let at = i as usize * n;
        block[at..at + n]
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b))
    } else {
        let bit = i * bits;
        let byte = block[(bit / 8) as usize];
        (u64::from(byte) >> (bit % 8)) & ((1 << bits) - 1)
    }
}

fn set_entry(block: &mut [u8], i: u64, order: u32, val: u64) {
    let bits = 1u64 << order;
    if bits >= 8 {
        let n = (bits / 8) as usize;
        let at = i as usize * n;
        for (k, b) in block[at..at + n].iter_mut().enumerate() {
            *b = (val >> (8 * (n - 1 - k))) as u8;
        }
    } else {
        let bit = i * bits;
        let mask = ((1u64 << bits) - 1) as u8;
        let shift = (bit % 8) as u8;
        let byte = &mut block[(bit / 8) as usize];
        *byte = (*byte & !(mask << shift)) | (((val as u8) & mask) << shift);
    }
}

struct Block {
    data: Vec<u8>,
    dirty: bool,
}

pub struct Refcounts {
    order: u32,
    cluster_bits: u32,
    table: Vec<u64>,
    table_offset: u64,
    table_dirty: bool,
    blocks: HashMap<u64, Block>,
    free_hint: u64,
    pending_free: Vec<u64>,
    /// End of the file as far as metadata checks go: grows with allocations.
    pub file_end: u64,
}

impl Refcounts {
    pub fn new(
        order: u32,
        cluster_bits: u32,
        table: Vec<u64>,
        table_offset: u64,
        file_end: u64,
    ) -> Self {
        Refcounts {
            order,
            cluster_bits,
            table,
            table_offset,
            table_dirty: false,
            blocks: HashMap::new(),
            free_hint: 0,
            pending_free: Vec::new(),
            file_end,
        }
    }

    fn cs(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Refcount entries per block.
    pub fn per_block(&self) -> u64 {
        (self.cs() * 8) >> self.order
    }

    fn max_value(&self) -> u64 {
        if self.order == 6 {
            u64::MAX
        } else {
            (1u64 << (1u64 << self.order)) - 1
        }
    }

    fn bounds(&self) -> Bounds {
        Bounds {
            cluster_bits: self.cluster_bits,
            file_end: self.file_end,
        }
    }

    fn block_offset(&self, bi: u64) -> Result<Option<u64>, QcowError> {
        let Some(&e) = self.table.get(bi as usize) else {
            return Ok(None);
        };
        if e & 0x1ff != 0 {
            return Err(QcowError::ReservedBits {
                what: "refcount table",
                entry: e,
            });
        }
        let off = e & OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        self.bounds().check_cluster("refcount block", off)?;
        Ok(Some(off))
    }

    /// Loads block `bi` into the cache; `false` if it does not exist.
    fn load(&mut self, f: &ImageFile, bi: u64) -> Result<bool, DiskError> {
        if self.blocks.contains_key(&bi) {
            return Ok(true);
        }
        let off = match self.block_offset(bi) {
            Ok(Some(o)) => o,
            Ok(None) => return Ok(false),
            Err(e) => return Err(DiskError::qcow(f.path(), e)),
        };
        if self.blocks.len() >= MAX_CACHED_BLOCKS {
            self.blocks.retain(|_, b| b.dirty);
        }
        let mut data = vec![0u8; self.cs() as usize];
        f.read_at(&mut data, off)?;
        self.blocks.insert(bi, Block { data, dirty: false });
        Ok(true)
    }

    pub fn get(&mut self, f: &ImageFile, idx: u64) -> Result<u64, DiskError> {
        let epb = self.per_block();
        let bi = idx / epb;
        if !self.load(f, bi)? {
            return Ok(0);
        }
        let b = &self.blocks[&bi];
        Ok(get_entry(&b.data, idx % epb, self.order))
    }

    /// Sets a refcount; the block must already exist (see `ensure_block`).
    fn set(&mut self, f: &ImageFile, idx: u64, val: u64) -> Result<(), DiskError> {
        let epb = self.per_block();
        let bi = idx / epb;
        if val > self.max_value() {
            let e = QcowError::RefcountOverflow {
                cluster: idx,
                bits: 1 << self.order,
            };
            return Err(DiskError::qcow(f.path(), e));
        }
        self.ensure_block(f, bi)?;
        let order = self.order;
        if let Some(b) = self.blocks.get_mut(&bi) {
            set_entry(&mut b.data, idx % epb, order, val);
            b.dirty = true;
        }
        Ok(())
    }

    /// Makes block `bi` exist. A new block goes in the first cluster it
    /// covers (free, since no block counted it) and counts itself.
    fn ensure_block(&mut self, f: &ImageFile, bi: u64) -> Result<(), DiskError> {
        if self.load(f, bi)? {
            return Ok(());
        }
        if bi as usize >= self.table.len() {
            return self.grow_table(f, bi);
        }
        let epb = self.per_block();
        let base = bi * epb;
        self.check_host(f, base)?;
        let mut data = vec![0u8; self.cs() as usize];
        set_entry(&mut data, 0, self.order, 1);
        self.blocks.insert(bi, Block { data, dirty: true });
        self.table[bi as usize] = base * self.cs();
        self.table_dirty = true;
        self.file_end = self.file_end.max((base + 1) * self.cs());
        Ok(())
    }

    fn check_host(&self, f: &ImageFile, cluster: u64) -> Result<(), DiskError> {
        if cluster.saturating_add(1).saturating_mul(self.cs()) > MAX_HOST_OFFSET {
            let e = QcowError::MetadataLimit("host offset beyond 2^56");
            return Err(DiskError::qcow(f.path(), e));
        }
        Ok(())
    }

    /// Grows the table so that it covers block `bi`: block `bi` goes to its
    /// first cluster and the new table right after it, all counted by block
    /// `bi`. Written and made live (header updated) at once, then the old
    /// table is freed.
    fn grow_table(&mut self, f: &ImageFile, bi: u64) -> Result<(), DiskError> {
        let cs = self.cs();
        let epb = self.per_block();
        let entries = (bi + 1).max(self.table.len() as u64 * 2);
        let n = (entries * 8).div_ceil(cs);
        if n * cs > MAX_REFTABLE_BYTES || n + 1 > epb {
            let e = QcowError::MetadataLimit("refcount table would exceed its maximum size");
            return Err(DiskError::qcow(f.path(), e));
        }
        let base = bi * epb;
        self.check_host(f, base + n)?;
        let mut data = vec![0u8; cs as usize];
        for i in 0..=n {
            set_entry(&mut data, i, self.order, 1);
        }
        self.blocks.insert(bi, Block { data, dirty: true });
        let old_off = self.table_offset;
        let old_clusters = (self.table.len() as u64 * 8).div_ceil(cs);
        self.table.resize((n * cs / 8) as usize, 0);
        self.table[bi as usize] = base * cs;
        self.table_offset = (base + 1) * cs;
        self.file_end = self.file_end.max((base + 1 + n) * cs);
        self.table_dirty = true;
        self.write_dirty(f)?;
        f.sync_data()?;
        let mut hdr = [0u8; 12];
        hdr[..8].copy_from_slice(&self.table_offset.to_be_bytes());
        hdr[8..].copy_from_slice(&(n as u32).to_be_bytes());
        f.write_at(&hdr, 48)?;
        f.sync_data()?;
        for c in 0..old_clusters {
            self.pending_free.push(old_off / cs + c);
        }
        Ok(())
    }

    /// First cluster index >= `from` whose refcount is zero.
    fn find_free(&mut self, f: &ImageFile, from: u64) -> Result<u64, DiskError> {
        let epb = self.per_block();
        let mut idx = from;
        loop {
            self.check_host(f, idx)?;
            let bi = idx / epb;
            if !self.load(f, bi)? {
                return Ok(idx);
            }
            let order = self.order;
            let data = &self.blocks[&bi].data;
            for i in idx % epb..epb {
                if get_entry(data, i, order) == 0 {
                    return Ok(bi * epb + i);
                }
            }
            idx = (bi + 1) * epb;
        }
    }

    /// Allocates one cluster; returns its byte offset.
    pub fn alloc(&mut self, f: &ImageFile) -> Result<u64, DiskError> {
        self.alloc_run(f, 1)
    }

    /// Allocates `n` contiguous clusters; returns the first one's byte offset.
    pub fn alloc_run(&mut self, f: &ImageFile, n: u64) -> Result<u64, DiskError> {
        let epb = self.per_block();
        let mut from = self.free_hint;
        'search: loop {
            let start = self.find_free(f, from)?;
            for bi in start / epb..=(start + n - 1) / epb {
                if !self.load(f, bi)? {
                    // Creating the block takes a cluster: search again.
                    self.ensure_block(f, bi)?;
                    from = start;
                    continue 'search;
                }
            }
            for c in start..start + n {
                if self.get(f, c)? != 0 {
                    from = c + 1;
                    continue 'search;
                }
            }
            for c in start..start + n {
                self.set(f, c, 1)?;
            }
            if n == 1 || start == self.free_hint {
                self.free_hint = start + n;
            }
            self.file_end = self.file_end.max((start + n) * self.cs());
            return Ok(start * self.cs());
        }
    }

    /// Adds one reference to an allocated cluster (compressed streams that
    /// share a host cluster each hold one).
    pub fn incref(&mut self, f: &ImageFile, cluster: u64) -> Result<(), DiskError> {
        let v = self.get(f, cluster)?;
        self.set(f, cluster, v + 1)
    }

    /// Drops one reference to `cluster` after the next metadata flush.
    pub fn free_later(&mut self, cluster: u64) {
        self.pending_free.push(cluster);
    }

    pub fn has_pending_frees(&self) -> bool {
        !self.pending_free.is_empty()
    }

    /// Applies deferred frees (call only once the L2/L1 updates are durable).
    pub fn apply_pending(&mut self, f: &ImageFile) -> Result<(), DiskError> {
        for c in std::mem::take(&mut self.pending_free) {
            let v = self.get(f, c)?;
            if v == 0 {
                let e = QcowError::RefcountUnderflow { cluster: c };
                return Err(DiskError::qcow(f.path(), e));
            }
            self.set(f, c, v - 1)?;
            if v == 1 && c < self.free_hint {
                self.free_hint = c;
            }
        }
        Ok(())
    }

    /// Writes dirty blocks and the table (no sync).
    pub fn write_dirty(&mut self, f: &ImageFile) -> Result<(), DiskError> {
        for (&bi, b) in self.blocks.iter_mut() {
            if b.dirty {
                let off = self.table[bi as usize] & OFFSET_MASK;
                f.write_at(&b.data, off)?;
                b.dirty = false;
            }
        }
        if self.table_dirty {
            let bytes: Vec<u8> = self.table.iter().flat_map(|e| e.to_be_bytes()).collect();
            f.write_at(&bytes, self.table_offset)?;
            self.table_dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_of_every_width_round_trip() {
        for order in 0..=6 {
            let mut b = vec![0u8; 512];
            let max = if order == 6 {
                u64::MAX
            } else {
                (1u64 << (1 << order)) - 1
            };
            let n = (512 * 8) >> order;
            for i in 0..n {
                set_entry(&mut b, i, order, (i * 7) & max);
            }
            for i in 0..n {
                assert_eq!(
                    get_entry(&b, i, order),
                    (i * 7) & max,
                    "order {order} i {i}"
                );
            }
        }
    }
}
