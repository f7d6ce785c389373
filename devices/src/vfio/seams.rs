//! What the VFIO model needs from the hypervisor beyond the PCI seams: the
//! irqfds themselves (an assigned device signals them without passing
//! through this process) and guest memory slots backed by device memory.
//!
//! The VMM implements these over KVM (irqfds on MSI routes from its GSI
//! allocator, an irqfd with a resample fd per INTx pin, user memory
//! regions); `fake` has recording versions.

use std::io;
use std::sync::Arc;

use vm_memory::MmapRegion;
use vmm_sys_util::eventfd::EventFd;

use crate::pci::MsiVectors;

/// MSI or MSI-X vectors whose irqfds a device fires itself. `route` (from
/// `MsiVectors`) keeps each vector's GSI pointed at the guest's message;
/// `trigger` is for the model replaying a vector that was pending.
pub trait MsiIrqfds: MsiVectors {
    /// The irqfd of vector `v`.
    fn irqfd(&self, v: u16) -> io::Result<&EventFd>;
}

/// A level-triggered INTx pin as a pair of eventfds: the device signals
/// `trigger`; KVM signals `resample` at the guest's EOI, which must unmask
/// the device's INTx.
pub trait IntxIrqfds: Send + Sync {
    fn trigger(&self) -> &EventFd;
    fn resample(&self) -> &EventFd;
}

/// Guest memory slots over host mappings (a BAR's mappable areas).
pub trait MemSlots: Send + Sync {
    /// Make `host` visible to the guest at `gpa`; returns the slot for
    /// `unmap`. The implementation keeps `host` alive while mapped.
    fn map(&self, gpa: u64, host: &Arc<MmapRegion>) -> io::Result<u32>;
    fn unmap(&self, slot: u32) -> io::Result<()>;
}

/// Where the model gets MSI and MSI-X vectors once it knows how many the
/// device has (the VMM: a GSI and an irqfd per vector from its allocator).
pub trait MsiAllocator {
    fn msi_irqfds(&self, count: u16) -> io::Result<Arc<dyn MsiIrqfds>>;
}
