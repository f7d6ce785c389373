//! The device registry: for every device kind, how its config opens the
//! host resources once (`DeviceSpec`) and builds the guest-visible model at
//! each boot (`DeviceFactory`). One arm of `spec()` per kind; the rest of
//! the device manager places any factory's device on virtio-mmio or
//! virtio-pci as the machine says.

pub mod blk;
mod gpu;
mod net;
mod rng;
pub mod vfio_pci;
pub mod vfio_user;
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

/// The registry line of each virtio kind; None for assigned devices,
/// which `vfio_user` opens and the device manager places as PCI functions.
pub fn spec(d: &DeviceConfig) -> Option<&dyn DeviceSpec> {
    match d {
        DeviceConfig::Rng(c) => Some(c),
        DeviceConfig::Net(c) => Some(c),
        DeviceConfig::VfioUser(_) | DeviceConfig::VfioPci(_) => None,
        DeviceConfig::Gpu(c) => Some(c),
        DeviceConfig::Vga(c) => Some(c),
    }
}
