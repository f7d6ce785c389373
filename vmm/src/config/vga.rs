//! `VgaConfig`: the standard VGA (`-vga std`, `-device VGA`) or
//! `-device bochs-display`, both PCI only, with QEMU's `vgamem_mb` and
//! the EDID's `xres`/`yres`.

use serde::{Deserialize, Serialize};

use super::device::DeviceKind;
use super::Transport;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VgaModel {
    Std,
    BochsDisplay,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VgaConfig {
    pub id: String,
    pub model: VgaModel,
    /// Framebuffer (BAR0) size in MiB, a power of two (QEMU's default 16).
    #[serde(default = "default_vgamem")]
    pub vgamem_mb: u32,
    /// The preferred mode the EDID announces.
    #[serde(default = "default_xres")]
    pub xres: u32,
    #[serde(default = "default_yres")]
    pub yres: u32,
}

fn default_vgamem() -> u32 {
    16
}

fn default_xres() -> u32 {
    1280
}

fn default_yres() -> u32 {
    800
}

impl DeviceKind for VgaConfig {
    fn id(&self) -> &str {
        &self.id
    }

    fn transport(&self) -> Option<Transport> {
        Some(Transport::Pci)
    }

    /// PCI only: on a machine without PCI the display to suggest is
    /// virtio-gpu on virtio-mmio.
    fn qemu_name(&self, t: Transport) -> &'static str {
        match (t, self.model) {
            (Transport::Mmio, _) => "virtio-gpu-device",
            (Transport::Pci, VgaModel::Std) => "VGA",
            (Transport::Pci, VgaModel::BochsDisplay) => "bochs-display",
        }
    }

    fn check(&self) -> Result<(), String> {
        if !self.vgamem_mb.is_power_of_two() || !(1..=256).contains(&self.vgamem_mb) {
            return Err("vgamem_mb must be a power of two from 1 to 256".into());
        }
        if !(1..=16000).contains(&self.xres) || !(1..=12000).contains(&self.yres) {
            return Err("xres/yres out of range".into());
        }
        Ok(())
    }
}
