//! Casemate device models.
//!
//! Owns the `Bus`/`BusDevice` dispatch contract, the legacy platform
//! devices (COM1 serial, i8042, CMOS RTC, ACPI sleep registers, sinks), the
//! PCI root complex with its configuration space and MSI-X models (`pci`),
//! and the virtio devices with their MMIO and PCI transports (`virtio`).
//! This crate never calls KVM: devices receive interrupts as trait objects
//! (`IrqLine`, `MsiVectors`, `IntxLine`), ask for ioeventfds through
//! `IoEvents`, and report platform changes as returned values
//! (`BusAction`), which the VMM applies. That keeps every device testable
//! on any host.

pub mod ata;
pub mod bus;
pub mod display;
pub mod irq;
pub mod legacy;
pub mod pci;
pub mod threads;
pub mod vfio;
pub mod virtio;

pub use bus::{Bus, BusAction, BusDevice, BusError, DeviceKey, PlatformRequest};
pub use irq::IrqLine;
