//! The qcow2 header (v2 and v3) and its extensions: parsing from the first
//! cluster with every field range-checked against the file length, and
//! serialising the v3 header that Casemate writes. Pure functions on bytes, so
//! the proptest suite can throw arbitrary input at them.

use super::QcowError;

pub const QCOW_MAGIC: u32 = 0x5146_49fb;
pub const MIN_CLUSTER_BITS: u32 = 9;
pub const MAX_CLUSTER_BITS: u32 = 21;
/// qemu's limits: 32 MiB of L1 table, 8 MiB of refcount table.
pub const MAX_L1_BYTES: u64 = 32 << 20;
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// qemu refuses more than this many internal snapshots.
pub const MAX_SNAPSHOTS: u32 = 65536;
/// Largest virtual size we accept: 2^61 bytes (qemu's ceiling is similar).
pub const MAX_VIRTUAL_SIZE: u64 = 1 << 61;
pub const V2_HEADER_LEN: usize = 72;
pub const V3_HEADER_LEN: u32 = 112;
pub const MAX_BACKING_NAME: u32 = 1023;

pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = 0x1f;
pub const COMPAT_LAZY_REFCOUNTS: u64 = 1 << 0;

pub const EXT_END: u32 = 0;
pub const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
pub const EXT_FEATURE_TABLE: u32 = 0x6803_f857;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub backing_file_offset: u64,
    pub backing_file_size: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub crypt_method: u32,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
    pub nb_snapshots: u32,
    pub snapshots_offset: u64,
    pub incompatible_features: u64,
    pub compatible_features: u64,
    pub autoclear_features: u64,
    pub refcount_order: u32,
    pub header_length: u32,
    pub compression_type: u8,
    /// Parsed from the header area; not part of the fixed fields.
    pub backing_file: Option<String>,
    pub backing_format: Option<String>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Entries in one L2 table.
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }

    /// L1 entries needed to map `size` bytes with this cluster size.
    pub fn l1_entries_for(cluster_bits: u32, size: u64) -> u64 {
        let per_l1 = 1u64 << (2 * cluster_bits - 3);
        size.div_ceil(per_l1)
    }

    /// Parses and validates the header from `buf` (the file's first bytes, at
    /// least one cluster or the whole file if shorter); `file_len` bounds every
    /// table the header points to.
    pub fn parse(buf: &[u8], file_len: u64) -> Result<Header, QcowError> {
        if buf.len() < V2_HEADER_LEN {
            return Err(QcowError::ShortHeader {
                len: buf.len() as u64,
            });
        }
        let magic = be32(buf, 0);
        if magic != QCOW_MAGIC {
            return Err(QcowError::BadMagic(magic));
        }
        let version = be32(buf, 4);
        if version != 2 && version != 3 {
            return Err(QcowError::BadVersion(version));
        }
        let cluster_bits = be32(buf, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(QcowError::BadClusterBits(cluster_bits));
        }
        let mut h = Header {
            version,
            backing_file_offset: be64(buf, 8),
            backing_file_size: be32(buf, 16),
            cluster_bits,
            size: be64(buf, 24),
            crypt_method: be32(buf, 32),
            l1_size: be32(buf, 36),
            l1_table_offset: be64(buf, 40),
            refcount_table_offset: be64(buf, 48),
            refcount_table_clusters: be32(buf, 56),
            nb_snapshots: be32(buf, 60),
            snapshots_offset: be64(buf, 64),
            incompatible_features: 0,
            compatible_features: 0,
            autoclear_features: 0,
            refcount_order: 4,
            header_length: V2_HEADER_LEN as u32,
            compression_type: 0,
            backing_file: None,
            backing_format: None,
        };
        if version == 3 {
            h.parse_v3(buf)?;
        }
        h.validate(file_len)?;
        h.parse_extensions(buf)?;
        h.parse_backing_name(buf)?;
        Ok(h)
    }

    fn parse_v3(&mut self, buf: &[u8]) -> Result<(), QcowError> {
        let cs = self.cluster_size();
        if buf.len() < 104 {
            return Err(QcowError::ShortHeader {
                len: buf.len() as u64,
            });
        }
        self.incompatible_features = be64(buf, 72);
        self.compatible_features = be64(buf, 80);
        self.autoclear_features = be64(buf, 88);
        self.refcount_order = be32(buf, 96);
        self.header_length = be32(buf, 100);
        if self.header_length < 104 || u64::from(self.header_length) > cs {
            return Err(QcowError::BadHeaderLength {
                len: self.header_length,
                max: cs,
            });
        }
        if self.header_length > 104 && buf.len() > 104 {
            self.compression_type = buf[104];
        }
        Ok(())
    }

    fn validate(&self, file_len: u64) -> Result<(), QcowError> {
        let cs = self.cluster_size();
        if self.refcount_order > 6 {
            return Err(QcowError::BadRefcountOrder(self.refcount_order));
        }
        if self.crypt_method != 0 {
            return Err(QcowError::Unsupported("encryption"));
        }
        let unknown = self.incompatible_features & !INCOMPAT_KNOWN;
        if unknown != 0 {
            return Err(QcowError::UnknownIncompatible(unknown));
        }
        if self.incompatible_features & INCOMPAT_DATA_FILE != 0 {
            return Err(QcowError::Unsupported("external data file"));
        }
        if self.incompatible_features & INCOMPAT_EXTL2 != 0 {
            return Err(QcowError::Unsupported("extended L2 entries (subclusters)"));
        }
        if self.compression_type != 0 {
            return Err(QcowError::Unsupported("compression type other than zlib"));
        }
        if self.size > MAX_VIRTUAL_SIZE {
            return Err(QcowError::SizeTooLarge {
                size: self.size,
                max: MAX_VIRTUAL_SIZE,
            });
        }
        let max_l1 = MAX_L1_BYTES / 8;
        let l1 = u64::from(self.l1_size);
        if l1 > max_l1 {
            return Err(QcowError::L1TooLarge {
                entries: l1,
                max: max_l1,
            });
        }
        if l1 < Self::l1_entries_for(self.cluster_bits, self.size) {
            return Err(QcowError::L1TooSmall {
                entries: l1,
                size: self.size,
            });
        }
        if l1 > 0 {
            check_table("L1 table", self.l1_table_offset, l1 * 8, cs, file_len)?;
        }
        let rt_bytes = u64::from(self.refcount_table_clusters) * cs;
        if self.refcount_table_clusters == 0 || rt_bytes > MAX_REFTABLE_BYTES.max(cs) {
            return Err(QcowError::RefTableTooLarge {
                clusters: u64::from(self.refcount_table_clusters),
                max: MAX_REFTABLE_BYTES.max(cs) / cs,
            });
        }
        check_table(
            "refcount table",
            self.refcount_table_offset,
            rt_bytes,
            cs,
            file_len,
        )?;
        if self.nb_snapshots > MAX_SNAPSHOTS {
            return Err(QcowError::TooManySnapshots(self.nb_snapshots));
        }
        if self.nb_snapshots > 0 {
            check_table("snapshot table", self.snapshots_offset, 1, cs, file_len)?;
        }
        Ok(())
    }

    fn parse_extensions(&mut self, buf: &[u8]) -> Result<(), QcowError> {
        let cs = self.cluster_size() as usize;
        // Extensions live in the first cluster, before the backing file name.
        let mut end = cs.min(buf.len());
        if self.backing_file_offset != 0 {
            end = end.min(usize::try_from(self.backing_file_offset).unwrap_or(usize::MAX));
        }
        let mut at = self.header_length as usize;
        loop {
            if at + 8 > end {
                // v2 images may have no end marker when nothing follows.
                return if self.version == 2 || at >= end {
                    Ok(())
                } else {
                    Err(QcowError::BadExtension { offset: at as u64 })
                };
            }
            let typ = be32(buf, at);
            let len = be32(buf, at + 4) as usize;
            if typ == EXT_END {
                return Ok(());
            }
            let data = at + 8;
            let next = data
                .checked_add(len.div_ceil(8) * 8)
                .filter(|&n| n <= end)
                .ok_or(QcowError::BadExtension { offset: at as u64 })?;
            if typ == EXT_BACKING_FORMAT {
                let s = std::str::from_utf8(&buf[data..data + len])
                    .map_err(|_| QcowError::BadExtension { offset: at as u64 })?;
                self.backing_format = Some(s.to_string());
            }
            at = next;
        }
    }

    fn parse_backing_name(&mut self, buf: &[u8]) -> Result<(), QcowError> {
        if self.backing_file_offset == 0 {
            return Ok(());
        }
        let bad = QcowError::BadBackingName {
            offset: self.backing_file_offset,
            len: self.backing_file_size,
        };
        if self.backing_file_size == 0 || self.backing_file_size > MAX_BACKING_NAME {
            return Err(bad);
        }
        let start = usize::try_from(self.backing_file_offset).map_err(|_| bad.clone())?;
        let end = start + self.backing_file_size as usize;
        if end as u64 > self.cluster_size() || end > buf.len() {
            return Err(bad);
        }
        let s = std::str::from_utf8(&buf[start..end]).map_err(|_| bad)?;
        self.backing_file = Some(s.to_string());
        Ok(())
    }

    /// Serialises a v3 header plus extensions and backing name into one
    /// cluster-sized buffer (Casemate always writes v3, 112-byte headers).
    pub fn to_cluster(&self) -> Result<Vec<u8>, QcowError> {
        let cs = self.cluster_size() as usize;
        let mut b = Vec::with_capacity(cs);
        b.extend_from_slice(&QCOW_MAGIC.to_be_bytes());
        b.extend_from_slice(&3u32.to_be_bytes());
        let name = self.backing_file.as_deref().unwrap_or("");
        b.extend_from_slice(&0u64.to_be_bytes()); // backing offset, patched below
        b.extend_from_slice(&(name.len() as u32).to_be_bytes());
        b.extend_from_slice(&self.cluster_bits.to_be_bytes());
        b.extend_from_slice(&self.size.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes()); // crypt_method
        b.extend_from_slice(&self.l1_size.to_be_bytes());
        b.extend_from_slice(&self.l1_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_offset.to_be_bytes());
        b.extend_from_slice(&self.refcount_table_clusters.to_be_bytes());
        b.extend_from_slice(&self.nb_snapshots.to_be_bytes());
        b.extend_from_slice(&self.snapshots_offset.to_be_bytes());
        b.extend_from_slice(&self.incompatible_features.to_be_bytes());
        b.extend_from_slice(&self.compatible_features.to_be_bytes());
        b.extend_from_slice(&self.autoclear_features.to_be_bytes());
        b.extend_from_slice(&self.refcount_order.to_be_bytes());
        b.extend_from_slice(&V3_HEADER_LEN.to_be_bytes());
        b.push(self.compression_type);
        b.resize(V3_HEADER_LEN as usize, 0);
        if let Some(fmt) = &self.backing_format {
            push_ext(&mut b, EXT_BACKING_FORMAT, fmt.as_bytes());
        }
        push_ext(&mut b, EXT_FEATURE_TABLE, &feature_table());
        b.extend_from_slice(&[0u8; 8]); // end of extensions
        if !name.is_empty() {
            if name.len() > MAX_BACKING_NAME as usize {
                return Err(QcowError::BadBackingName {
                    offset: b.len() as u64,
                    len: name.len() as u32,
                });
            }
            let off = b.len() as u64;
            b[8..16].copy_from_slice(&off.to_be_bytes());
            b.extend_from_slice(name.as_bytes());
        }
        if b.len() > cs {
            return Err(QcowError::MetadataLimit(
                "header does not fit in one cluster",
            ));
        }
        b.resize(cs, 0);
        Ok(b)
    }
}

/// A table must be cluster aligned, not in cluster 0 and inside the file.
pub fn check_table(
    what: &'static str,
    offset: u64,
    len: u64,
    cs: u64,
    file_len: u64,
) -> Result<(), QcowError> {
    // cs is a power of two.
    if offset & (cs - 1) != 0 {
        return Err(QcowError::Unaligned { what, offset });
    }
    if offset < cs {
        return Err(QcowError::InHeader { what, offset });
    }
    match offset.checked_add(len) {
        Some(end) if end <= file_len => Ok(()),
        _ => Err(QcowError::PastEnd {
            what,
            offset,
            len,
            file_len,
        }),
    }
}

fn push_ext(b: &mut Vec<u8>, typ: u32, data: &[u8]) {
    b.extend_from_slice(&typ.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b.resize(b.len().div_ceil(8) * 8, 0);
}

/// The feature name table qemu writes, so `qemu-img info` can name bits.
fn feature_table() -> Vec<u8> {
    const FEATURES: &[(u8, u8, &str)] = &[
        (0, 0, "dirty bit"),
        (0, 1, "corrupt bit"),
        (0, 2, "external data file"),
        (0, 3, "compression type"),
        (0, 4, "extended L2 entries"),
        (1, 0, "lazy refcounts"),
        (2, 0, "bitmaps"),
        (2, 1, "raw external data"),
    ];
    let mut t = Vec::new();
    for (typ, bit, name) in FEATURES {
        let mut e = [0u8; 48];
        e[0] = *typ;
        e[1] = *bit;
        e[2..2 + name.len()].copy_from_slice(name.as_bytes());
        t.extend_from_slice(&e);
    }
    t
}
