//! `-device virtio-rng-pci|virtio-rng-device,rng=ID[,max-bytes=N][,period=MS]`
//! with its `-object rng-random,id=ID,filename=PATH` or `rng-builtin`
//! backend, as QEMU spells them; without `rng=` QEMU's default backend
//! (`rng-builtin`) is used.

use serde::Deserialize;

use super::devices::Objects;
use super::kv::from_keyvals;
use super::{bad, CliError, KeyVals};
use crate::config::{DeviceConfig, RngBackendConfig, RngConfig, Transport};

/// What `-device virtio-rng-*` takes (QEMU's property names).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RngDeviceOpts {
    id: Option<String>,
    rng: Option<String>,
    max_bytes: Option<u64>,
    period: Option<u64>,
}

pub fn device(
    opt: &str,
    kv: &KeyVals,
    t: Transport,
    objects: &Objects,
) -> Result<DeviceConfig, CliError> {
    let o: RngDeviceOpts = from_keyvals(opt, kv, &["driver"])?;
    let (backend, backend_id) = match o.rng.as_deref() {
        None => (RngBackendConfig::Builtin, None),
        Some(id) => match objects.get(id) {
            Some(("rng-random", obj)) => (
                RngBackendConfig::Random {
                    filename: obj.get("filename").unwrap_or("/dev/urandom").into(),
                },
                Some(id),
            ),
            Some(("rng-builtin", _)) => (RngBackendConfig::Builtin, Some(id)),
            _ => {
                return Err(bad(
                    opt,
                    id,
                    "no -object rng-random or rng-builtin has this id",
                ))
            }
        },
    };
    let id =
        o.id.as_deref()
            .or(backend_id)
            .map_or_else(|| "rng".to_string(), str::to_string);
    Ok(DeviceConfig::Rng(RngConfig {
        id,
        backend,
        max_bytes: o.max_bytes,
        period_ms: o.period.unwrap_or(1000),
        transport: Some(t),
    }))
}
