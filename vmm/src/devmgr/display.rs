//! Display devices that are PCI functions of their own rather than
//! virtio devices: the standard VGA and bochs-display. Placing one takes
//! a slot and two BARs (`pci.rs`), a memory slot for the framebuffer at
//! BAR0 (`Hypervisor::framebuffer_slot`), and a refresh worker the
//! builder starts with the boot. The slot follows BAR0 when the guest
//! moves it (`DeviceManager::handle`).

use std::sync::{Arc, Mutex};

use casemate_devices::display::vga::refresh::VgaRefresh;
use casemate_devices::display::vga::{FramebufferSlot, StdVga, VgaKind, VgaMemory};
use casemate_devices::display::Surface;
use casemate_devices::pci::Bdf;
use casemate_devices::virtio::Worker;

/// What a display factory hands the device manager for one boot.
pub struct PciDisplay {
    pub kind: VgaKind,
    pub vram: Arc<VgaMemory>,
    pub surface: Arc<Surface>,
    pub edid: [u8; 128],
}

/// A placed display function and its framebuffer slot.
pub struct PlacedDisplay {
    pub bdf: Bdf,
    pub dev: Arc<Mutex<StdVga>>,
    pub slot: Arc<dyn FramebufferSlot>,
    /// Taken by the builder, which starts it.
    pub worker: Option<(String, Box<dyn Worker>)>,
}

impl PlacedDisplay {
    /// Map the framebuffer where BAR0 decodes now (or unmap it).
    pub fn follow_bar(&self) {
        let addr = self
            .dev
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .framebuffer_addr();
        if let Err(e) = self.slot.place(addr) {
            log::warn!("{}: mapping the framebuffer at {addr:x?}: {e}", self.bdf);
        }
    }
}

/// The refresh worker of a display.
pub fn refresh_worker(
    name: &str,
    d: &PciDisplay,
    dispi: Arc<Mutex<casemate_devices::display::vga::Dispi>>,
    slot: Arc<dyn FramebufferSlot>,
) -> std::io::Result<Box<dyn Worker>> {
    Ok(Box::new(VgaRefresh::new(
        name.to_string(),
        dispi,
        d.vram.clone(),
        slot,
        d.surface.clone(),
    )?))
}
