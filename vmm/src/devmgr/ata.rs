//! The emulated ATA controller of machines that have one. On q35 the
//! ICH9 AHCI function at 00:1f.2 (BAR5 in the 32-bit window, one MSI
//! vector, INTA# on the slot's routed GSI) with six ports. On pc the PIIX3
//! IDE function at 00:01.1 with its bus-master BAR, and both channels at
//! their legacy ports and ISA interrupts (14 and 15, edge, through the
//! IOAPIC pins the MP table and MADT give ISA IRQs). Units come from the
//! drives `config::ata::ide_slots` placed. Both channels exist even when
//! empty, as on QEMU, so a guest probing them finds nobody rather than a
//! floating bus.

use std::sync::{Arc, Mutex};

use casemate_devices::ata::ahci::{self, Ahci};
use casemate_devices::ata::ide::{self, CommandPorts, ControlPort, SharedChannel};
use casemate_devices::ata::piix::PiixIde;
use casemate_devices::ata::{Channel, Media, Unit, UnitConfig};
use vm_memory::GuestMemoryMmap;

use super::{DevError, DeviceInfo, DeviceManager, Hypervisor, Placement};
use crate::arch::layout::pci_intx_gsi;
use crate::config::ata::IdeSlot;

/// Where the bus-master BAR starts: the first I/O address firmware hands
/// out on QEMU's pc (no other I/O BAR exists on Casemate's machines).
const BM_PORT: u16 = 0xc000;

impl DeviceManager {
    /// Place the AHCI controller with `units` on their ports.
    pub fn add_ahci(
        &mut self,
        hv: &dyn Hypervisor,
        mem: &GuestMemoryMmap,
        units: Vec<(IdeSlot, Unit)>,
    ) -> Result<(), DevError> {
        let mut ports: [Option<Unit>; ahci::PORTS] = Default::default();
        for (s, u) in units {
            if let Some(p) = ports.get_mut(usize::from(s.bus)) {
                *p = Some(u);
            }
        }
        let no_pci = || DevError::NoTransport {
            device: "ich9-ahci".into(),
            machine: self.machine.name,
            transport: "PCI",
        };
        let pci = self.pci.as_mut().ok_or_else(no_pci)?;
        let abar = pci.take_mem32("ich9-ahci", ahci::ABAR_LEN)?;
        let gsi = pci_intx_gsi(pci.isa_slot(), 0);
        let intx = hv.intx(gsi)?;
        let msi = hv.msi_vectors(1)?;
        let dev = Ahci::new(ports, mem.clone(), (intx, gsi as u8), msi, abar).map_err(|e| {
            DevError::PciDevice {
                device: "ich9-ahci".into(),
                source: std::io::Error::other(e),
            }
        })?;
        let dev = Arc::new(Mutex::new(dev));
        // Transfers move on a helper thread that completes them under
        // this same lock.
        {
            let mut d = dev
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            d.enable_offload(Arc::downgrade(&dev));
            d.enable_coalescing(hv.coalesced_zones());
        }
        // Its PxIS writes queue in KVM's ring, which the vCPUs then drain.
        self.coalesced_ring = true;
        let bdf = pci.add_chipset_function(2, dev)?;
        self.devices.push(DeviceInfo {
            key: self.devices.len() as u32,
            id: "ahci".into(),
            name: "ich9-ahci".into(),
            placement: Placement::Pci { bdf },
        });
        Ok(())
    }

    /// Place the IDE controller with `units` in their slots.
    pub fn add_ide(
        &mut self,
        hv: &dyn Hypervisor,
        mem: &GuestMemoryMmap,
        units: Vec<(IdeSlot, Unit)>,
    ) -> Result<(), DevError> {
        let mut buses: [[Option<Unit>; 2]; 2] = Default::default();
        for (s, u) in units {
            buses[usize::from(s.bus)][usize::from(s.unit)] = Some(u);
        }
        let [primary, secondary] = buses;
        let p = self.ide_channel("ide0", primary, ide::PRIMARY, hv, mem)?;
        let s = self.ide_channel("ide1", secondary, ide::SECONDARY, hv, mem)?;
        // The data port's writes (`rep outsw`) and the taskfile registers
        // (features, count, LBA, device: plain latches) may queue: nothing
        // acts on them until the command register is written or a
        // register is read, and both of those exit, applying the queued
        // writes first, in order. The command register and the control
        // block exit as before. A driver's command is then one exit for
        // its six to eleven taskfile writes, not one each.
        self.coalesced_pio.push((ide::PRIMARY.0, 7));
        self.coalesced_pio.push((ide::SECONDARY.0, 7));
        let piix = PiixIde::new([p, s], BM_PORT).map_err(|e| DevError::PciDevice {
            device: "piix3-ide".into(),
            source: std::io::Error::other(e),
        })?;
        let Some(pci) = self.pci.as_mut() else {
            return Err(DevError::NoTransport {
                device: "piix3-ide".into(),
                machine: self.machine.name,
                transport: "PCI",
            });
        };
        let bdf = pci.add_chipset_function(1, Arc::new(Mutex::new(piix)))?;
        self.devices.push(DeviceInfo {
            key: self.devices.len() as u32,
            id: "ide".into(),
            name: "piix3-ide".into(),
            placement: Placement::Pci { bdf },
        });
        Ok(())
    }

    fn ide_channel(
        &self,
        name: &'static str,
        units: [Option<Unit>; 2],
        (cmd, ctl, irq): (u64, u64, u32),
        hv: &dyn Hypervisor,
        mem: &GuestMemoryMmap,
    ) -> Result<SharedChannel, DevError> {
        let line = hv.irq_line(name, irq)?;
        let ch = Arc::new(Mutex::new(Channel::new(
            name.into(),
            units,
            line,
            mem.clone(),
        )));
        let pio = &self.buses.pio;
        pio.insert(
            name,
            cmd,
            ide::CMD_LEN,
            Arc::new(Mutex::new(CommandPorts(ch.clone()))),
        )?;
        pio.insert(
            &format!("{name}-ctl"),
            ctl,
            1,
            Arc::new(Mutex::new(ControlPort(ch.clone()))),
        )?;
        Ok(ch)
    }
}

/// The ATA units of this boot's drives, in their IDE slots.
pub fn ata_units(
    drives: &[crate::config::DriveConfig],
    disks: &[Arc<dyn casemate_disk::DiskImage>],
    machine: &crate::machine::MachineModel,
) -> Vec<(IdeSlot, Unit)> {
    // The config was validated, so placement cannot fail here; an error
    // would have been reported before anything was built.
    let slots = crate::config::ata::ide_slots(drives, machine).unwrap_or_default();
    slots
        .into_iter()
        .filter_map(|s| {
            let d = drives.get(s.drive)?;
            let disk = disks.get(s.drive)?.clone();
            let media = if d.attach.cdrom {
                Media::Cdrom(Some(disk))
            } else {
                Media::Disk(disk)
            };
            let unit = Unit::new(UnitConfig {
                media,
                serial: format!("QM{:05}", s.drive + 1),
                read_only: d.read_only,
            });
            Some((s, unit))
        })
        .collect()
}
