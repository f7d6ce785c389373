//! `-device vfio-user-pci,socket=PATH[,id=ID]` and QEMU 10's JSON form
//! `-device '{"driver":"vfio-user-pci","socket":{"path":PATH,"type":"unix"}}'`.

use serde::Deserialize;

use super::devices::Objects;
use super::kv::from_keyvals;
use super::{bad, CliError, KeyVals};
use crate::config::{DeviceConfig, Transport, VfioUserConfig};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VfioUserOpts {
    id: Option<String>,
    socket: Option<String>,
}

pub fn device(
    opt: &str,
    kv: &KeyVals,
    _t: Transport,
    _objects: &Objects,
) -> Result<DeviceConfig, CliError> {
    let o: VfioUserOpts = from_keyvals(opt, kv, &["driver"])?;
    let socket = o
        .socket
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad(opt, "vfio-user-pci", "socket=PATH is required"))?;
    Ok(DeviceConfig::VfioUser(VfioUserConfig {
        id: o.id.unwrap_or_else(|| "vfio-user".into()),
        socket: socket.into(),
    }))
}

/// QEMU's JSON `-device` for `vfio-user-pci`, as the `key=value` form it
/// stands for (commas doubled, as QEMU escapes them). Other drivers in
/// JSON form are refused by name.
pub fn json_to_keyvals(opt: &str, text: &str) -> Result<String, CliError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Socket {
        path: String,
        #[serde(rename = "type")]
        kind: String,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Json {
        driver: String,
        id: Option<String>,
        socket: Socket,
    }
    let j: Json = serde_json::from_str(text).map_err(|e| {
        bad(
            opt,
            text,
            format!("JSON -device is supported for vfio-user-pci only: {e}"),
        )
    })?;
    if j.driver != "vfio-user-pci" {
        return Err(bad(
            opt,
            &j.driver,
            "JSON -device is supported for vfio-user-pci only",
        ));
    }
    if j.socket.kind != "unix" {
        return Err(bad(
            opt,
            &j.socket.kind,
            "only a \"unix\" socket is supported",
        ));
    }
    let esc = |s: &str| s.replace(',', ",,");
    let mut kv = format!("vfio-user-pci,socket={}", esc(&j.socket.path));
    if let Some(id) = j.id {
        kv.push_str(&format!(",id={}", esc(&id)));
    }
    Ok(kv)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VfioPciOpts {
    id: Option<String>,
    host: Option<String>,
    sysfsdev: Option<String>,
}

/// `-device vfio-pci,host=BUS:DEV.FN|sysfsdev=PATH[,id=ID]`.
pub fn pci_device(
    opt: &str,
    kv: &KeyVals,
    _t: Transport,
    _objects: &Objects,
) -> Result<DeviceConfig, CliError> {
    let o: VfioPciOpts = from_keyvals(opt, kv, &["driver"])?;
    if o.host.is_some() == o.sysfsdev.is_some() {
        return Err(bad(
            opt,
            "vfio-pci",
            "give one of host=BUS:DEV.FN or sysfsdev=PATH",
        ));
    }
    Ok(DeviceConfig::VfioPci(crate::config::VfioPciConfig {
        id: o.id.unwrap_or_else(|| "vfio-pci".into()),
        host: o.host,
        sysfsdev: o.sysfsdev.map(Into::into),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_device_becomes_the_key_value_form_with_commas_escaped() {
        let kv = json_to_keyvals(
            "-device",
            r#"{"driver":"vfio-user-pci","id":"d0","socket":{"path":"/tmp/a,b.sock","type":"unix"}}"#,
        )
        .unwrap();
        assert_eq!(kv, "vfio-user-pci,socket=/tmp/a,,b.sock,id=d0");
        let e = json_to_keyvals("-device", r#"{"driver":"virtio-blk-pci"}"#).unwrap_err();
        assert!(e.to_string().contains("vfio-user-pci only"), "{e}");
        let e = json_to_keyvals(
            "-device",
            r#"{"driver":"vfio-user-pci","socket":{"path":"/x","type":"unix"},"x":1}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
