//! L1 and L2 table entries: decoding each 64-bit entry into what it maps
//! (unallocated, zero, a data cluster, a compressed run) with its offsets
//! checked, and encoding the entries Casemate writes. Pure functions on
//! integers; the caches that hold tables live in `l2cache.rs`.

use super::QcowError;

pub const COPIED: u64 = 1 << 63;
pub const COMPRESSED: u64 = 1 << 62;
pub const ZERO: u64 = 1;
/// Bits 9..=55 of a standard entry hold the host offset.
pub const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
const L2_STD_RESERVED: u64 = 0x3f00_0000_0000_01fe;

/// Where a guest cluster's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Not allocated here: read from the backing file, or zeros.
    Unallocated,
    /// Reads as zeros; `host` is a preallocated cluster kept for reuse, if any.
    Zero { host: Option<u64> },
    /// Stored uncompressed at `host`; `copied` means refcount is exactly 1.
    Data { host: u64, copied: bool },
    /// Deflate stream of `len` bytes at `host` (not cluster aligned).
    Compressed { host: u64, len: u64 },
}

/// Geometry needed to check offsets: cluster bits and the file's current end.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub cluster_bits: u32,
    pub file_end: u64,
}

impl Bounds {
    fn cs(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// A cluster-sized object at `offset` must be aligned, past the header
    /// cluster and inside the file.
    pub fn check_cluster(&self, what: &'static str, offset: u64) -> Result<(), QcowError> {
        super::header::check_table(what, offset, self.cs(), self.cs(), self.file_end)
    }
}

/// Decodes an L1 entry into the L2 table offset (`None`: no L2 table).
pub fn decode_l1(entry: u64, b: &Bounds) -> Result<Option<u64>, QcowError> {
    if entry & L1_RESERVED != 0 {
        return Err(QcowError::ReservedBits { what: "L1", entry });
    }
    let off = entry & OFFSET_MASK;
    if off == 0 {
        return Ok(None);
    }
    b.check_cluster("L2 table", off)?;
    Ok(Some(off))
}

/// Decodes an L2 entry of an image with `cluster_bits`.
pub fn decode_l2(entry: u64, b: &Bounds) -> Result<Mapping, QcowError> {
    if entry & COMPRESSED != 0 {
        return decode_compressed(entry, b);
    }
    if entry & L2_STD_RESERVED != 0 {
        return Err(QcowError::ReservedBits { what: "L2", entry });
    }
    let off = entry & OFFSET_MASK;
    if entry & ZERO != 0 {
        if off != 0 {
            b.check_cluster("preallocated zero cluster", off)?;
        }
        return Ok(Mapping::Zero {
            host: (off != 0).then_some(off),
        });
    }
    if off == 0 {
        return Ok(Mapping::Unallocated);
    }
    b.check_cluster("data cluster", off)?;
    Ok(Mapping::Data {
        host: off,
        copied: entry & COPIED != 0,
    })
}

fn decode_compressed(entry: u64, b: &Bounds) -> Result<Mapping, QcowError> {
    // Layout from the qcow2 spec: x = 62 - (cluster_bits - 8) offset bits,
    // then the count of additional 512-byte sectors.
    let x = 62 - (b.cluster_bits - 8);
    let host = entry & ((1u64 << x) - 1);
    let sectors = (entry & ((1u64 << 62) - 1)) >> x;
    let len = (sectors + 1) * 512 - (host & 511);
    if host < b.cs() {
        return Err(QcowError::InHeader {
            what: "compressed cluster",
            offset: host,
        });
    }
    // The stream may run into the last sector's padding past EOF; qemu allows
    // that, so only its first byte must be inside the file.
    if host >= b.file_end {
        return Err(QcowError::PastEnd {
            what: "compressed cluster",
            offset: host,
            len,
            file_len: b.file_end,
        });
    }
    Ok(Mapping::Compressed { host, len })
}

/// Host clusters touched by a compressed run (for refcounts).
pub fn compressed_clusters(
    host: u64,
    len: u64,
    cluster_bits: u32,
) -> std::ops::RangeInclusive<u64> {
    let first = host >> cluster_bits;
    let last = (host + len.max(1) - 1) >> cluster_bits;
    first..=last
}

pub fn encode_data(host: u64) -> u64 {
    host | COPIED
}

pub fn encode_l1(l2: u64) -> u64 {
    l2 | COPIED
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds {
        cluster_bits: 16,
        file_end: 1 << 30,
    };

    #[test]
    fn decodes_standard_entries() {
        assert_eq!(decode_l2(0, &B), Ok(Mapping::Unallocated));
        assert_eq!(decode_l2(1, &B), Ok(Mapping::Zero { host: None }));
        assert_eq!(
            decode_l2(encode_data(0x30000), &B),
            Ok(Mapping::Data {
                host: 0x30000,
                copied: true
            })
        );
    }

    #[test]
    fn rejects_hostile_entries() {
        assert!(matches!(
            decode_l2(0x10200, &B),
            Err(QcowError::Unaligned { .. })
        ));
        assert!(matches!(
            decode_l2(0x100, &B),
            Err(QcowError::ReservedBits { .. })
        ));
        assert!(matches!(decode_l2(COPIED, &B), Ok(Mapping::Unallocated)));
        assert!(matches!(
            decode_l2(encode_data(0), &B),
            Ok(Mapping::Unallocated)
        ));
        assert!(matches!(
            decode_l1(0x8000_0000_0001_0000 | 0x10000, &B),
            Ok(Some(_))
        ));
        assert!(matches!(
            decode_l2(1 << 40, &B),
            Err(QcowError::PastEnd { .. })
        ));
        assert!(matches!(
            decode_l1(2, &B),
            Err(QcowError::ReservedBits { .. })
        ));
    }

    #[test]
    fn compressed_layout() {
        // 64 KiB clusters: 54 offset bits; 2 extra sectors.
        let e = COMPRESSED | (2u64 << 54) | 0x20100;
        assert_eq!(
            decode_l2(e, &B),
            Ok(Mapping::Compressed {
                host: 0x20100,
                len: 3 * 512 - 0x100
            })
        );
        assert_eq!(compressed_clusters(0x2ff00, 0x200, 16), 2..=3);
    }
}
