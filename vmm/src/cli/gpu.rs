//! `-device virtio-gpu-pci|virtio-gpu-device[,id=][,xres=][,yres=][,max_hostmem=]`
//! and `-vga virtio` (as `virtio-gpu-pci`), with QEMU's property names.

use serde::Deserialize;

use super::devices::Objects;
use super::kv::from_keyvals;
use super::{CliError, KeyVals};
use crate::config::{DeviceConfig, GpuConfig, Transport};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuOpts {
    id: Option<String>,
    xres: Option<u32>,
    yres: Option<u32>,
    #[serde(default, with = "crate::config::size::opt_bytes")]
    max_hostmem: Option<u64>,
    /// QEMU's `edid=on|off`: EDID is always offered here.
    edid: Option<bool>,
    /// QEMU's scanout count: one only.
    max_outputs: Option<u32>,
}

pub fn device(
    opt: &str,
    kv: &KeyVals,
    t: Transport,
    _objects: &Objects,
) -> Result<DeviceConfig, CliError> {
    let o: GpuOpts = from_keyvals(opt, kv, &["driver"])?;
    if o.edid == Some(false) {
        return Err(super::bad(opt, "edid=off", "EDID is always offered"));
    }
    if o.max_outputs.is_some_and(|n| n != 1) {
        return Err(super::bad(opt, "max_outputs", "one scanout only"));
    }
    Ok(DeviceConfig::Gpu(GpuConfig {
        id: o.id.unwrap_or_else(|| "gpu".into()),
        xres: o.xres.unwrap_or(1280),
        yres: o.yres.unwrap_or(800),
        max_hostmem: o
            .max_hostmem
            .unwrap_or(casemate_devices::virtio::gpu::DEFAULT_MAX_HOSTMEM),
        transport: Some(t),
    }))
}
