//! `-machine microvm`: no PCI, virtio over virtio-mmio windows from
//! 0xfeb00000 (as QEMU's microvm), hardware-reduced ACPI with the sleep
//! control register for power-off.

use super::{MachineModel, MmioSlots, PowerRegs};
use crate::config::MachineKind;

/// virtio-mmio windows, 512 bytes each from here, as on QEMU's microvm.
pub const VIRTIO_MMIO_BASE: u64 = 0xfeb0_0000;
/// IOAPIC pins for virtio-mmio devices: everything the legacy devices and
/// the RTC's conventional IRQ 8 leave free.
pub const VIRTIO_GSIS: [u32; 16] = [5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21];

pub static MODEL: MachineModel = MachineModel {
    kind: MachineKind::Microvm,
    name: "microvm",
    pci: None,
    power: PowerRegs::SleepControl,
    mmio: Some(MmioSlots {
        base: VIRTIO_MMIO_BASE,
        gsis: &VIRTIO_GSIS,
    }),
    acpi_default: true,
    pci_device_slots: 0,
    ide_buses: 0,
    ide_units: 0,
    ahci: false,
    ide_missing: "",
    default_ide: false,
};
