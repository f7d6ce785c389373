//! `-qmp`, `-monitor`, `-chardev socket`, `-mon`, `-S` and `-name`: the
//! monitor endpoints and process-control switches, as QEMU spells them.
//!
//! A socket must be a listening one that does not wait for a client
//! (`server=on,wait=off`): Casemate never holds a VM back for a client.
//! `-chardev` is only the socket kind, and only a `-mon` may use it.

use std::path::PathBuf;

use super::{bad, CliError, KeyVals};
use crate::config::{ControlConfig, Endpoint, MonitorConfig, MonitorMode};

/// Monitor options waiting for the whole line (`-mon` names a
/// `-chardev` that may come after it).
#[derive(Default)]
pub(super) struct Pending {
    chardevs: Vec<(String, Endpoint)>,
    mons: Vec<(String, String, MonitorMode)>,
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
        if kv.get("backend") != Some("socket") {
            return Err(bad(
                opt,
                v,
                "only the socket backend is supported (for -mon)",
            ));
        }
        server_flags(opt, v, &kv, &["backend", "id", "path", "host", "port"])?;
        let id = kv
            .get("id")
            .filter(|i| !i.is_empty())
            .ok_or_else(|| bad(opt, v, "id= is required"))?;
        let ep = match (kv.get("path"), kv.get("port")) {
            (Some(p), None) if !p.is_empty() => Endpoint::Unix(p.into()),
            (None, Some(port)) => tcp(opt, v, kv.get("host").unwrap_or_default(), port)?,
            _ => return Err(bad(opt, v, "give path= or host=,port=")),
        };
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

    /// Every `-mon` to its `-chardev`; a chardev no monitor uses is refused.
    pub(super) fn finish(self, c: &mut ControlConfig, errors: &mut Vec<CliError>) {
        let mut used = vec![false; self.chardevs.len()];
        for (opt, id, mode) in self.mons {
            match self.chardevs.iter().position(|(i, _)| *i == id) {
                Some(n) if used[n] => {
                    errors.push(bad(&opt, &id, "chardev is already used by another -mon"))
                }
                Some(n) => {
                    used[n] = true;
                    c.monitors.push(MonitorConfig {
                        endpoint: self.chardevs[n].1.clone(),
                        mode,
                    });
                }
                None => errors.push(bad(&opt, &id, format!("chardev '{id}' not found"))),
            }
        }
        for ((id, _), u) in self.chardevs.iter().zip(used) {
            if !u {
                errors.push(bad(
                    "-chardev",
                    id,
                    "only a -mon may use a chardev (serial chardevs are not supported yet)",
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
        p.finish(&mut c, &mut errors);
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
        p.finish(&mut c, &mut errors);
        assert!(errors[0].to_string().contains("'nope' not found"));
    }
}
