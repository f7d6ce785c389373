//! `QcowError`: everything that can be wrong with a qcow2 image's structure or
//! that Casemate does not support. Parsing code returns these; `DiskError::Qcow`
//! adds the path. Messages say what is wrong; none carries an OS error.

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum QcowError {
    #[error("file too short for a qcow2 header ({len} bytes)")]
    ShortHeader { len: u64 },
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    #[error("unsupported qcow2 version {0}")]
    BadVersion(u32),
    #[error("cluster_bits {0} out of range 9..=21")]
    BadClusterBits(u32),
    #[error("header length {len} out of range (104..={max})")]
    BadHeaderLength { len: u32, max: u64 },
    #[error("refcount_order {0} out of range 0..=6")]
    BadRefcountOrder(u32),
    #[error("unsupported feature: {0}")]
    Unsupported(&'static str),
    #[error("unknown incompatible feature bits {0:#x}")]
    UnknownIncompatible(u64),
    #[error("virtual size {size} is larger than the maximum {max}")]
    SizeTooLarge { size: u64, max: u64 },
    #[error("L1 table has {entries} entries, more than the maximum {max}")]
    L1TooLarge { entries: u64, max: u64 },
    #[error("L1 table of {entries} entries is too small for virtual size {size}")]
    L1TooSmall { entries: u64, size: u64 },
    #[error("{what} offset {offset:#x} is not aligned to the cluster size")]
    Unaligned { what: &'static str, offset: u64 },
    #[error("{what} at {offset:#x} points into the image header")]
    InHeader { what: &'static str, offset: u64 },
    #[error("{what} at {offset:#x} (+{len}) extends past the end of the file ({file_len} bytes)")]
    PastEnd {
        what: &'static str,
        offset: u64,
        len: u64,
        file_len: u64,
    },
    #[error("refcount table of {clusters} clusters exceeds the maximum {max}")]
    RefTableTooLarge { clusters: u64, max: u64 },
    #[error("backing file name at {offset:#x} (+{len}) is invalid")]
    BadBackingName { offset: u64, len: u32 },
    #[error("header extension at {offset:#x} is truncated or overflows the header cluster")]
    BadExtension { offset: u64 },
    #[error("too many snapshots ({0})")]
    TooManySnapshots(u32),
    #[error("{what} entry {entry:#018x} has reserved bits set")]
    ReservedBits { what: &'static str, entry: u64 },
    #[error("compressed cluster at {offset:#x} does not decompress to a full cluster")]
    BadCompressed { offset: u64 },
    #[error("refcount of cluster {cluster} would overflow {bits}-bit refcounts")]
    RefcountOverflow { cluster: u64, bits: u32 },
    #[error("refcount of cluster {cluster} would drop below zero")]
    RefcountUnderflow { cluster: u64 },
    #[error("image would need more metadata than supported ({0})")]
    MetadataLimit(&'static str),
    #[error("image is marked {0}; open it read-only or repair it with qemu-img check -r all")]
    NeedsRepair(&'static str),
    #[error("writing images with internal snapshots is not supported")]
    HasSnapshots,
}
