//! `-machine isapc`: the pc machine without PCI or ACPI, as QEMU has it.
//! The guest finds its CPUs and interrupts in the MP table and resets
//! through the i8042 (use `-no-reboot` to end the VM that way). Casemate
//! adds what QEMU's isapc cannot have: virtio devices on virtio-mmio
//! windows, announced on the kernel command line (with the legacy PIC
//! there, IRQ n is GSI n).

use super::microvm::{VIRTIO_GSIS, VIRTIO_MMIO_BASE};
use super::{MachineModel, MmioSlots, PowerRegs};
use crate::config::MachineKind;

pub static MODEL: MachineModel = MachineModel {
    kind: MachineKind::Isapc,
    name: "isapc",
    pci: None,
    power: PowerRegs::None,
    mmio: Some(MmioSlots {
        base: VIRTIO_MMIO_BASE,
        gsis: &VIRTIO_GSIS,
    }),
    acpi_default: false,
    pci_device_slots: 0,
    ide_buses: 0,
    ide_units: 0,
    ahci: false,
    ide_missing: " (ISA IDE is not built)",
    default_ide: false,
};
