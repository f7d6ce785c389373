//! The device registry: for every device kind, how its config opens the
//! host resources once (`DeviceSpec`) and builds the guest-visible model at
//! each boot (`DeviceFactory`). One arm of `spec()` per kind; the rest of
//! the device manager places any factory's device on virtio-mmio or
//! virtio-pci as the machine says.

pub mod blk;
mod gpu;
mod net;
mod rng;
mod vga;

use casemate_devices::virtio::VirtioDevice;

use crate::config::DeviceConfig;
use crate::resources::{FdSets, ResourceError};

/// A kind's host side, opened once per process.
pub trait DeviceSpec {
    fn open(&self, fds: &FdSets) -> Result<Box<dyn DeviceFactory>, ResourceError>;
}

/// Builds a kind's device for one boot from what `open` opened.
pub trait DeviceFactory: Send + Sync {
    /// Short kind name: devices are named `<kind><n>` (`rng0`), their
    /// worker threads `cm-<kind><n>`, and it picks the seccomp role.
    fn kind(&self) -> &'static str;
    fn build(&self, name: String) -> Box<dyn VirtioDevice>;
    /// The display surface the kind draws on, made once with the kind
    /// (graphics devices only); the VNC server shows the first one.
    fn surface(&self) -> Option<std::sync::Arc<casemate_devices::display::Surface>> {
        None
    }
    /// A kind that is a display PCI function rather than a virtio device
    /// (VGA): what to place instead of calling `build`.
    fn pci_display(&self) -> Option<crate::devmgr::display::PciDisplay> {
        None
    }
}

/// The registry line of each kind.
pub fn spec(d: &DeviceConfig) -> &dyn DeviceSpec {
    match d {
        DeviceConfig::Rng(c) => c,
        DeviceConfig::Net(c) => c,
        DeviceConfig::Gpu(c) => c,
        DeviceConfig::Vga(c) => c,
    }
}
