//! `-machine pc`: i440FX host bridge at 00:00.0, PIIX3 ISA bridge at
//! 00:01.0, PCI configuration mechanism #1, PM1 blocks for ACPI power-off
//! and 0xCF9 for reset.

use casemate_devices::pci::PlainFunction;

use super::{MachineModel, PciHost, PowerRegs};
use crate::config::MachineKind;

pub static MODEL: MachineModel = MachineModel {
    kind: MachineKind::Pc,
    name: "pc",
    pci: Some(PciHost {
        host_bridge: PlainFunction::i440fx,
        isa_bridge: piix3,
        isa_slot: 1,
        ecam: false,
    }),
    power: PowerRegs::Pm1,
    mmio: None,
    acpi_default: true,
    // Devices take slots 2 to 31.
    pci_device_slots: 30,
    ide_buses: 2,
    ide_units: 2,
    ahci: false,
    ide_missing: "",
    default_ide: true,
};

/// PIIX3 is multi-function: its IDE controller is 00:01.1.
fn piix3() -> PlainFunction {
    PlainFunction::piix3().multifunction()
}
