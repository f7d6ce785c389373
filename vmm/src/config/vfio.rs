//! `VfioUserConfig`: a PCI function assigned through vfio-user, served by
//! another process on a UNIX socket (QEMU 10's
//! `-device vfio-user-pci,socket=PATH`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::device::DeviceKind;
use super::Transport;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VfioUserConfig {
    pub id: String,
    /// The server's listening socket.
    pub socket: PathBuf,
}

impl DeviceKind for VfioUserConfig {
    fn id(&self) -> &str {
        &self.id
    }

    /// Always PCI: an assigned function has no virtio-mmio form.
    fn transport(&self) -> Option<Transport> {
        Some(Transport::Pci)
    }

    fn qemu_name(&self, t: Transport) -> &'static str {
        // The MMIO name is only ever shown as the way out on microvm.
        t.pick(
            "-M q35 or -M pc: an assigned device needs a PCI bus, microvm has none",
            "vfio-user-pci",
        )
    }

    fn check(&self) -> Result<(), String> {
        if self.socket.as_os_str().is_empty() {
            return Err("vfio-user-pci needs socket=PATH".into());
        }
        Ok(())
    }
}

/// A host PCI device assigned through the kernel's VFIO (QEMU's
/// `-device vfio-pci,host=BUS:DEV.FN` or `sysfsdev=PATH`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VfioPciConfig {
    pub id: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub sysfsdev: Option<PathBuf>,
}

impl DeviceKind for VfioPciConfig {
    fn id(&self) -> &str {
        &self.id
    }

    fn transport(&self) -> Option<Transport> {
        Some(Transport::Pci)
    }

    fn qemu_name(&self, t: Transport) -> &'static str {
        t.pick(
            "-M q35 or -M pc: an assigned device needs a PCI bus, microvm has none",
            "vfio-pci",
        )
    }

    fn check(&self) -> Result<(), String> {
        match (&self.host, &self.sysfsdev) {
            (Some(h), None) => casemate_devices::vfio::kernel::canonical_bdf(h)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            (None, Some(_)) => Ok(()),
            _ => Err("vfio-pci takes one of host=BUS:DEV.FN or sysfsdev=PATH".into()),
        }
    }
}
