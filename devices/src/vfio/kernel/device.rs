//! `KernelVfio`: `VfioDeviceIo` and `DmaMapper` over the kernel's VFIO
//! through `vfio-ioctls` (a container with the device's group; the iommufd
//! cdev path of that crate needs its KVM feature, which this crate does
//! not take, so `KernelPlan::cdev` is not used yet).
//!
//! Not exercised on this project's hosts (no VFIO in their kernels): the
//! ignored tier in tests/tests/vfio.rs runs it where a device bound to
//! vfio-pci exists. `vfio-ioctls` keeps one eventfd list per irq index and
//! replaces it whole, so this wrapper remembers each index's fds to turn
//! the model's per-vector updates into whole-list ones.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};

use vfio_ioctls::{VfioContainer, VfioDevice, VfioRegionInfoCap};
use vm_memory::{FileOffset, MmapRegion};
use vmm_sys_util::eventfd::EventFd;

use super::super::dma::{DmaMapper, DmaRegion};
use super::super::io::{
    DeviceInfo, IrqInfo, MmapArea, RegionInfo, VfioDeviceIo, DEVICE_FLAGS_PCI, DEVICE_FLAGS_RESET,
    MIN_PCI_REGIONS,
};

fn err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// See the module doc.
pub struct KernelVfio {
    container: Arc<VfioContainer>,
    dev: VfioDevice,
    /// Per irq index, the eventfd of each vector the device holds.
    fds: Mutex<HashMap<u32, Vec<Option<EventFd>>>>,
}

impl KernelVfio {
    /// Open the device at `sysfs_dev` (its directory under
    /// /sys/bus/pci/devices) in a new container.
    pub fn open(sysfs_dev: &Path) -> io::Result<Self> {
        let container = Arc::new(VfioContainer::new(None).map_err(err)?);
        let dev = VfioDevice::new(sysfs_dev, container.clone(), false).map_err(err)?;
        Ok(Self {
            container,
            dev,
            fds: Mutex::new(HashMap::new()),
        })
    }
}

impl VfioDeviceIo for KernelVfio {
    fn device_info(&self) -> io::Result<DeviceInfo> {
        // vfio-ioctls opens only PCI devices through a group here and
        // resets only where the device allows it.
        Ok(DeviceInfo {
            flags: DEVICE_FLAGS_PCI | DEVICE_FLAGS_RESET,
            num_regions: MIN_PCI_REGIONS + 1,
            num_irqs: 5,
        })
    }

    fn region_info(&self, index: u32) -> io::Result<RegionInfo> {
        let mut areas = Vec::new();
        for c in self.dev.get_region_caps(index) {
            if let VfioRegionInfoCap::SparseMmap(s) = c {
                areas.extend(s.areas.iter().map(|a| MmapArea {
                    offset: a.offset,
                    size: a.size,
                }));
            }
        }
        Ok(RegionInfo {
            flags: self.dev.get_region_flags(index),
            size: self.dev.get_region_size(index),
            areas,
        })
    }

    fn region_read(&self, index: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        self.dev.region_read(index, data, offset);
        Ok(())
    }

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        self.dev.region_write(index, data, offset);
        Ok(())
    }

    fn region_mmap(&self, index: u32, area: MmapArea) -> io::Result<MmapRegion> {
        // SAFETY: the device fd stays open while `self.dev` lives, and it
        // is only borrowed here to duplicate it.
        let fd = unsafe { BorrowedFd::borrow_raw(self.dev.as_raw_fd()) };
        let file = File::from(fd.try_clone_to_owned()?);
        let at = self
            .dev
            .get_region_offset(index)
            .saturating_add(area.offset);
        let size = usize::try_from(area.size).map_err(err)?;
        MmapRegion::build(
            Some(FileOffset::new(file, at)),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
        )
        .map_err(err)
    }

    fn irq_info(&self, index: u32) -> io::Result<IrqInfo> {
        Ok(self
            .dev
            .get_irq_info(index)
            .map_or(IrqInfo::default(), |i| IrqInfo {
                flags: i.flags,
                count: i.count,
            }))
    }

    fn set_irq_eventfds(&self, index: u32, start: u32, fds: &[&EventFd]) -> io::Result<()> {
        let mut all = self.fds.lock().unwrap_or_else(|p| p.into_inner());
        let list = all.entry(index).or_default();
        let end = start as usize + fds.len();
        if list.len() < end {
            list.resize_with(end, || None);
        }
        for (i, f) in fds.iter().enumerate() {
            list[start as usize + i] = Some(f.try_clone()?);
        }
        let whole: Option<Vec<&EventFd>> = list.iter().map(Option::as_ref).collect();
        let whole = whole.ok_or_else(|| err("a vector below the ones given has no eventfd"))?;
        self.dev.enable_irq(index, whole).map_err(err)
    }

    fn disable_irqs(&self, index: u32) -> io::Result<()> {
        self.fds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&index);
        self.dev.disable_irq(index).map_err(err)
    }

    fn set_unmask_eventfd(&self, index: u32, fd: &EventFd) -> io::Result<()> {
        self.dev.set_irq_resample_fd(index, vec![fd]).map_err(err)
    }

    fn unmask(&self, index: u32) -> io::Result<()> {
        self.dev.unmask_irq(index).map_err(err)
    }

    fn reset(&self) -> io::Result<()> {
        self.dev.reset();
        Ok(())
    }
}

impl DmaMapper for KernelVfio {
    fn map(&self, r: &DmaRegion) -> io::Result<()> {
        let size = usize::try_from(r.size).map_err(err)?;
        // SAFETY: `host_addr..+size` is guest RAM mapped by the VMM for the
        // whole life of the VM, longer than this device keeps it mapped
        // (it is unmapped when the function is dropped).
        unsafe {
            self.container
                .vfio_dma_map(r.iova, size, r.host_addr as *mut u8)
        }
        .map_err(err)
    }

    fn unmap(&self, iova: u64, size: u64) -> io::Result<()> {
        let size = usize::try_from(size).map_err(err)?;
        self.container.vfio_dma_unmap(iova, size).map_err(err)
    }
}
