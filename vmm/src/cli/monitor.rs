//! `-qmp`, `-monitor`, `-chardev socket`, `-mon`, `-S` and `-name`: the
//! monitor endpoints and process-control switches, as QEMU spells them.
//!
//! A socket must be a listening one that does not wait for a client
//! (`server=on,wait=off`): Casemate never holds a VM back for a client.
//! `-chardev` is the socket kind (for a `-mon` or `-serial chardev:ID`)
//! or the pty kind (for `-serial chardev:ID`).

use std::path::PathBuf;

use super::{bad, CliError, KeyVals};
use crate::config::{ControlConfig, Endpoint, MonitorConfig, MonitorMode, SerialConfig};

/// Monitor options waiting for the whole line (`-mon` names a
/// `-chardev` that may come after it).
#[derive(Default)]
pub(super) struct Pending {
    chardevs: Vec<(String, Chardev)>,
    mons: Vec<(String, String, MonitorMode)>,
    /// `-serial chardev:ID`: the option and the id.
    serial: Option<(String, String)>,
}

#[derive(Clone)]
enum Chardev {
    Socket(Endpoint),
    Pty,
}

fn server_flags(opt: &str, v: &str, kv: &KeyVals, known: &[&str]) -> Result<(), CliError> {
    let mut allowed = vec!["server", "wait", "nowait"];
    allowed.extend_from_slice(known);
    kv.only(opt, &allowed)?;
    let on = |k: &str| match kv.get(k) {
        None => Ok(None),
        Some("" | "on" | "yes" | "true") => Ok(Some(true)),
        Some("off" | "no" | "false") => Ok(Some(false)),
        Some(x) => Err(bad(opt, x, format!("{k} is on or off"))),
    };
    if on("server")? != Some(true) {
        return Err(bad(
            opt,
            v,
            "only listening sockets are supported: add server=on,wait=off",
        ));
    }
    let nowait = kv.get("nowait").is_some() || on("wait")? == Some(false);
    if !nowait {
        return Err(bad(
            opt,
            v,
            "wait=on (holding the VM until a client connects) is not supported: add wait=off",
        ));
    }
    Ok(())
}

/// QEMU's bare flags (`server`, `nowait`) become `key=` so KeyVals takes them.
fn keyvals(opt: &str, s: &str, implied: &str) -> Result<KeyVals, CliError> {
    let fixed: Vec<String> = s
        .split(',')
        .enumerate()
        .map(|(i, item)| {
            if i > 0 && matches!(item, "server" | "nowait" | "wait") {
                format!("{item}=")
            } else {
                item.to_string()
            }
        })
        .collect();
    KeyVals::parse(opt, &fixed.join(","), implied)
}

fn tcp(opt: &str, v: &str, host: &str, port: &str) -> Result<Endpoint, CliError> {
    let port = port
        .parse::<u16>()
        .map_err(|_| bad(opt, v, format!("port '{port}' is not a number below 65536")))?;
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    Ok(Endpoint::Tcp {
        host: host.to_string(),
        port,
    })
}

/// `unix:PATH,...`, `tcp:HOST:PORT,...` or `stdio` (`-qmp`, `-monitor`).
pub(super) fn endpoint(opt: &str, v: &str) -> Result<Endpoint, CliError> {
    if v == "stdio" {
        return Ok(Endpoint::Stdio);
    }
    let kv = keyvals(opt, v, "addr")?;
    let addr = kv.get("addr").unwrap_or_default();
    let ep = if let Some(path) = addr.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(bad(opt, v, "unix: needs a path"));
        }
        Endpoint::Unix(PathBuf::from(path))
    } else if let Some(hp) = addr.strip_prefix("tcp:") {
        let (host, port) = hp
            .rsplit_once(':')
            .ok_or_else(|| bad(opt, v, "tcp: is tcp:HOST:PORT"))?;
        tcp(opt, v, host, port)?
    } else {
        return Err(bad(
            opt,
            v,
            "supported: stdio, unix:PATH,server=on,wait=off, tcp:HOST:PORT,server=on,wait=off",
        ));
    };
    server_flags(opt, v, &kv, &["addr"])?;
    Ok(ep)
}

impl Pending {
    /// `-chardev socket,id=ID,path=PATH|host=H,port=P,server=on,wait=off`.
    pub(super) fn chardev(&mut self, opt: &str, v: &str) -> Result<(), CliError> {
        let kv = keyvals(opt, v, "backend")?;
        let ep = match kv.get("backend") {
            Some("socket") => {
                server_flags(opt, v, &kv, &["backend", "id", "path", "host", "port"])?;
                match (kv.get("path"), kv.get("port")) {
                    (Some(p), None) if !p.is_empty() => Chardev::Socket(Endpoint::Unix(p.into())),
                    (None, Some(port)) => {
                        Chardev::Socket(tcp(opt, v, kv.get("host").unwrap_or_default(), port)?)
                    }
                    _ => return Err(bad(opt, v, "give path= or host=,port=")),
                }
            }
            Some("pty") => {
                kv.only(opt, &["backend", "id"])?;
                Chardev::Pty
            }
            _ => {
                return Err(bad(
                    opt,
                    v,
                    "only the socket and pty backends are supported",
                ))
            }
        };
        let id = kv
            .get("id")
            .filter(|i| !i.is_empty())
            .ok_or_else(|| bad(opt, v, "id= is required"))?;
        if self.chardevs.iter().any(|(i, _)| i == id) {
            return Err(bad(opt, id, format!("Duplicate ID '{id}' for chardev")));
        }
        self.chardevs.push((id.to_string(), ep));
        Ok(())
    }

    /// `-mon chardev=ID[,mode=control|readline][,pretty=off]`.
    pub(super) fn mon(&mut self, opt: &str, v: &str) -> Result<(), CliError> {
        let kv = KeyVals::parse(opt, v, "chardev")?;
        kv.only(opt, &["chardev", "mode", "pretty", "id"])?;
        let mode = match kv.get("mode").unwrap_or("readline") {
            "control" => MonitorMode::Control,
            "readline" => MonitorMode::Readline,
            x => return Err(bad(opt, x, "mode is control or readline")),
        };
        if kv.get("pretty").is_some_and(|p| p != "off") {
            return Err(bad(opt, v, "pretty=on is not supported"));
        }
        let id = kv
            .get("chardev")
            .ok_or_else(|| bad(opt, v, "chardev= is required"))?;
        self.mons.push((opt.to_string(), id.to_string(), mode));
        Ok(())
    }

    /// `-serial chardev:ID` (COM1 only; the caller refuses a second).
    pub(super) fn serial_chardev(&mut self, opt: &str, id: &str) -> Result<(), CliError> {
        if id.is_empty() {
            return Err(bad(opt, "chardev:", "chardev: needs an id"));
        }
        self.serial = Some((opt.to_string(), id.to_string()));
        Ok(())
    }

    /// `-serial chardev:ID` and every `-mon` to its `-chardev`; a chardev
    /// nothing uses is refused.
    pub(super) fn finish(
        self,
        c: &mut ControlConfig,
        serial: &mut SerialConfig,
        errors: &mut Vec<CliError>,
    ) {
        let mut used = vec![false; self.chardevs.len()];
        if let Some((opt, id)) = &self.serial {
            match self.chardevs.iter().position(|(i, _)| i == id) {
                Some(n) => {
                    used[n] = true;
                    *serial = match &self.chardevs[n].1 {
                        Chardev::Socket(e) => SerialConfig::Socket(e.clone()),
                        Chardev::Pty => SerialConfig::Pty,
                    };
                }
                None => errors.push(bad(opt, id, format!("chardev '{id}' not found"))),
            }
        }
        for (opt, id, mode) in self.mons {
            match self.chardevs.iter().position(|(i, _)| *i == id) {
                Some(n) if used[n] => {
                    errors.push(bad(&opt, &id, "chardev is already used by another -mon"))
                }
                Some(n) => {
                    used[n] = true;
                    match &self.chardevs[n].1 {
                        Chardev::Socket(endpoint) => c.monitors.push(MonitorConfig {
                            endpoint: endpoint.clone(),
                            mode,
                        }),
                        Chardev::Pty => {
                            errors.push(bad(&opt, &id, "a monitor on a pty is not supported"))
                        }
                    }
                }
                None => errors.push(bad(&opt, &id, format!("chardev '{id}' not found"))),
            }
        }
        for ((id, _), u) in self.chardevs.iter().zip(used) {
            if !u {
                errors.push(bad(
                    "-chardev",
                    id,
                    "a chardev must be used by a -mon or by -serial chardev:ID",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmp_endpoints_parse_as_qemu_spells_them() {
        assert_eq!(
            endpoint("-qmp", "unix:/tmp/q.sock,server=on,wait=off").unwrap(),
            Endpoint::Unix("/tmp/q.sock".into())
        );
        assert_eq!(
            endpoint("-qmp", "unix:/tmp/q.sock,server,nowait").unwrap(),
            Endpoint::Unix("/tmp/q.sock".into())
        );
        assert_eq!(
            endpoint("-qmp", "tcp:127.0.0.1:4444,server=on,wait=off").unwrap(),
            Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 4444
            }
        );
        assert_eq!(endpoint("-monitor", "stdio").unwrap(), Endpoint::Stdio);
    }

    #[test]
    fn waiting_or_client_sockets_are_refused_with_the_fix() {
        let e = endpoint("-qmp", "unix:/tmp/q,server=on").unwrap_err();
        assert!(e.to_string().contains("wait=off"), "{e}");
        let e = endpoint("-qmp", "unix:/tmp/q").unwrap_err();
        assert!(e.to_string().contains("server=on"), "{e}");
        let e = endpoint("-qmp", "tcp:localhost:99999,server=on,wait=off").unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
        assert!(endpoint("-qmp", "vc").is_err());
    }

    fn control(args: &[&str]) -> ControlConfig {
        match crate::cli::parse(args.iter().map(|a| a.to_string())).unwrap() {
            crate::cli::Command::Run { config, .. } => config.control,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn process_control_options_fill_the_control_config() {
        let c = control(&[
            "-S",
            "-daemonize",
            "-pidfile",
            "/run/vm.pid",
            "-name",
            "guest=vm1,process=vmproc,debug-threads=on",
            "-qmp",
            "tcp:127.0.0.1:4444,server=on,wait=off",
            "-monitor",
            "none",
        ]);
        assert!(c.start_paused && c.daemonize);
        assert_eq!(c.pidfile, Some("/run/vm.pid".into()));
        assert_eq!(c.name.as_deref(), Some("vm1"));
        assert_eq!(c.process_name.as_deref(), Some("vmproc"));
        assert_eq!(c.monitors.len(), 1, "-monitor none adds nothing");
        assert_eq!(control(&["-name", "plain"]).name.as_deref(), Some("plain"));
    }

    #[test]
    fn mon_finds_its_chardev_in_any_order() {
        let mut p = Pending::default();
        p.mon("-mon", "chardev=m0,mode=control").unwrap();
        p.chardev("-chardev", "socket,id=m0,path=/tmp/m,server=on,wait=off")
            .unwrap();
        let mut c = ControlConfig::default();
        let mut errors = Vec::new();
        p.finish(&mut c, &mut SerialConfig::Stdio, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            c.monitors,
            vec![MonitorConfig {
                endpoint: Endpoint::Unix("/tmp/m".into()),
                mode: MonitorMode::Control
            }]
        );
        let mut p = Pending::default();
        p.mon("-mon", "chardev=nope").unwrap();
        let mut errors = Vec::new();
        p.finish(&mut c, &mut SerialConfig::Stdio, &mut errors);
        assert!(errors[0].to_string().contains("'nope' not found"));
    }

    #[test]
    fn serial_takes_a_socket_or_pty_chardev() {
        let mut p = Pending::default();
        p.serial_chardev("-serial", "s0").unwrap();
        p.chardev("-chardev", "pty,id=s0").unwrap();
        let (mut c, mut serial, mut errors) =
            (ControlConfig::default(), SerialConfig::Stdio, vec![]);
        p.finish(&mut c, &mut serial, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(serial, SerialConfig::Pty);

        let mut p = Pending::default();
        p.chardev("-chardev", "socket,id=s1,path=/tmp/s,server=on,wait=off")
            .unwrap();
        p.serial_chardev("-serial", "s1").unwrap();
        p.finish(&mut c, &mut serial, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            serial,
            SerialConfig::Socket(Endpoint::Unix("/tmp/s".into()))
        );

        // A pty for a monitor, an unknown id, and a chardev nobody uses.
        let mut p = Pending::default();
        p.chardev("-chardev", "pty,id=t").unwrap();
        p.mon("-mon", "chardev=t").unwrap();
        p.chardev("-chardev", "pty,id=spare").unwrap();
        p.serial_chardev("-serial", "nope").unwrap();
        p.finish(&mut c, &mut serial, &mut errors);
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(
            p_has(&text, "a monitor on a pty is not supported"),
            "{text:?}"
        );
        assert!(p_has(&text, "chardev 'nope' not found"), "{text:?}");
        assert!(p_has(&text, "-mon or by -serial chardev:ID"), "{text:?}");
        assert!(Pending::default()
            .chardev("-chardev", "pty,id=x,path=/y")
            .is_err());
        assert!(Pending::default()
            .chardev("-chardev", "file,id=x,path=/y")
            .is_err());
    }

    fn p_has(text: &[String], want: &str) -> bool {
        text.iter().any(|t| t.contains(want))
    }
}
