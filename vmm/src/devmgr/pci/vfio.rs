//! Assigned devices on the PCI platform: a `VfioPciFunction` in the next
//! free slot, its memory BARs in the 32-bit window (as firmware would
//! place them), decoding and bus mastering on, INTA# on the slot's GSI,
//! and its memory slots following the BARs (`sync_slots`).
//!
//! I/O BARs get no address: the platform has no I/O window to allocate
//! from (virtio devices need none); such a BAR stays unassigned, which a
//! guest sees as firmware leaving it off.

use std::sync::{Arc, Mutex};

use casemate_devices::pci::config::{CMD_BUS_MASTER, CMD_IO, CMD_MEMORY};
use casemate_devices::pci::{BarKind, Bdf};
use casemate_devices::vfio::{
    DmaMapper, MsiAllocator, MsiIrqfds, VfioDeviceIo, VfioPciFunction, VfioPciParams,
};

use super::{PciPlatform, RootState};
use crate::arch::layout::pci_intx_gsi;
use crate::devmgr::{DevError, Hypervisor, Placement, Wiring};

/// The hypervisor's vectors, as the model asks for them.
struct HvMsi<'a>(&'a dyn Hypervisor);

impl MsiAllocator for HvMsi<'_> {
    fn msi_irqfds(&self, count: u16) -> std::io::Result<Arc<dyn MsiIrqfds>> {
        self.0
            .msi_irqfds(count)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

pub type SharedVfio = Arc<Mutex<VfioPciFunction>>;

fn lock(f: &SharedVfio) -> std::sync::MutexGuard<'_, VfioPciFunction> {
    f.lock().unwrap_or_else(|p| p.into_inner())
}

impl PciPlatform {
    /// Place an assigned device reached through `io` and `dma`.
    pub fn add_vfio(
        &mut self,
        w: &Wiring<'_>,
        name: String,
        io: Arc<dyn VfioDeviceIo>,
        dma: Arc<dyn DmaMapper>,
    ) -> Result<Placement, DevError> {
        let RootState::Building(_) = &self.root else {
            unreachable!("devices are added before finish()");
        };
        let slot = self.slots.take(&name)?;
        let gsi = pci_intx_gsi(slot, 0);
        let mut f = VfioPciFunction::new(VfioPciParams {
            name: name.clone(),
            io,
            dma,
            mem: w.mem,
            msi: &HvMsi(w.hv),
            intx: Some(w.hv.intx_irqfds(gsi)?),
            intx_line: gsi as u8,
            slots: w.hv.mem_slots(),
        })?;
        for (index, kind, size) in f.bar_specs() {
            if kind == BarKind::Io {
                log::warn!("{name}: I/O BAR {index} left unassigned (no I/O window)");
                continue;
            }
            let addr = self.mmio32.take(&name, size, size)?;
            f.place_bar(index, addr)?;
        }
        f.set_command(CMD_IO | CMD_MEMORY | CMD_BUS_MASTER)?;
        let f = Arc::new(Mutex::new(f));
        let RootState::Building(root) = &mut self.root else {
            unreachable!("devices are added before finish()");
        };
        root.add(slot, f.clone())?;
        let bdf = Bdf {
            bus: 0,
            dev: slot,
            func: 0,
        };
        self.vfio.push((bdf, f));
        Ok(Placement::Pci { bdf })
    }

    /// Map (or move) the memory slots of the assigned function at `bdf`,
    /// or of all of them. A failure leaves the area trapping: logged.
    pub fn sync_vfio_slots(&self, only: Option<Bdf>) {
        for (bdf, f) in &self.vfio {
            if only.is_some_and(|b| b != *bdf) {
                continue;
            }
            if let Err(e) = lock(f).sync_slots() {
                // The guest moves BARs: the first few failures say why.
                if self
                    .warned
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    < 8
                {
                    log::warn!("{bdf}: {e} (the area keeps trapping)");
                }
            }
        }
    }
}
