//! The CLI's device table: `-object` types other than memory backends and
//! `-device` drivers other than virtio-blk, each with the function that
//! turns its `key=value` list into a `DeviceConfig`. A new device kind
//! adds its lines here and its parser in its own file.

use super::{gpu, net, rng, vfio, vga, CliError, KeyVals};
use crate::config::{DeviceConfig, Transport};

/// A device driver's parser: its option list, the transport its name
/// implies, and the `-object`s given so far (by id).
pub type DeviceParser =
    fn(opt: &str, kv: &KeyVals, t: Transport, objects: &Objects) -> Result<DeviceConfig, CliError>;

/// `-object` types besides memory backends, with the keys each takes.
pub const OBJECT_TYPES: &[(&str, &[&str])] = &[
    ("rng-random", &["qom-type", "id", "filename"]),
    ("rng-builtin", &["qom-type", "id"]),
    ("iothread", &["qom-type", "id", "poll-max-ns"]),
];

/// `-device` drivers besides virtio-blk.
pub const DEVICES: &[(&str, Transport, DeviceParser)] = &[
    ("virtio-rng-pci", Transport::Pci, rng::device),
    ("virtio-rng-device", Transport::Mmio, rng::device),
    ("virtio-net-pci", Transport::Pci, net::device),
    ("virtio-net-device", Transport::Mmio, net::device),
    ("vfio-user-pci", Transport::Pci, vfio::device),
    ("vfio-pci", Transport::Pci, vfio::pci_device),
    ("virtio-gpu-pci", Transport::Pci, gpu::device),
    ("virtio-gpu-device", Transport::Mmio, gpu::device),
    ("VGA", Transport::Pci, vga::std),
    ("bochs-display", Transport::Pci, vga::bochs),
];

/// The `-object`s of the command line that devices refer to by id.
#[derive(Default)]
pub struct Objects {
    list: Vec<(String, KeyVals)>,
    /// `-netdev`, `-nic` and `-net`, which NICs refer to.
    pub net: net::NetOpts,
}

impl Objects {
    /// Record `kv` if its type is one of `OBJECT_TYPES`; false otherwise.
    pub fn add(&mut self, opt: &str, kv: KeyVals) -> Result<bool, CliError> {
        let t = kv.get("qom-type").unwrap_or_default().to_string();
        let Some((_, keys)) = OBJECT_TYPES.iter().find(|(n, _)| *n == t) else {
            return Ok(false);
        };
        kv.only(opt, keys)?;
        let id = kv
            .get("id")
            .filter(|i| !i.is_empty())
            .ok_or_else(|| super::bad(opt, &t, "id= is required"))?
            .to_string();
        if self.list.iter().any(|(i, _)| *i == id) {
            return Err(super::bad(opt, &id, "Duplicate ID for object"));
        }
        self.list.push((id, kv));
        Ok(true)
    }

    /// The object with `id`: its type and options.
    pub fn get(&self, id: &str) -> Option<(&str, &KeyVals)> {
        self.list
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, kv)| (kv.get("qom-type").unwrap_or_default(), kv))
    }
}
