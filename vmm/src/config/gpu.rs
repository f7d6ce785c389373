//! `GpuConfig`: a virtio-gpu 2D device (`-device
//! virtio-gpu-pci|virtio-gpu-device[,xres=,yres=,max_hostmem=]`,
//! `-vga virtio`).

use serde::{Deserialize, Serialize};

use super::device::DeviceKind;
use super::Transport;

/// Largest `xres`/`yres` (the display surface's limit).
pub const MAX_RES: u32 = casemate_devices::display::MAX_DIM;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuConfig {
    pub id: String,
    /// The mode the guest is offered (QEMU's default 1280x800).
    #[serde(default = "default_xres")]
    pub xres: u32,
    #[serde(default = "default_yres")]
    pub yres: u32,
    /// Host bytes the guest's resources may take (QEMU's `max_hostmem`,
    /// default 256 MiB).
    #[serde(default = "default_hostmem")]
    pub max_hostmem: u64,
    #[serde(default)]
    pub transport: Option<Transport>,
}

fn default_xres() -> u32 {
    1280
}

fn default_yres() -> u32 {
    800
}

fn default_hostmem() -> u64 {
    casemate_devices::virtio::gpu::DEFAULT_MAX_HOSTMEM
}

impl DeviceKind for GpuConfig {
    fn id(&self) -> &str {
        &self.id
    }

    fn transport(&self) -> Option<Transport> {
        self.transport
    }

    fn qemu_name(&self, t: Transport) -> &'static str {
        t.pick("virtio-gpu-device", "virtio-gpu-pci")
    }

    fn check(&self) -> Result<(), String> {
        if !(1..=MAX_RES).contains(&self.xres) || !(1..=MAX_RES).contains(&self.yres) {
            return Err(format!("xres and yres must be 1..={MAX_RES}"));
        }
        if self.max_hostmem < 1 << 20 {
            return Err("max_hostmem must be at least 1 MiB".into());
        }
        Ok(())
    }
}
