//! Registry entry for virtio-gpu: makes the display surface once per
//! process (the VNC server shows it; a guest reboot draws on the same
//! one) and builds `GpuDevice` on it at each boot.

use std::sync::Arc;

use casemate_devices::display::Surface;
use casemate_devices::virtio::gpu::{GpuConfig as Model, GpuDevice};
use casemate_devices::virtio::VirtioDevice;

use super::{DeviceFactory, DeviceSpec};
use crate::config::GpuConfig;
use crate::resources::{FdSets, ResourceError};

struct Gpu {
    cfg: GpuConfig,
    surface: Arc<Surface>,
}

impl DeviceSpec for GpuConfig {
    fn open(&self, _fds: &FdSets) -> Result<Box<dyn DeviceFactory>, ResourceError> {
        let surface = Surface::new().map_err(|source| {
            ResourceError::Display(crate::display::DisplayError::Surface(source))
        })?;
        Ok(Box::new(Gpu {
            cfg: self.clone(),
            surface: Arc::new(surface),
        }))
    }
}

impl DeviceFactory for Gpu {
    fn kind(&self) -> &'static str {
        "gpu"
    }

    fn build(&self, name: String) -> Box<dyn VirtioDevice> {
        Box::new(GpuDevice::new(Model {
            name,
            xres: self.cfg.xres,
            yres: self.cfg.yres,
            max_hostmem: self.cfg.max_hostmem,
            surface: self.surface.clone(),
        }))
    }

    fn surface(&self) -> Option<Arc<Surface>> {
        Some(self.surface.clone())
    }
}
