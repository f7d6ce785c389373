//! Mapping guest RAM: one vm-memory region per `RamLayout` range, anonymous
//! or backed by the right offset of the backend's file, shared or private.
//! vm-memory owns (and unmaps) every mapping; nothing here populates pages.

use std::fs::File;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use super::MemoryError;

/// How to map: shared or private, populated at mmap time or not.
#[derive(Debug, Clone, Copy)]
pub struct MapFlags {
    pub share: bool,
    pub hugetlb: bool,
    /// MAP_POPULATE (the prealloc method when MADV_POPULATE_WRITE is absent).
    pub populate: bool,
}

impl MapFlags {
    fn bits(self, anonymous: bool) -> i32 {
        let mut f = if self.share {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        if anonymous {
            f |= libc::MAP_ANONYMOUS;
        }
        // hugetlb mappings reserve their pages at mmap time: a short pool
        // fails here instead of SIGBUS later. Other RAM is lazily allocated
        // like QEMU's, so it does not count against overcommit up front.
        if !self.hugetlb {
            f |= libc::MAP_NORESERVE;
        }
        if self.populate {
            f |= libc::MAP_POPULATE;
        }
        f
    }
}

/// Map `ranges` (guest address, length) back to back from offset 0 of
/// `file`, or anonymously when `file` is None.
pub fn map(
    ranges: &[(u64, u64)],
    file: Option<&File>,
    flags: MapFlags,
) -> Result<GuestMemoryMmap, MemoryError> {
    let mut regions = Vec::with_capacity(ranges.len());
    let mut offset = 0u64;
    for &(gpa, len) in ranges {
        let size = usize::try_from(len).map_err(|_| MemoryError::TooLarge(len))?;
        let mut b = MmapRegionBuilder::new(size)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(flags.bits(file.is_none()))
            .with_hugetlbfs(flags.hugetlb);
        if let Some(f) = file {
            let dup = f.try_clone().map_err(|source| MemoryError::Map {
                gpa,
                size: len,
                why: source.to_string(),
            })?;
            b = b.with_file_offset(FileOffset::new(dup, offset));
        }
        let region = b.build().map_err(|e| MemoryError::Map {
            gpa,
            size: len,
            why: e.to_string(),
        })?;
        regions.push(
            GuestRegionMmap::new(region, GuestAddress(gpa))
                .ok_or(MemoryError::TooLarge(gpa.saturating_add(len)))?,
        );
        offset += len;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Layout(e.to_string()))
}
