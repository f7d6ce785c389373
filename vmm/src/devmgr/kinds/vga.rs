//! Registry entry for the standard VGA and bochs-display: the framebuffer
//! memory and the display surface are made once per process (a reboot
//! keeps both); each boot places the PCI function on them.

use std::sync::Arc;

use casemate_devices::display::vga::{VgaKind, VgaMemory};
use casemate_devices::display::Surface;
use casemate_devices::virtio::VirtioDevice;

use super::{DeviceFactory, DeviceSpec};
use crate::config::vga::{VgaConfig, VgaModel};
use crate::devmgr::display::PciDisplay;
use crate::display::DisplayError;
use crate::resources::{FdSets, ResourceError};

struct Vga {
    kind: VgaKind,
    vram: Arc<VgaMemory>,
    surface: Arc<Surface>,
    edid: [u8; 128],
}

impl DeviceSpec for VgaConfig {
    fn open(&self, _fds: &FdSets) -> Result<Box<dyn DeviceFactory>, ResourceError> {
        let err = |e| ResourceError::Display(DisplayError::Surface(e));
        let vram = VgaMemory::new(self.vgamem_mb as usize * (1 << 20)).map_err(err)?;
        Ok(Box::new(Vga {
            kind: match self.model {
                VgaModel::Std => VgaKind::Std,
                VgaModel::BochsDisplay => VgaKind::BochsDisplay,
            },
            vram: Arc::new(vram),
            surface: Arc::new(Surface::new().map_err(err)?),
            edid: casemate_devices::virtio::gpu::edid::edid(self.xres, self.yres),
        }))
    }
}

impl DeviceFactory for Vga {
    fn kind(&self) -> &'static str {
        "vga"
    }

    /// Never called: `pci_display` is Some, and the builder places such
    /// kinds as PCI functions (see `DeviceFactory::pci_display`).
    fn build(&self, name: String) -> Box<dyn VirtioDevice> {
        unreachable!("{name}: a VGA is placed through pci_display, not as a virtio device")
    }

    fn surface(&self) -> Option<Arc<Surface>> {
        Some(self.surface.clone())
    }

    fn pci_display(&self) -> Option<PciDisplay> {
        Some(PciDisplay {
            kind: self.kind,
            vram: self.vram.clone(),
            surface: self.surface.clone(),
            edid: self.edid,
        })
    }
}
