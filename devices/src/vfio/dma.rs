//! `DmaMapper`: the IOMMU side of an assigned device (map and unmap guest
//! RAM for the device's DMA), and mapping every region of guest RAM.
//!
//! Kept apart from `VfioDeviceIo` because the kernel backend maps through
//! the container or iommufd, not the device; a vfio-user client does both.
//! IOVA equals guest physical address: the guest sees no vIOMMU.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// One range of guest RAM as the device's DMA sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaRegion {
    /// The guest physical address, used as the IOVA.
    pub iova: u64,
    pub size: u64,
    /// Where this process maps it (the kernel backend's `vaddr`).
    pub host_addr: u64,
    /// The file behind it and the offset of `iova` in that file, when it
    /// has one (what a vfio-user server maps; anonymous RAM has none).
    pub file: Option<(RawFd, u64)>,
}

/// See the module doc. No default methods: a backend that cannot map says
/// so with an error.
pub trait DmaMapper: Send + Sync {
    fn map(&self, region: &DmaRegion) -> io::Result<()>;
    fn unmap(&self, iova: u64, size: u64) -> io::Result<()>;
}

/// Every region of `mem`, in address order, as DMA regions.
pub fn ram_regions(mem: &GuestMemoryMmap) -> Vec<DmaRegion> {
    mem.iter()
        .map(|r| DmaRegion {
            iova: r.start_addr().0,
            size: r.len(),
            host_addr: r.as_ptr() as u64,
            file: r.file_offset().map(|f| (f.file().as_raw_fd(), f.start())),
        })
        .collect()
}
