//! The device manager: the one owner of the port and MMIO buses, every
//! allocator (`alloc`), the PCI root, and the registry of devices placed
//! this boot. Built per boot from the process's `Resources`; afterwards
//! only the control thread calls it (`handle`), for what vCPU writes
//! return as `PlatformRequest`s.
//!
//! A device kind reaches the guest through one path: `add_virtio` puts any
//! `VirtioDevice` on the transport the machine (or the command line)
//! chooses, allocating its window, interrupt and slot here. Legacy
//! chipset devices are `legacy`; the machine's differences come from its
//! `MachineModel`, never from tests on the machine type.

pub mod alloc;
pub mod ata;
mod console;
pub mod display;
mod hv;
pub mod kinds;
mod legacy;
mod pci;
pub mod stdout;
mod virtio_mmio;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use casemate_devices::pci::{Bdf, PciRoot};
use casemate_devices::virtio::common::VirtioLifecycle;
use casemate_devices::virtio::{VirtioDevice, WorkerHost};
use casemate_devices::{Bus, BusError, DeviceKey, PlatformRequest};
use casemate_disk::DiskError;
use vm_memory::GuestMemoryMmap;

pub use console::Console;
pub use virtio_mmio::virtio_mmio_cmdline;

use crate::arch::acpi::VirtioMmioSlot;
use crate::config::Transport;
use crate::machine::MachineModel;
use crate::vstate::exit::Buses;
use crate::vstate::vm::VmError;
use alloc::AllocError;
pub use hv::Hypervisor;

#[derive(Debug, thiserror::Error)]
pub enum DevError {
    #[error("cannot create serial output file {path}")]
    SerialFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    SerialLink(#[from] crate::qmp::serial_link::LinkError),
    #[error("wiring device interrupts")]
    Irq(#[from] VmError),
    #[error("placing a device on the bus")]
    Bus(#[from] BusError),
    /// The cause names the file and what failed.
    #[error("drive {id}")]
    Disk {
        id: String,
        path: PathBuf,
        #[source]
        source: DiskError,
    },
    #[error("{device}: creating its queue eventfds")]
    EventFd {
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error("placing a PCI device")]
    Pci(#[from] casemate_devices::pci::PciError),
    #[error(transparent)]
    Alloc(#[from] AllocError),
    #[error("{device}: machine {machine} has no {transport} transport")]
    NoTransport {
        device: String,
        machine: &'static str,
        transport: &'static str,
    },
    #[error("{device}: building its virtio-pci function")]
    PciDevice {
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error("placing an assigned device")]
    Vfio(#[from] casemate_devices::vfio::VfioError),
    #[error("{device}: registering a queue ioeventfd")]
    IoEvent {
        device: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where a placed device sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Mmio { base: u64, gsi: u32 },
    Pci { bdf: Bdf },
}

/// One registry entry: a typed handle to what was placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub key: DeviceKey,
    /// The id the user gave (drive id, device id).
    pub id: String,
    /// The device's name (`blk0`, `rng0`).
    pub name: String,
    pub placement: Placement,
}

/// Where the machine's power button is.
enum PowerButton {
    /// pc, q35: the PM1 fixed feature.
    Pm1(Arc<Mutex<casemate_devices::legacy::AcpiPm>>),
    /// microvm: the Generic Event Device.
    Ged(Arc<Mutex<casemate_devices::legacy::Ged>>),
}

/// See the module doc.
pub struct DeviceManager {
    pub buses: Arc<Buses>,
    machine: &'static MachineModel,
    pci: Option<pci::PciPlatform>,
    mmio: Option<virtio_mmio::MmioPlatform>,
    lifecycles: HashMap<DeviceKey, Arc<Mutex<dyn VirtioLifecycle>>>,
    devices: Vec<DeviceInfo>,
    /// Port ranges whose writes KVM may queue (`vstate::coalesced`).
    coalesced_pio: Vec<(u64, u32)>,
    /// A device registers coalesced MMIO zones of its own (AHCI).
    coalesced_ring: bool,
    /// The power button (QMP `system_powerdown`).
    power_button: Option<PowerButton>,
    /// COM1, for console input.
    serial: Option<Arc<Mutex<casemate_devices::legacy::Serial>>>,
    displays: Vec<display::PlacedDisplay>,
    /// The keyboard controller, for keys typed into the display.
    i8042: Option<Arc<Mutex<casemate_devices::legacy::I8042>>>,
}

/// What placing a virtio device needs from the boot being built.
pub struct Wiring<'a> {
    pub hv: &'a dyn Hypervisor,
    pub mem: &'a GuestMemoryMmap,
}

impl DeviceManager {
    /// Empty buses and the allocators of `machine`.
    pub fn new(machine: &'static MachineModel) -> Self {
        Self {
            buses: Arc::new(Buses {
                pio: Bus::new(),
                mmio: Bus::new(),
            }),
            machine,
            pci: machine.pci.map(pci::PciPlatform::new),
            mmio: machine.mmio.map(virtio_mmio::MmioPlatform::new),
            lifecycles: HashMap::new(),
            devices: Vec::new(),
            coalesced_pio: Vec::new(),
            coalesced_ring: false,
            power_button: None,
            serial: None,
            displays: Vec::new(),
            i8042: None,
        }
    }

    /// Port ranges whose writes may be queued by KVM and handed over at
    /// the next exit: write-only data streams (the IDE data ports).
    pub fn coalesced_pio(&self) -> &[(u64, u32)] {
        &self.coalesced_pio
    }

    /// Whether the vCPUs must map and drain KVM's coalesced ring.
    pub fn needs_coalesced_ring(&self) -> bool {
        self.coalesced_ring || !self.coalesced_pio.is_empty()
    }

    /// The devices placed so far, in order.
    pub fn devices(&self) -> &[DeviceInfo] {
        &self.devices
    }

    /// The virtio-mmio windows to announce (DSDT or command line).
    pub fn mmio_slots(&self) -> Vec<VirtioMmioSlot> {
        self.mmio.as_ref().map(|m| m.slots()).unwrap_or_default()
    }

    /// Place `dev` on `transport` (None: the machine's own).
    pub fn add_virtio(
        &mut self,
        w: &Wiring<'_>,
        id: &str,
        dev: Box<dyn VirtioDevice>,
        transport: Option<Transport>,
    ) -> Result<(), DevError> {
        let key = self.devices.len() as DeviceKey;
        let name = dev.name().to_string();
        let transport = transport.unwrap_or_else(|| self.machine.virtio_transport());
        let no_transport = || DevError::NoTransport {
            device: name.clone(),
            machine: self.machine.name,
            transport: match transport {
                Transport::Mmio => "virtio-mmio",
                Transport::Pci => "PCI",
            },
        };
        let (placement, life) = match transport {
            Transport::Mmio => {
                let m = self.mmio.as_mut().ok_or_else(no_transport)?;
                m.add(w, &self.buses, key, dev)?
            }
            Transport::Pci => {
                let p = self.pci.as_mut().ok_or_else(no_transport)?;
                p.add(w, key, dev)?
            }
        };
        self.lifecycles.insert(key, life);
        self.devices.push(DeviceInfo {
            key,
            id: id.to_string(),
            name,
            placement,
        });
        Ok(())
    }

    /// Place an assigned device as a PCI function (pc, q35).
    pub fn add_vfio(
        &mut self,
        w: &Wiring<'_>,
        id: &str,
        name: String,
        io: Arc<dyn casemate_devices::vfio::VfioDeviceIo>,
        dma: Arc<dyn casemate_devices::vfio::DmaMapper>,
    ) -> Result<(), DevError> {
        let key = self.devices.len() as DeviceKey;
        let machine = self.machine.name;
        let p = self.pci.as_mut().ok_or_else(|| DevError::NoTransport {
            device: name.clone(),
            machine,
            transport: "PCI",
        })?;
        let placement = p.add_vfio(w, name.clone(), io, dma)?;
        self.devices.push(DeviceInfo {
            key,
            id: id.to_string(),
            name,
            placement,
        });
        Ok(())
    }

    /// Place a display PCI function (standard VGA, bochs-display) with
    /// its framebuffer slot and refresh worker.
    pub fn add_display(
        &mut self,
        w: &Wiring<'_>,
        id: &str,
        name: String,
        d: display::PciDisplay,
    ) -> Result<(), DevError> {
        let key = self.devices.len() as DeviceKey;
        let Some(p) = self.pci.as_mut() else {
            return Err(DevError::NoTransport {
                device: name,
                machine: self.machine.name,
                transport: "PCI",
            });
        };
        let dispi = Arc::new(Mutex::new(casemate_devices::display::vga::Dispi::new(
            d.vram.len() as u64,
        )));
        let (bdf, dev) = p.add_display(&name, &d, dispi.clone())?;
        let slot =
            w.hv.framebuffer_slot(&name, d.vram.host_addr(), d.vram.len() as u64)?;
        let worker = display::refresh_worker(&name, &d, dispi, slot.clone()).map_err(|source| {
            DevError::EventFd {
                device: name.clone(),
                source,
            }
        })?;
        self.displays.push(display::PlacedDisplay {
            bdf,
            dev,
            slot,
            worker: Some((name.clone(), worker)),
        });
        self.devices.push(DeviceInfo {
            key,
            id: id.to_string(),
            name,
            placement: Placement::Pci { bdf },
        });
        Ok(())
    }

    /// The keyboard controller placed with the legacy devices.
    pub fn i8042(&self) -> Option<Arc<Mutex<casemate_devices::legacy::I8042>>> {
        self.i8042.clone()
    }

    /// The display refresh workers, for the builder to start (once).
    pub fn take_display_workers(
        &mut self,
    ) -> Vec<(String, Box<dyn casemate_devices::virtio::Worker>)> {
        self.displays
            .iter_mut()
            .filter_map(|d| d.worker.take())
            .collect()
    }

    /// After the last device: map the PCI configuration mechanisms and
    /// every function's BARs.
    pub fn finish(&mut self) -> Result<(), DevError> {
        if let Some(p) = self.pci.as_mut() {
            p.finish(&self.buses)?;
        }
        for d in &self.displays {
            d.follow_bar();
        }
        Ok(())
    }

    /// Carry out one request a vCPU handed over (control thread only).
    pub fn handle(&self, req: PlatformRequest, host: &dyn WorkerHost) {
        match req {
            PlatformRequest::Virtio { device, change } => match self.lifecycles.get(&device) {
                Some(t) => t
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .lifecycle(change, host),
                None => log::warn!("lifecycle request for unknown device {device}"),
            },
            PlatformRequest::BarsMoved { bdf } => {
                match &self.pci {
                    Some(p) => p.bars_moved(&self.buses, bdf),
                    None => log::warn!("BAR move of {bdf} on a machine without PCI"),
                }
                for d in self.displays.iter().filter(|d| d.bdf == bdf) {
                    d.follow_bar();
                }
            }
        }
    }

    /// The PCI root, once `finish` ran (tests, QMP later).
    pub fn pci_root(&self) -> Option<&Arc<PciRoot>> {
        self.pci.as_ref().and_then(|p| p.root())
    }
}

#[cfg(test)]
mod tests;
