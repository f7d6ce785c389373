//! Creating a new qcow2 v3 (compat 1.1) image: header, refcount table,
//! refcount blocks and an empty L1 table laid out like qemu-img does, all
//! refcounts 1, then synced.

use std::path::Path;

use super::header::{Header, MAX_CLUSTER_BITS, MAX_L1_BYTES, MAX_VIRTUAL_SIZE, MIN_CLUSTER_BITS};
use super::QcowError;
use crate::error::{DiskError, IoError};
use crate::Format;

/// Parameters for a new qcow2 image.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub size: u64,
    pub cluster_size: u64,
    /// Stored as given: relative names are resolved against the image's folder.
    pub backing_file: Option<String>,
    pub backing_format: Option<Format>,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            size: 0,
            cluster_size: 65536,
            backing_file: None,
            backing_format: None,
        }
    }
}

const REFCOUNT_ORDER: u32 = 4;

/// Writes a new empty qcow2 image at `path`, replacing any file there that
/// nobody holds open (see `crate::create_file`).
pub fn create(path: &Path, o: &CreateOptions) -> Result<(), DiskError> {
    let f = crate::create_file(path)?;
    write_empty(&f, path, o)
}

/// Writes a new empty qcow2 image into `f`, an empty file open for writing
/// (a new file, or the memfd of a `-snapshot` overlay); `path` is what
/// messages call it.
pub(crate) fn write_empty(
    f: &std::fs::File,
    path: &Path,
    o: &CreateOptions,
) -> Result<(), DiskError> {
    let cs = o.cluster_size;
    let bits = cs.trailing_zeros();
    if !cs.is_power_of_two() || !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&bits) {
        return Err(DiskError::InvalidSize {
            size: cs,
            reason: "cluster size must be a power of two between 512 and 2M",
        });
    }
    if o.size > MAX_VIRTUAL_SIZE {
        return Err(DiskError::InvalidSize {
            size: o.size,
            reason: "larger than the qcow2 maximum",
        });
    }
    let l1_entries = Header::l1_entries_for(bits, o.size);
    if l1_entries * 8 > MAX_L1_BYTES {
        return Err(DiskError::InvalidSize {
            size: o.size,
            reason: "too large for this cluster size (L1 table over 32 MiB)",
        });
    }
    let l1_clusters = (l1_entries * 8).div_ceil(cs);
    let per_block = cs * 8 / (1 << REFCOUNT_ORDER);
    // Find the fixed point: blocks must count the header, table, blocks and L1.
    let (mut rt, mut rb) = (1u64, 1u64);
    loop {
        let total = 1 + rt + rb + l1_clusters;
        let nrb = total.div_ceil(per_block);
        let nrt = (nrb * 8).div_ceil(cs);
        if nrb == rb && nrt == rt {
            break;
        }
        (rb, rt) = (nrb, nrt);
    }
    let total = 1 + rt + rb + l1_clusters;
    let header = Header {
        version: 3,
        backing_file_offset: 0,
        backing_file_size: 0,
        cluster_bits: bits,
        size: o.size,
        crypt_method: 0,
        l1_size: l1_entries as u32,
        l1_table_offset: (1 + rt + rb) * cs,
        refcount_table_offset: cs,
        refcount_table_clusters: rt as u32,
        nb_snapshots: 0,
        snapshots_offset: 0,
        incompatible_features: 0,
        compatible_features: 0,
        autoclear_features: 0,
        refcount_order: REFCOUNT_ORDER,
        header_length: super::header::V3_HEADER_LEN,
        compression_type: 0,
        backing_file: o.backing_file.clone(),
        backing_format: o.backing_format.map(|f| f.name().to_string()),
    };
    let hdr = header
        .to_cluster()
        .map_err(|e: QcowError| DiskError::qcow(path, e))?;

    let mut table = vec![0u8; (rt * cs) as usize];
    for i in 0..rb {
        let off = (1 + rt + i) * cs;
        table[(i * 8) as usize..(i * 8 + 8) as usize].copy_from_slice(&off.to_be_bytes());
    }
    let mut blocks = vec![0u8; (rb * cs) as usize];
    for c in 0..total {
        // 16-bit big-endian refcount of 1.
        blocks[(c * 2 + 1) as usize] = 1;
    }

    let io = |action, e| IoError::new(action, path, e);
    use std::os::unix::fs::FileExt;
    f.write_all_at(&hdr, 0)
        .map_err(|e| io("write header of", e))?;
    f.write_all_at(&table, cs)
        .map_err(|e| io("write refcount table of", e))?;
    f.write_all_at(&blocks, (1 + rt) * cs)
        .map_err(|e| io("write refcount blocks of", e))?;
    f.set_len(total * cs)
        .map_err(|e| io("set the size of", e))?;
    f.sync_all().map_err(|e| io("sync", e))?;
    Ok(())
}
