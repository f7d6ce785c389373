//! `DeviceConfig`: every device kind other than disks, as one tagged enum
//! so that the CLI and `--config` JSON share it. A kind is its config
//! struct (its own file) implementing `DeviceKind`, plus one variant and
//! one arm of `kind()` here; validation asks only through the trait.

use serde::{Deserialize, Serialize};

use super::vga::VgaConfig;
use super::{GpuConfig, NetConfig, RngConfig, Transport};

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
    Gpu(GpuConfig),
    Vga(VgaConfig),
}

impl DeviceConfig {
    pub fn kind(&self) -> &dyn DeviceKind {
        match self {
            Self::Rng(c) => c,
            Self::Net(c) => c,
            Self::Gpu(c) => c,
            Self::Vga(c) => c,
        }
    }
}
