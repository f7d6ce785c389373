//! KVM's side of an assigned device: an INTx pin as a bare irqfd with a
//! resample fd (the device's unmask takes the resample signal itself, so
//! no re-raise worker), and memory slots for a BAR's mappable areas.
//! MSI and MSI-X irqfds are `gsi::KvmMsiVectors`.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};

use casemate_devices::vfio::{IntxIrqfds, MemSlots};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::MmapRegion;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::vm::VmError;

pub struct KvmVfioIntx {
    irqfd: EventFd,
    resample: EventFd,
}

impl KvmVfioIntx {
    pub fn new(vm: &VmFd, gsi: u32) -> Result<Self, VmError> {
        let irqfd = EventFd::new(EFD_NONBLOCK).map_err(|e| VmError::EventFd("VFIO INTx", e))?;
        let resample = EventFd::new(EFD_NONBLOCK).map_err(|e| VmError::EventFd("VFIO INTx", e))?;
        vm.register_irqfd_with_resample(&irqfd, &resample, gsi)
            .map_err(|e| VmError::Kvm("register_irqfd_with_resample (VFIO)", e))?;
        Ok(Self { irqfd, resample })
    }
}

impl IntxIrqfds for KvmVfioIntx {
    fn trigger(&self) -> &EventFd {
        &self.irqfd
    }
    fn resample(&self) -> &EventFd {
        &self.resample
    }
}

/// Slots above the ones guest RAM takes (one per RAM region, a handful)
/// and below the framebuffer slots (`fbslot::FIRST_DEVICE_SLOT`).
const FIRST_SLOT: u32 = 32;

/// Memory slots over device mappings; each keeps its mapping alive.
pub struct KvmSlots {
    vm: Arc<VmFd>,
    used: Mutex<HashMap<u32, (u64, Arc<MmapRegion>)>>,
}

impl KvmSlots {
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self {
            vm,
            used: Mutex::new(HashMap::new()),
        }
    }

    fn set(&self, slot: u32, gpa: u64, size: u64, host: u64) -> io::Result<()> {
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host,
        };
        // SAFETY: a non-zero size maps `host`, a live mapping this struct
        // holds (in `used`) until the slot is removed; size 0 removes.
        unsafe { self.vm.set_user_memory_region(region) }
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}

impl MemSlots for KvmSlots {
    fn map(&self, gpa: u64, host: &Arc<MmapRegion>) -> io::Result<u32> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let slot = (FIRST_SLOT..super::fbslot::FIRST_DEVICE_SLOT)
            .find(|s| !used.contains_key(s))
            .ok_or_else(|| io::Error::other("no memory slot left"))?;
        self.set(slot, gpa, host.size() as u64, host.as_ptr() as u64)?;
        used.insert(slot, (gpa, host.clone()));
        Ok(slot)
    }

    fn unmap(&self, slot: u32) -> io::Result<()> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        let Some((gpa, _)) = used.get(&slot) else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        self.set(slot, *gpa, 0, 0)?;
        used.remove(&slot);
        Ok(())
    }
}
