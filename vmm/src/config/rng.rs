//! `RngConfig`: a virtio-rng device and the entropy source behind it
//! (`-object rng-random,id=,filename=` or `rng-builtin`, then
//! `-device virtio-rng-pci|virtio-rng-device,rng=ID[,max-bytes=N,period=MS]`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::device::DeviceKind;
use super::Transport;

/// Where the bytes come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RngBackendConfig {
    /// Read from a file or device (QEMU's `rng-random`; default
    /// /dev/urandom), or `/dev/fdset/N`.
    Random { filename: PathBuf },
    /// The host kernel's getrandom(2) (QEMU's `rng-builtin`).
    Builtin,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RngConfig {
    /// The device's id (its `-device ...,id=`, else the backend object's).
    pub id: String,
    pub backend: RngBackendConfig,
    /// At most this many bytes per `period_ms` (QEMU's `max-bytes`);
    /// None: no limit.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// The rate limit's period (QEMU's `period`, default 1000 ms).
    #[serde(default = "default_period")]
    pub period_ms: u64,
    #[serde(default)]
    pub transport: Option<Transport>,
}

fn default_period() -> u64 {
    1000
}

impl DeviceKind for RngConfig {
    fn id(&self) -> &str {
        &self.id
    }

    fn transport(&self) -> Option<Transport> {
        self.transport
    }

    fn qemu_name(&self, t: Transport) -> &'static str {
        t.pick("virtio-rng-device", "virtio-rng-pci")
    }

    fn check(&self) -> Result<(), String> {
        if self.max_bytes == Some(0) {
            return Err("max-bytes must be at least 1".into());
        }
        if self.max_bytes.is_some() && self.period_ms == 0 {
            return Err("period must be at least 1 ms".into());
        }
        Ok(())
    }
}
