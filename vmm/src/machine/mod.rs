//! Machines as data: what `-machine microvm|pc|q35|isapc` means, as one
//! `MachineModel` value per type (one file each). Everything that differs
//! between machines (PCI host or none, chipset functions, power-off
//! registers, where virtio devices go and how many fit, ACPI defaults) is
//! a field here; the device manager, the table builders and the builder
//! read these fields and never test the machine type themselves.

mod isapc;
mod microvm;
mod pc;
mod q35;

use casemate_devices::pci::PlainFunction;

use crate::arch::acpi;
use crate::arch::layout::{pci_mmio64_start, RamLayout, PCI_ECAM, PCI_ECAM_SIZE, PCI_MMIO64_SIZE};
use crate::config::{MachineKind, Transport};

/// The PCI host of a machine with PCI.
#[derive(Debug, Clone, Copy)]
pub struct PciHost {
    pub host_bridge: fn() -> PlainFunction,
    pub isa_bridge: fn() -> PlainFunction,
    /// Where the ISA/LPC bridge sits (PIIX3 at 1, ICH9 LPC at 0x1f).
    pub isa_slot: u8,
    /// PCIe ECAM window with an MCFG table (q35).
    pub ecam: bool,
}

/// How the guest turns the machine off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerRegs {
    /// Hardware-reduced ACPI sleep control/status registers (microvm).
    SleepControl,
    /// PIIX4/ICH9-style PM1 event and control blocks (pc, q35).
    Pm1,
    /// None: the guest resets through the i8042 (isapc, as QEMU's).
    None,
}

/// virtio-mmio windows of a machine without PCI.
#[derive(Debug, Clone, Copy)]
pub struct MmioSlots {
    pub base: u64,
    /// IOAPIC pins for the windows, one each: the count is the limit.
    pub gsis: &'static [u32],
}

/// See the module doc.
#[derive(Debug, Clone, Copy)]
pub struct MachineModel {
    pub kind: MachineKind,
    pub name: &'static str,
    pub pci: Option<PciHost>,
    pub power: PowerRegs,
    pub mmio: Option<MmioSlots>,
    /// ACPI tables unless `acpi=off` (isapc has none, as on QEMU).
    pub acpi_default: bool,
    /// PCI slots on bus 0 left for devices after the host and ISA bridges.
    pub pci_device_slots: usize,
    /// IDE buses for `if=ide` drives and CD-ROMs (PIIX3 channels on pc,
    /// AHCI ports on q35, as QEMU's `ide.N`).
    pub ide_buses: u8,
    /// Units per bus: 2 on an IDE cable, 1 on a SATA port.
    pub ide_units: u8,
    /// The buses are AHCI ports (q35) rather than PIIX3 IDE channels.
    pub ahci: bool,
    /// Why there are none, appended to the refusal (empty: no reason).
    pub ide_missing: &'static str,
    /// A plain `-drive` is IDE here (QEMU's default interface on pc).
    pub default_ide: bool,
}

/// The model of `kind`.
pub fn model(kind: MachineKind) -> &'static MachineModel {
    match kind {
        MachineKind::Microvm => &microvm::MODEL,
        MachineKind::Pc => &pc::MODEL,
        MachineKind::Q35 => &q35::MODEL,
        MachineKind::Isapc => &isapc::MODEL,
    }
}

impl MachineModel {
    /// Where virtio devices go when the command line names no transport.
    pub fn virtio_transport(&self) -> Transport {
        if self.pci.is_some() {
            Transport::Pci
        } else {
            Transport::Mmio
        }
    }

    /// Whether a device on `t` can exist on this machine.
    pub fn has_transport(&self, t: Transport) -> bool {
        match t {
            Transport::Pci => self.pci.is_some(),
            Transport::Mmio => self.mmio.is_some(),
        }
    }

    /// Devices this machine has room for, all kinds together.
    pub fn device_limit(&self) -> usize {
        match (self.pci, self.mmio) {
            (Some(_), _) => self.pci_device_slots,
            (None, Some(m)) => m.gsis.len(),
            (None, None) => 0,
        }
    }

    /// The ECAM window, if the machine has one.
    pub fn ecam(&self) -> Option<(u64, u64)> {
        self.pci
            .filter(|p| p.ecam)
            .map(|_| (PCI_ECAM, PCI_ECAM_SIZE))
    }

    /// What the ACPI tables describe beyond CPUs and legacy devices.
    pub fn acpi_platform(&self, ram: &RamLayout) -> acpi::Platform {
        match self.pci {
            None => acpi::Platform::Microvm,
            Some(p) => {
                let start = pci_mmio64_start(ram);
                acpi::Platform::Pci {
                    ecam: p.ecam,
                    mmio64: (start, start + PCI_MMIO64_SIZE),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_machine_places_virtio_somewhere_and_has_room() {
        for k in [
            MachineKind::Microvm,
            MachineKind::Pc,
            MachineKind::Q35,
            MachineKind::Isapc,
        ] {
            let m = model(k);
            assert_eq!(m.kind, k);
            assert!(m.has_transport(m.virtio_transport()), "{}", m.name);
            assert!(m.device_limit() > 0, "{}", m.name);
        }
        assert!(model(MachineKind::Q35).ecam().is_some());
        assert!(model(MachineKind::Pc).ecam().is_none());
        assert!(!model(MachineKind::Isapc).has_transport(Transport::Pci));
    }
}
