//! `Hypervisor`: what the device manager asks of KVM while it places
//! devices (interrupt lines, MSI vectors, INTx pins, ioeventfds), as a
//! trait so that its tests run with a fake and no /dev/kvm. The KVM
//! implementation is `vstate::platform::KvmHypervisor`.

use std::sync::Arc;

use casemate_devices::display::vga::FramebufferSlot;
use casemate_devices::pci::{IntxLine, IoEvents, MsiVectors};
use casemate_devices::vfio::{IntxIrqfds, MemSlots, MsiIrqfds};
use casemate_devices::IrqLine;

use super::DevError;

pub trait Hypervisor {
    /// An edge-triggered line on IOAPIC pin `gsi`.
    fn irq_line(&self, what: &'static str, gsi: u32) -> Result<Arc<dyn IrqLine>, DevError>;
    /// `count` MSI-X vectors, each with its own route.
    fn msi_vectors(&self, count: u16) -> Result<Arc<dyn MsiVectors>, DevError>;
    /// A level-triggered INTx line on IOAPIC pin `gsi`.
    fn intx(&self, gsi: u32) -> Result<Arc<dyn IntxLine>, DevError>;
    /// Registration of queue-notify ioeventfds.
    fn ioevents(&self) -> Arc<dyn IoEvents>;
    /// Registration of MMIO ranges whose writes KVM may queue
    /// (`vstate::coalesced`).
    fn coalesced_zones(&self) -> Arc<dyn casemate_devices::pci::CoalescedZones>;
    /// `count` MSI or MSI-X vectors whose irqfds an assigned device fires.
    fn msi_irqfds(&self, count: u16) -> Result<Arc<dyn MsiIrqfds>, DevError>;
    /// INTx pin `gsi` for an assigned device: trigger and resample fds.
    fn intx_irqfds(&self, gsi: u32) -> Result<Arc<dyn IntxIrqfds>, DevError>;
    /// Memory slots for assigned devices' mappable BAR areas.
    fn mem_slots(&self) -> Arc<dyn MemSlots>;
    /// A memory slot for a device's framebuffer of `size` bytes at host
    /// address `host_addr` (a process-lifetime mapping), with dirty
    /// logging; unmapped until placed.
    fn framebuffer_slot(
        &self,
        device: &str,
        host_addr: u64,
        size: u64,
    ) -> Result<Arc<dyn FramebufferSlot>, DevError> {
        let _ = (host_addr, size);
        Err(DevError::PciDevice {
            device: device.to_string(),
            source: std::io::Error::other("this hypervisor has no device memory slots"),
        })
    }
}
