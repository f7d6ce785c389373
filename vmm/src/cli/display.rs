//! `-display none|vnc=HOST:N[,...]` and `-vnc HOST:N[,...]`, as QEMU
//! spells them. `:N` alone listens on 127.0.0.1 (QEMU listens on every
//! address; loopback is the safe default for a server without a
//! password). Options that would need authentication or a window are
//! refused with the reason.

use super::{bad, CliError, KeyVals};
use crate::config::display::MAX_VNC_DISPLAY;
use crate::config::{DisplayConfig, Transport};

/// `-vnc` options accepted and ignored, each harmless here.
const IGNORED: &[&str] = &["share", "lossy", "non-adaptive", "key-delay-ms"];

/// `-vnc VALUE` (and `-display vnc=VALUE`).
pub fn vnc(opt: &str, value: &str) -> Result<DisplayConfig, CliError> {
    if value == "none" {
        return Ok(DisplayConfig::None);
    }
    let kv = KeyVals::parse(opt, value, "vnc")?;
    for (k, _) in &kv.pairs {
        match k.as_str() {
            "vnc" => {}
            "password" | "password-secret" | "sasl" | "tls-creds" | "tls" | "x509"
            | "x509verify" | "tls-authz" | "sasl-authz" => {
                return Err(bad(
                    opt,
                    value,
                    format!(
                        "'{k}': the VNC server offers no authentication or TLS; \
                         reach it over an SSH tunnel or a VPN instead"
                    ),
                ))
            }
            "websocket" | "reverse" | "to" | "audiodev" | "power-control" => {
                return Err(bad(opt, value, format!("'{k}' is not supported")))
            }
            k if IGNORED.contains(&k) => {}
            _ => return Err(bad(opt, value, format!("unknown option '{k}'"))),
        }
    }
    let addr = kv.get("vnc").unwrap_or_default();
    if addr.starts_with("unix:") {
        return Err(bad(opt, value, "only TCP (HOST:N): no unix sockets yet"));
    }
    let Some((host, num)) = addr.rsplit_once(':') else {
        return Err(bad(opt, value, "expected HOST:N or :N (port 5900+N)"));
    };
    let display: u16 = num
        .parse()
        .ok()
        .filter(|&n| n <= MAX_VNC_DISPLAY)
        .ok_or_else(|| {
            bad(
                opt,
                value,
                format!("display number must be 0..={MAX_VNC_DISPLAY}"),
            )
        })?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    Ok(DisplayConfig::Vnc {
        host: host.to_string(),
        display,
    })
}

/// `-vga TYPE` as the `-device` it stands for: the driver name, its
/// transport and parser.
pub fn vga(
    opt: &str,
    value: &str,
) -> Result<(&'static str, Transport, super::devices::DeviceParser), CliError> {
    match value {
        "virtio" => Ok(("virtio-gpu-pci", Transport::Pci, super::gpu::device)),
        "std" => Ok(("VGA", Transport::Pci, super::vga::std)),
        "cirrus" | "vmware" | "qxl" | "xenfb" | "tcx" | "cg3" => Err(bad(
            opt,
            value,
            "not supported: use -vga std, -vga virtio or -vga none",
        )),
        _ => Err(bad(opt, value, "expected std, virtio or none")),
    }
}

/// `-display VALUE`.
pub fn display(opt: &str, value: &str) -> Result<DisplayConfig, CliError> {
    let kind = value.split(',').next().unwrap_or_default();
    match kind {
        "none" => Ok(DisplayConfig::None),
        _ if kind.starts_with("vnc=") => vnc(opt, &value["vnc=".len()..]),
        "gtk" | "sdl" | "curses" | "cocoa" | "egl-headless" | "spice-app" | "dbus" => Err(bad(
            opt,
            value,
            "Casemate is headless and opens no windows: use -vnc HOST:N (or \
             -display vnc=HOST:N) and a VNC client",
        )),
        _ => Err(bad(opt, value, "expected none or vnc=HOST:N")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vnc_ok(v: &str) -> DisplayConfig {
        vnc("-vnc", v).unwrap()
    }

    #[test]
    fn display_number_and_loopback_default() {
        assert_eq!(
            vnc_ok(":3"),
            DisplayConfig::Vnc {
                host: "127.0.0.1".into(),
                display: 3
            }
        );
        assert_eq!(
            vnc_ok("0.0.0.0:1,share=ignore"),
            DisplayConfig::Vnc {
                host: "0.0.0.0".into(),
                display: 1
            }
        );
        assert_eq!(
            vnc_ok("[::1]:2"),
            DisplayConfig::Vnc {
                host: "::1".into(),
                display: 2
            }
        );
        assert_eq!(vnc_ok("none"), DisplayConfig::None);
    }

    #[test]
    fn refuses_auth_bad_numbers_and_windows() {
        for v in [":1,password=on", ":1,tls-creds=x", ":70000", "host", ":x"] {
            let e = vnc("-vnc", v).unwrap_err().to_string();
            assert!(e.contains("-vnc"), "{v}: {e}");
        }
        let e = display("-display", "gtk").unwrap_err().to_string();
        assert!(e.contains("headless"), "{e}");
        assert_eq!(
            display("-display", "vnc=:5").unwrap(),
            DisplayConfig::Vnc {
                host: "127.0.0.1".into(),
                display: 5
            }
        );
    }
}
