//! `-device VGA|bochs-display[,id=][,vgamem_mb=N][,xres=][,yres=]` and
//! `-vga std`, with QEMU's property names.

use serde::Deserialize;

use super::devices::Objects;
use super::kv::from_keyvals;
use super::{CliError, KeyVals};
use crate::config::vga::{VgaConfig, VgaModel};
use crate::config::{DeviceConfig, Transport};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VgaOpts {
    id: Option<String>,
    vgamem_mb: Option<u32>,
    xres: Option<u32>,
    yres: Option<u32>,
    /// QEMU's `edid=on|off`: the EDID is always there.
    edid: Option<bool>,
}

fn parse(opt: &str, kv: &KeyVals, model: VgaModel) -> Result<DeviceConfig, CliError> {
    let o: VgaOpts = from_keyvals(opt, kv, &["driver"])?;
    if o.edid == Some(false) {
        return Err(super::bad(opt, "edid=off", "the EDID is always offered"));
    }
    Ok(DeviceConfig::Vga(VgaConfig {
        id: o.id.unwrap_or_else(|| "vga".into()),
        model,
        vgamem_mb: o.vgamem_mb.unwrap_or(16),
        xres: o.xres.unwrap_or(1280),
        yres: o.yres.unwrap_or(800),
    }))
}

pub fn std(opt: &str, kv: &KeyVals, _t: Transport, _o: &Objects) -> Result<DeviceConfig, CliError> {
    parse(opt, kv, VgaModel::Std)
}

pub fn bochs(
    opt: &str,
    kv: &KeyVals,
    _t: Transport,
    _o: &Objects,
) -> Result<DeviceConfig, CliError> {
    parse(opt, kv, VgaModel::BochsDisplay)
}
