//! The PCI side of machines with PCI: the root complex with the machine's
//! host and ISA/LPC bridges, virtio devices as virtio-pci functions, the
//! configuration mechanisms (0xCF8 ports, ECAM), and each function's BARs
//! as ranges on the buses pointing straight at it.
//!
//! Casemate plays firmware here: every BAR gets an address in the 32-bit
//! window before the guest runs, decoding and bus mastering are on, and
//! each function's Interrupt Line holds the GSI its INTA# is routed to in
//! the DSDT's `_PRT` and the MP table. When the guest moves a BAR, the
//! control thread calls `place_bars` and the function's ranges move in
//! one bus snapshot swap.

use std::sync::{Arc, Mutex};

use casemate_devices::display::vga::{Dispi, StdVga, VgaParams, MMIO_SIZE};
use casemate_devices::pci::{root, Bdf, ConfigIo, Ecam, IoSpace, PciRoot, CONFIG_IO_LEN};
use casemate_devices::virtio::common::VirtioLifecycle;
use casemate_devices::virtio::pci::{
    msix_vectors_for, VirtioPciParams, VirtioPciTransport, VIRTIO_PCI_BAR_SIZE,
};
use casemate_devices::virtio::VirtioDevice;
use casemate_devices::DeviceKey;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::alloc::{FreeList, Window};
use super::{DevError, Placement, Wiring};
use crate::arch::layout::{
    pci_intx_gsi, PCI_ECAM, PCI_ECAM_SIZE, PCI_MMIO32_END, PCI_MMIO32_START,
};
use crate::machine::PciHost;
use crate::vstate::exit::Buses;

mod vfio;

/// CONFIG_ADDRESS/CONFIG_DATA, plus the reset control register at 0xCF9.
const CONFIG_PORT: u64 = 0xcf8;
/// The first slot for devices given on the command line.
const FIRST_DEVICE_SLOT: u8 = 2;

/// The root while devices are being added, then shared with the buses.
enum RootState {
    Building(PciRoot),
    Running(Arc<PciRoot>),
}

pub struct PciPlatform {
    host: PciHost,
    root: RootState,
    mmio32: Window,
    slots: FreeList<u8>,
    /// BAR placement warnings logged so far.
    warned: std::sync::atomic::AtomicU32,
    /// Assigned functions, whose memory slots follow their BARs.
    vfio: Vec<(Bdf, vfio::SharedVfio)>,
}

impl PciPlatform {
    pub fn new(host: PciHost) -> Self {
        let mut r = PciRoot::new();
        // Slots 0 and isa_slot are free on a fresh root.
        let _ = r.add(0, Arc::new(Mutex::new((host.host_bridge)())));
        let _ = r.add(host.isa_slot, Arc::new(Mutex::new((host.isa_bridge)())));
        let slots = (FIRST_DEVICE_SLOT..root::SLOTS).filter(|&s| s != host.isa_slot);
        Self {
            host,
            root: RootState::Building(r),
            mmio32: Window::new(
                "32-bit PCI memory",
                PCI_MMIO32_START,
                PCI_MMIO32_END - PCI_MMIO32_START,
            ),
            slots: FreeList::new("PCI slot", slots),
            warned: std::sync::atomic::AtomicU32::new(0),
            vfio: Vec::new(),
        }
    }

    pub fn root(&self) -> Option<&Arc<PciRoot>> {
        match &self.root {
            RootState::Running(r) => Some(r),
            RootState::Building(_) => None,
        }
    }

    /// `dev` as a virtio-pci function in the next free slot.
    pub fn add(
        &mut self,
        w: &Wiring<'_>,
        key: DeviceKey,
        dev: Box<dyn VirtioDevice>,
    ) -> Result<(Placement, Arc<Mutex<dyn VirtioLifecycle>>), DevError> {
        let name = dev.name().to_string();
        let RootState::Building(root) = &mut self.root else {
            unreachable!("devices are added before finish()");
        };
        let slot = self.slots.take(&name)?;
        let queues = dev.queue_max_sizes().len();
        let notify = (0..queues)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| DevError::EventFd {
                device: name.clone(),
                source,
            })?;
        let gsi = pci_intx_gsi(slot, 0);
        let bar_addr = self
            .mmio32
            .take(&name, VIRTIO_PCI_BAR_SIZE, VIRTIO_PCI_BAR_SIZE)?;
        let t = VirtioPciTransport::new(VirtioPciParams {
            dev,
            mem: w.mem.clone(),
            notify,
            msix: w.hv.msi_vectors(msix_vectors_for(queues))?,
            intx: w.hv.intx(gsi)?,
            intx_line: gsi as u8,
            intx_pin: 1,
            ioevents: w.hv.ioevents(),
            key,
            bar_addr,
        })
        .map_err(|source| DevError::PciDevice {
            device: name.clone(),
            source,
        })?;
        let t = Arc::new(Mutex::new(t));
        root.add(slot, t.clone())?;
        let bdf = Bdf {
            bus: 0,
            dev: slot,
            func: 0,
        };
        Ok((Placement::Pci { bdf }, t))
    }

    /// A chipset function `func` in the ISA bridge's slot (PIIX3 IDE at
    /// 01.1).
    pub fn add_chipset_function(
        &mut self,
        func: u8,
        dev: casemate_devices::pci::SharedPciDevice,
    ) -> Result<Bdf, DevError> {
        let RootState::Building(root) = &mut self.root else {
            unreachable!("devices are added before finish()");
        };
        root.add_function(self.host.isa_slot, func, dev)?;
        Ok(Bdf {
            bus: 0,
            dev: self.host.isa_slot,
            func,
        })
    }

    /// `size` bytes of the 32-bit memory window for a chipset function's BAR.
    pub fn take_mem32(&mut self, name: &str, size: u64) -> Result<u64, DevError> {
        Ok(self.mmio32.take(name, size, size)?)
    }

    /// The ISA/LPC bridge's slot, where chipset functions go.
    pub fn isa_slot(&self) -> u8 {
        self.host.isa_slot
    }

    /// A display function (`StdVga`) in the next free slot: BAR0 the
    /// framebuffer (aligned to its size), BAR2 its registers.
    pub fn add_display(
        &mut self,
        name: &str,
        d: &super::display::PciDisplay,
        dispi: Arc<Mutex<Dispi>>,
    ) -> Result<(Bdf, Arc<Mutex<StdVga>>), DevError> {
        let RootState::Building(root) = &mut self.root else {
            unreachable!("devices are added before finish()");
        };
        let slot = self.slots.take(name)?;
        let size = d.vram.len() as u64;
        let bar0 = self.mmio32.take(name, size, size)?;
        let bar2 = self.mmio32.take(name, MMIO_SIZE, MMIO_SIZE)?;
        let dev = StdVga::new(VgaParams {
            name: name.to_string(),
            kind: d.kind,
            vram: d.vram.clone(),
            dispi,
            edid: d.edid,
            bar0,
            bar2,
        })
        .map_err(|e| DevError::PciDevice {
            device: name.to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let dev = Arc::new(Mutex::new(dev));
        root.add(slot, dev.clone())?;
        let bdf = Bdf {
            bus: 0,
            dev: slot,
            func: 0,
        };
        Ok((bdf, dev))
    }

    /// Map the configuration mechanisms and every function's BARs.
    pub fn finish(&mut self, buses: &Buses) -> Result<(), DevError> {
        let root = match std::mem::replace(&mut self.root, RootState::Building(PciRoot::new())) {
            RootState::Building(r) => Arc::new(r),
            RootState::Running(r) => r,
        };
        self.root = RootState::Running(root.clone());
        buses.pio.insert(
            "pci-config",
            CONFIG_PORT,
            CONFIG_IO_LEN,
            Arc::new(Mutex::new(ConfigIo::new(root.clone()))),
        )?;
        if self.host.ecam {
            buses.mmio.insert(
                "pci-ecam",
                PCI_ECAM,
                PCI_ECAM_SIZE,
                Arc::new(Mutex::new(Ecam::new(root.clone()))),
            )?;
        }
        for (bdf, _) in root.functions() {
            self.place_bars(buses, bdf);
        }
        self.sync_vfio_slots(None);
        Ok(())
    }

    /// `bdf` decodes other ranges now: place it, then every other function
    /// again, so one whose BAR was refused while `bdf` sat on its range
    /// answers again once `bdf` has moved away (at most 256 functions, and
    /// guests move BARs rarely).
    pub fn bars_moved(&self, buses: &Buses, bdf: Bdf) {
        self.place_bars(buses, bdf);
        self.sync_vfio_slots(Some(bdf));
        let Some(root) = self.root() else {
            return;
        };
        for (other, _) in root.functions().into_iter().filter(|(b, _)| *b != bdf) {
            self.place_bars(buses, other);
        }
    }

    /// Put function `bdf`'s decoding BARs on the buses, replacing where
    /// they were. A BAR the guest moved onto another device's range does
    /// not answer (logged), as on hardware where the result is undefined.
    pub fn place_bars(&self, buses: &Buses, bdf: Bdf) {
        let Some(dev) = self.root().and_then(|r| r.function(bdf)).cloned() else {
            return;
        };
        let (mem, io) = root::bar_ranges(bdf, &dev);
        for (bus, ranges, space) in [
            (&buses.mmio, mem, IoSpace::Mmio),
            (&buses.pio, io, IoSpace::Pio),
        ] {
            for e in bus.set_owned(bdf, ranges) {
                // A guest moving BARs onto each other in a loop must not
                // flood the log: the first few say what happened.
                if self
                    .warned
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    < 8
                {
                    log::warn!("{bdf}: {space:?} BAR not mapped: {e}");
                }
            }
        }
        log::debug!("{bdf}: BARs placed");
    }
}
