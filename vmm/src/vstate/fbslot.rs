//! `FramebufferSlot` over KVM: a device's framebuffer (VGA BAR0) as a
//! user memory slot with KVM_MEM_LOG_DIRTY_PAGES, moved when the guest
//! moves the BAR (from the control thread) and its dirty log read by the
//! refresh worker (KVM_GET_DIRTY_LOG, which also clears it).

use std::io;
use std::sync::{Arc, Mutex};

use casemate_devices::display::vga::FramebufferSlot;
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;

/// Slot numbers for device memory start here, clear of guest RAM's.
pub const FIRST_DEVICE_SLOT: u32 = 256;

pub struct KvmFbSlot {
    vm: Arc<VmFd>,
    slot: u32,
    host_addr: u64,
    size: u64,
    /// Where the slot is mapped now.
    gpa: Mutex<Option<u64>>,
}

impl KvmFbSlot {
    /// `size` bytes at `host_addr`, which must stay mapped as long as
    /// the VM lives (the framebuffer is a process-lifetime resource).
    pub fn new(vm: Arc<VmFd>, slot: u32, host_addr: u64, size: u64) -> Self {
        Self {
            vm,
            slot,
            host_addr,
            size,
            gpa: Mutex::new(None),
        }
    }

    fn set(&self, gpa: u64, size: u64) -> io::Result<()> {
        let region = kvm_userspace_memory_region {
            slot: self.slot,
            flags: if size == 0 {
                0
            } else {
                KVM_MEM_LOG_DIRTY_PAGES
            },
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: self.host_addr,
        };
        // SAFETY: `host_addr` is the framebuffer's live anonymous mapping
        // of `self.size` bytes, owned by the process's resources, which
        // outlive this VM; size 0 deletes the slot.
        unsafe { self.vm.set_user_memory_region(region) }
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}

impl FramebufferSlot for KvmFbSlot {
    fn place(&self, gpa: Option<u64>) -> io::Result<()> {
        let mut now = self.gpa.lock().unwrap_or_else(|p| p.into_inner());
        if *now == gpa {
            return Ok(());
        }
        // KVM moves a slot only by deleting and re-creating it.
        if let Some(old) = now.take() {
            self.set(old, 0)?;
        }
        if let Some(new) = gpa {
            self.set(new, self.size)?;
            *now = Some(new);
        }
        Ok(())
    }

    fn take_dirty(&self) -> io::Result<Option<Vec<u64>>> {
        // Held across the ioctl so the slot cannot move under it.
        let now = self.gpa.lock().unwrap_or_else(|p| p.into_inner());
        if now.is_none() {
            return Ok(None);
        }
        self.vm
            .get_dirty_log(self.slot, self.size as usize)
            .map(Some)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}
