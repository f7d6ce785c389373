//! The PCI side of the pc and q35 machines: the root complex with its host
//! bridge and ISA/LPC bridge, one virtio-blk-pci function per drive, and
//! the windows, configuration ports and ECAM that route guest accesses.
//!
//! Casemate plays firmware here: every BAR gets an address in the 32-bit
//! window before the guest runs (64-bit BARs too, as SeaBIOS does when they
//! fit), decoding and bus mastering are on, and each function's Interrupt
//! Line holds the GSI its INTA# is routed to in the DSDT's `_PRT`.

use std::sync::{Arc, Mutex};

use casemate_devices::pci::{
    ConfigIo, Ecam, IoEvents, IoSpace, PciDevice, PciRoot, PciWindow, PlainFunction, CONFIG_IO_LEN,
};
use casemate_devices::virtio::pci::{
    msix_vectors_for, VirtioPciParams, VirtioPciTransport, VIRTIO_PCI_BAR_SIZE,
};
use casemate_devices::virtio::WorkerHost;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{block_device, DevError};
use crate::arch::layout::{
    pci_intx_gsi, pci_mmio64_start, RamLayout, PCI_ECAM, PCI_ECAM_SIZE, PCI_IO_END, PCI_IO_START,
    PCI_MMIO32_END, PCI_MMIO32_START, PCI_MMIO64_SIZE,
};
use crate::config::{MachineKind, VmConfig};
use crate::vstate::exit::Buses;
use crate::vstate::gsi::{GsiRouter, KvmMsiVectors};
use crate::vstate::intx::{KvmIntx, ResampleWorker};
use crate::vstate::ioevents::KvmIoEvents;
use crate::vstate::vm::Vm;
use crate::workers::Workers;

/// CONFIG_ADDRESS/CONFIG_DATA, plus the reset control register at 0xCF9.
const CONFIG_PORT: u64 = 0xcf8;
/// Where the ISA/LPC bridge sits: PIIX3 at 00:01.0, ICH9 LPC at 00:1f.0.
const PIIX3_SLOT: u8 = 1;
const ICH9_LPC_SLOT: u8 = 0x1f;
/// The first slot for devices given on the command line.
const FIRST_DEVICE_SLOT: u8 = 2;

/// Bump allocator for BARs in the 32-bit window.
struct BarSpace {
    next: u64,
}

impl BarSpace {
    fn take(&mut self, size: u64) -> Option<u64> {
        let at = self.next.next_multiple_of(size);
        let end = at.checked_add(size)?;
        (end <= PCI_MMIO32_END).then(|| {
            self.next = end;
            at
        })
    }
}

/// Build the PCI root for `config.machine` (pc or q35) with its drives, and
/// map its windows onto the buses.
pub fn add_pci(
    vm: &Vm,
    config: &VmConfig,
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    workers: &Arc<Workers>,
    buses: &mut Buses,
) -> Result<(), DevError> {
    let mut root = PciRoot::new();
    let q35 = config.machine == MachineKind::Q35;
    let (host, isa, isa_slot) = if q35 {
        (
            PlainFunction::q35_host(),
            PlainFunction::ich9_lpc(),
            ICH9_LPC_SLOT,
        )
    } else {
        (PlainFunction::i440fx(), PlainFunction::piix3(), PIIX3_SLOT)
    };
    root.add(0, Arc::new(Mutex::new(host)))?;
    root.add(isa_slot, Arc::new(Mutex::new(isa)))?;

    let router = Arc::new(GsiRouter::new(vm.fd.clone()));
    let ioevents: Arc<dyn IoEvents> = Arc::new(KvmIoEvents(vm.fd.clone()));
    let mut bars = BarSpace {
        next: PCI_MMIO32_START,
    };
    let mut intx_lines = Vec::new();
    let free_slots = (FIRST_DEVICE_SLOT..32).filter(|&s| s != isa_slot);
    for (i, (d, slot)) in config.drives.iter().zip(free_slots).enumerate() {
        let dev = block_device(i, d)?;
        let queues = usize::from(d.num_queues.max(1));
        let notify = (0..queues)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| DevError::EventFd {
                id: d.id.clone(),
                source,
            })?;
        let msix = Arc::new(KvmMsiVectors::new(
            router.clone(),
            &vm.fd,
            msix_vectors_for(queues),
        )?);
        let gsi = pci_intx_gsi(slot, 0);
        let intx = KvmIntx::new(&vm.fd, gsi)?;
        intx_lines.push(intx.clone());
        let bar_addr = bars
            .take(VIRTIO_PCI_BAR_SIZE)
            .ok_or_else(|| DevError::PciSpace { id: d.id.clone() })?;
        let host: Arc<dyn WorkerHost> = workers.clone();
        let t = VirtioPciTransport::new(VirtioPciParams {
            dev: Box::new(dev),
            mem: mem.clone(),
            notify,
            msix,
            intx,
            intx_line: gsi as u8,
            intx_pin: 1,
            ioevents: ioevents.clone(),
            host,
            bar_addr,
        })
        .map_err(|source| DevError::PciDevice {
            id: d.id.clone(),
            source,
        })?;
        let t: Arc<Mutex<dyn PciDevice>> = Arc::new(Mutex::new(t));
        root.add(slot, t)?;
    }
    if !intx_lines.is_empty() {
        workers
            .start(
                "intx".into(),
                Box::new(ResampleWorker { lines: intx_lines }),
            )
            .map_err(DevError::Thread)?;
    }

    let root = Arc::new(root);
    buses.pio.insert(
        "pci-config",
        CONFIG_PORT,
        CONFIG_IO_LEN,
        Arc::new(Mutex::new(ConfigIo::new(root.clone()))),
    )?;
    buses.pio.insert(
        "pci-io",
        PCI_IO_START,
        PCI_IO_END - PCI_IO_START,
        Arc::new(Mutex::new(PciWindow::new(
            root.clone(),
            IoSpace::Pio,
            PCI_IO_START,
        ))),
    )?;
    buses.mmio.insert(
        "pci-mmio32",
        PCI_MMIO32_START,
        PCI_MMIO32_END - PCI_MMIO32_START,
        Arc::new(Mutex::new(PciWindow::new(
            root.clone(),
            IoSpace::Mmio,
            PCI_MMIO32_START,
        ))),
    )?;
    let mmio64 = pci_mmio64_start(ram);
    buses.mmio.insert(
        "pci-mmio64",
        mmio64,
        PCI_MMIO64_SIZE,
        Arc::new(Mutex::new(PciWindow::new(
            root.clone(),
            IoSpace::Mmio,
            mmio64,
        ))),
    )?;
    if q35 {
        buses.mmio.insert(
            "pci-ecam",
            PCI_ECAM,
            PCI_ECAM_SIZE,
            Arc::new(Mutex::new(Ecam::new(root))),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_naturally_aligned_and_stay_in_the_window() {
        let mut s = BarSpace {
            next: PCI_MMIO32_START + 0x1000,
        };
        let a = s.take(0x8000).unwrap();
        assert_eq!(a % 0x8000, 0);
        assert!(a >= PCI_MMIO32_START + 0x1000);
        let b = s.take(0x8000).unwrap();
        assert_eq!(b, a + 0x8000);
        assert!(s.take(PCI_MMIO32_END).is_none());
    }
}
