//! `-device virtio-rng-pci|virtio-rng-device,rng=ID[,max-bytes=N][,period=MS]`
//! with its `-object rng-random,id=ID,filename=PATH` or `rng-builtin`
//! backend, as QEMU spells them; without `rng=` QEMU's default backend
//! (`rng-builtin`) is used.

use super::devices::Objects;
use super::{bad, CliError, KeyVals};
use crate::config::{DeviceConfig, RngBackendConfig, RngConfig, Transport};

pub fn device(
    opt: &str,
    kv: &KeyVals,
    t: Transport,
    objects: &Objects,
) -> Result<DeviceConfig, CliError> {
    kv.only(opt, &["driver", "id", "rng", "max-bytes", "period"])?;
    let (backend, backend_id) = match kv.get("rng") {
        None => (RngBackendConfig::Builtin, None),
        Some(id) => match objects.get(id) {
            Some(("rng-random", o)) => (
                RngBackendConfig::Random {
                    filename: o.get("filename").unwrap_or("/dev/urandom").into(),
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
    let num = |k: &str| {
        kv.get(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| bad(opt, v, format!("{k} must be a whole number")))
            })
            .transpose()
    };
    let id = kv
        .get("id")
        .or(backend_id)
        .map_or_else(|| "rng".to_string(), str::to_string);
    Ok(DeviceConfig::Rng(RngConfig {
        id,
        backend,
        max_bytes: num("max-bytes")?,
        period_ms: num("period")?.unwrap_or(1000),
        transport: Some(t),
    }))
}
