//! A write-back cache of L2 tables keyed by L1 index, bounded in bytes. Dirty
//! tables are written only by the owner's metadata flush, after the data they
//! map is synced; clean ones are evicted when the cache is full.

use std::collections::HashMap;

use crate::error::DiskError;
use crate::io::ImageFile;

/// Bytes of L2 tables kept in memory (at least `MIN_TABLES` tables).
const CACHE_BYTES: u64 = 32 << 20;
const MIN_TABLES: usize = 16;

pub struct L2Table {
    pub offset: u64,
    pub entries: Vec<u64>,
    pub dirty: bool,
}

pub struct L2Cache {
    tables: HashMap<u64, L2Table>,
    max_tables: usize,
    cluster_size: u64,
}

impl L2Cache {
    pub fn new(cluster_size: u64) -> Self {
        L2Cache {
            tables: HashMap::new(),
            max_tables: ((CACHE_BYTES / cluster_size) as usize).max(MIN_TABLES),
            cluster_size,
        }
    }

    pub fn dirty_count(&self) -> usize {
        self.tables.values().filter(|t| t.dirty).count()
    }

    /// True when inserting another table needs dirty ones flushed first.
    pub fn full_of_dirty(&self) -> bool {
        self.tables.len() >= self.max_tables && self.dirty_count() * 2 >= self.max_tables
    }

    fn make_room(&mut self) {
        if self.tables.len() >= self.max_tables {
            self.tables.retain(|_, t| t.dirty);
        }
    }

    /// The table for `l1_index` stored at `offset`, read from the file on a miss.
    pub fn load(
        &mut self,
        f: &ImageFile,
        l1_index: u64,
        offset: u64,
    ) -> Result<&mut L2Table, DiskError> {
        if !self.tables.contains_key(&l1_index) {
            self.make_room();
            let mut raw = vec![0u8; self.cluster_size as usize];
            f.read_at(&mut raw, offset)?;
            let entries = raw
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect();
            self.tables.insert(
                l1_index,
                L2Table {
                    offset,
                    entries,
                    dirty: false,
                },
            );
        }
        self.tables
            .get_mut(&l1_index)
            .ok_or(DiskError::Unsupported {
                what: "L2 cache miss after insert",
                format: "qcow2",
            })
    }

    /// Inserts a freshly allocated, all-zero table.
    pub fn insert_new(&mut self, l1_index: u64, offset: u64) {
        self.make_room();
        let entries = vec![0u64; (self.cluster_size / 8) as usize];
        self.tables.insert(
            l1_index,
            L2Table {
                offset,
                entries,
                dirty: true,
            },
        );
    }

    /// Forgets a table (freed by shrink).
    pub fn remove(&mut self, l1_index: u64) {
        self.tables.remove(&l1_index);
    }

    /// Writes every dirty table (no sync).
    pub fn write_dirty(&mut self, f: &ImageFile) -> Result<(), DiskError> {
        for t in self.tables.values_mut().filter(|t| t.dirty) {
            let raw: Vec<u8> = t.entries.iter().flat_map(|e| e.to_be_bytes()).collect();
            f.write_at(&raw, t.offset)?;
            t.dirty = false;
        }
        Ok(())
    }
}
