//! `DeviceConfig`: every device kind other than disks, as one tagged enum
//! so that the CLI and `--config` JSON share it. A kind is its config
//! struct (its own file) implementing `DeviceKind`, plus one variant and
//! one arm of `kind()` here; validation asks only through the trait.

use serde::{Deserialize, Serialize};

use super::vga::VgaConfig;
use super::{GpuConfig, NetConfig, RngConfig, Transport, VfioPciConfig, VfioUserConfig};

/// What validation needs of every device kind.
pub trait DeviceKind {
    fn id(&self) -> &str;
    /// The transport asked for; None: the machine's own.
    fn transport(&self) -> Option<Transport>;
    /// QEMU's `-device` name of this kind on `t`, for messages.
    fn qemu_name(&self, t: Transport) -> &'static str;
    /// The kind's own checks; the reason when they fail.
    fn check(&self) -> Result<(), String>;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DeviceConfig {
    Rng(RngConfig),
    Net(NetConfig),
    #[serde(rename = "vfio-user-pci")]
    VfioUser(VfioUserConfig),
    #[serde(rename = "vfio-pci")]
    VfioPci(VfioPciConfig),
    Gpu(GpuConfig),
    Vga(VgaConfig),
}

impl DeviceConfig {
    pub fn kind(&self) -> &dyn DeviceKind {
        match self {
            Self::Rng(c) => c,
            Self::Net(c) => c,
            Self::VfioUser(c) => c,
            Self::VfioPci(c) => c,
            Self::Gpu(c) => c,
            Self::Vga(c) => c,
        }
    }

    /// A device assigned through vfio-user rather than a virtio device.
    pub fn assigned(&self) -> Option<&VfioUserConfig> {
        match self {
            Self::VfioUser(c) => Some(c),
            _ => None,
        }
    }

    /// A host device assigned through the kernel's VFIO.
    pub fn host_assigned(&self) -> Option<&VfioPciConfig> {
        match self {
            Self::VfioPci(c) => Some(c),
            _ => None,
        }
    }
}
