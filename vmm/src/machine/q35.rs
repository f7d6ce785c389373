//! `-machine q35`: Q35 (MCH) host bridge at 00:00.0, ICH9 LPC bridge at
//! 00:1f.0, ECAM for bus 0 at 0xe0000000 with an MCFG table, PM1 blocks
//! for ACPI power-off and 0xCF9 for reset.

use casemate_devices::pci::PlainFunction;

use super::{MachineModel, PciHost, PowerRegs};
use crate::config::MachineKind;

pub static MODEL: MachineModel = MachineModel {
    kind: MachineKind::Q35,
    name: "q35",
    pci: Some(PciHost {
        host_bridge: PlainFunction::q35_host,
        isa_bridge: ich9_lpc,
        isa_slot: 0x1f,
        ecam: true,
    }),
    power: PowerRegs::Pm1,
    mmio: None,
    acpi_default: true,
    // Devices take slots 2 to 30 (31 is the LPC bridge).
    pci_device_slots: 29,
    ide_buses: 6,
    ide_units: 1,
    ahci: true,
    ide_missing: "",
    default_ide: true,
};

/// ICH9 is multi-function: its AHCI controller is 00:1f.2.
fn ich9_lpc() -> PlainFunction {
    PlainFunction::ich9_lpc().multifunction()
}
