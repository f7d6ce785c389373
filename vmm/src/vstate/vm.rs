//! The KVM VM: opening /dev/kvm, guest memory slots, the in-kernel irqchip
//! and PIT, and irqfds for device interrupt lines.

use std::path::Path;
use std::sync::Arc;

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// KVM's real-mode TSS and identity page: three pages just below the BIOS
/// flash area, inside the MMIO hole and clear of the IOAPIC and LAPIC.
const KVM_TSS_ADDR: usize = 0xfffb_d000;
const KVM_IDENTITY_MAP_ADDR: u64 = 0xfffb_c000;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm (is KVM available and are you allowed to use it?)")]
    OpenKvm(#[source] kvm_ioctls::Error),
    #[error("/dev/kvm does not exist: this host has no KVM")]
    NoKvm,
    #[error("KVM {0}")]
    Kvm(&'static str, #[source] kvm_ioctls::Error),
    #[error("creating an eventfd for {0}")]
    EventFd(&'static str, #[source] std::io::Error),
    #[error("no {wanted} GSIs left for MSI routes (KVM allows 4096 routes)")]
    GsisExhausted { wanted: u16 },
}

pub struct Vm {
    /// Shared with the objects that change routing or ioeventfds while the
    /// guest runs (MSI routes, BAR moves).
    pub fd: Arc<VmFd>,
}

impl Vm {
    pub fn open_kvm() -> Result<Kvm, VmError> {
        if !Path::new("/dev/kvm").exists() {
            return Err(VmError::NoKvm);
        }
        Kvm::new().map_err(VmError::OpenKvm)
    }

    /// A fresh VM on the process's one KVM fd (each boot gets its own).
    pub fn new(kvm: &Kvm) -> Result<Self, VmError> {
        let fd = kvm.create_vm().map_err(|e| VmError::Kvm("create_vm", e))?;
        Ok(Self { fd: Arc::new(fd) })
    }

    /// One memory slot per guest RAM region. Done before the irqchip is
    /// created: on this host a slot added after it costs ~7 ms more.
    pub fn map_memory(&self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        for (slot, r) in mem.iter().enumerate() {
            let region = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: r.start_addr().0,
                memory_size: r.len(),
                userspace_addr: r.as_ptr() as u64,
            };
            // SAFETY: the region is a live mapping owned by `mem`, which the
            // caller keeps alive for as long as this VM runs.
            unsafe { self.fd.set_user_memory_region(region) }
                .map_err(|e| VmError::Kvm("set_user_memory_region", e))?;
        }
        Ok(())
    }

    /// PIC + IOAPIC + LAPICs and the PIT, all in the kernel.
    pub fn create_irqchip(&self) -> Result<(), VmError> {
        self.fd
            .set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
            .map_err(|e| VmError::Kvm("set_identity_map_address", e))?;
        self.fd
            .set_tss_address(KVM_TSS_ADDR)
            .map_err(|e| VmError::Kvm("set_tss_address", e))?;
        self.fd
            .create_irq_chip()
            .map_err(|e| VmError::Kvm("create_irq_chip", e))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd
            .create_pit2(pit)
            .map_err(|e| VmError::Kvm("create_pit2", e))
    }

    /// An eventfd that raises `gsi` when written.
    pub fn irqfd(&self, what: &'static str, gsi: u32) -> Result<EventFd, VmError> {
        let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| VmError::EventFd(what, e))?;
        self.fd
            .register_irqfd(&evt, gsi)
            .map_err(|e| VmError::Kvm("register_irqfd", e))?;
        Ok(evt)
    }
}

/// Host memory in bytes (0 if unknown), from sysinfo(2): a jailed VMM
/// without a pid namespace has no /proc to read /proc/meminfo from.
pub fn host_memory() -> u64 {
    // SAFETY: a zeroed sysinfo is valid; sysinfo(2) fills the struct we own.
    let info = unsafe {
        let mut i: libc::sysinfo = std::mem::zeroed();
        (libc::sysinfo(&mut i) == 0).then_some(i)
    };
    info.map_or(0, |i| {
        i.totalram.saturating_mul(u64::from(i.mem_unit.max(1)))
    })
}
