//! `VfioDeviceIo`: the one seam between the VFIO PCI function model and
//! whatever carries VFIO's device operations (the kernel's vfio-pci through
//! ioctls, a vfio-user server over a socket, `FakeVfio` in tests).
//!
//! Owns the operation set and the plain data it returns (device, region and
//! irq info, sparse mmap areas). It does not own DMA (see `dma`), nor what
//! the model does with the answers. Every method is required: a backend that
//! cannot do something returns an error, which the model turns into a clear
//! `VfioError` naming the device and the operation.

use std::io;

use vm_memory::MmapRegion;
use vmm_sys_util::eventfd::EventFd;

/// VFIO's fixed region indexes for a PCI device (`VFIO_PCI_*_REGION_INDEX`).
pub const BAR0_REGION: u32 = 0;
pub const ROM_REGION: u32 = 6;
pub const CONFIG_REGION: u32 = 7;
/// A PCI device has at least the BARs, the ROM and configuration space.
pub const MIN_PCI_REGIONS: u32 = CONFIG_REGION + 1;

/// VFIO's fixed irq indexes for a PCI device (`VFIO_PCI_*_IRQ_INDEX`).
pub const INTX_IRQ: u32 = 0;
pub const MSI_IRQ: u32 = 1;
pub const MSIX_IRQ: u32 = 2;

/// `vfio_device_info.flags` bits the model looks at.
pub const DEVICE_FLAGS_RESET: u32 = 1 << 0;
pub const DEVICE_FLAGS_PCI: u32 = 1 << 1;

/// `vfio_region_info.flags` bits.
pub const REGION_READ: u32 = 1 << 0;
pub const REGION_WRITE: u32 = 1 << 1;
pub const REGION_MMAP: u32 = 1 << 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceInfo {
    pub flags: u32,
    pub num_regions: u32,
    pub num_irqs: u32,
}

/// A part of a region the backend can map into this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmapArea {
    pub offset: u64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegionInfo {
    pub flags: u32,
    pub size: u64,
    /// With `REGION_MMAP`: the mappable areas (VFIO's sparse mmap
    /// capability). Empty with `REGION_MMAP` means the whole region.
    pub areas: Vec<MmapArea>,
}

impl RegionInfo {
    /// The areas that may be mapped, resolved: none without `REGION_MMAP`,
    /// the whole region when no sparse list was given.
    pub fn mappable(&self) -> Vec<MmapArea> {
        if self.flags & REGION_MMAP == 0 {
            Vec::new()
        } else if self.areas.is_empty() {
            vec![MmapArea {
                offset: 0,
                size: self.size,
            }]
        } else {
            self.areas.clone()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IrqInfo {
    pub flags: u32,
    pub count: u32,
}

/// See the module doc. Offsets are relative to the region's start; `data`
/// is the access width (1, 2, 4 or 8 bytes from the model).
pub trait VfioDeviceIo: Send + Sync {
    fn device_info(&self) -> io::Result<DeviceInfo>;
    fn region_info(&self, index: u32) -> io::Result<RegionInfo>;
    fn region_read(&self, index: u32, offset: u64, data: &mut [u8]) -> io::Result<()>;
    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Map `area` of region `index` into this process (shared, read and
    /// write) so that it can back a guest memory slot.
    fn region_mmap(&self, index: u32, area: MmapArea) -> io::Result<MmapRegion>;
    fn irq_info(&self, index: u32) -> io::Result<IrqInfo>;
    /// Signal `fds[i]` for vector `start + i` of irq `index` (enabling the
    /// index if it was off).
    fn set_irq_eventfds(&self, index: u32, start: u32, fds: &[&EventFd]) -> io::Result<()>;
    /// Turn irq `index` off altogether.
    fn disable_irqs(&self, index: u32) -> io::Result<()>;
    /// Unmask irq `index` (a level-triggered INTx the device masked when
    /// it fired) each time `fd` is signalled: KVM's resample eventfd.
    fn set_unmask_eventfd(&self, index: u32, fd: &EventFd) -> io::Result<()>;
    /// Unmask irq `index` once, now.
    fn unmask(&self, index: u32) -> io::Result<()>;
    /// A function-level reset of the device.
    fn reset(&self) -> io::Result<()>;
}
