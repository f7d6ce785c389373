//! HMP, QEMU's human monitor: one command per line, answered in QEMU's
//! wording. Each command runs the QMP command of the same meaning
//! (`commands::execute`) and formats its answer, so the two monitors
//! cannot disagree.

use serde_json::{Map, Value};

use super::commands::{self, VmInfo};
use super::Hub;

pub const PROMPT: &str = "(qemu) ";

const HELP: &str = "\
cont|c -- resume emulation
help|? [cmd] -- show the help
info [subcommand] -- show various information about the system state
quit|q -- quit the emulator
stop|s -- stop emulation
system_powerdown  -- send system power down event
system_reset  -- reset the system
";

const INFO_HELP: &str = "\
info block -- show the block devices
info cpus  -- show infos for each CPU
info pci  -- show PCI info
info status  -- show the current VM status (running|paused)
info version  -- show the version of QEMU
";

/// The first lines a client sees.
pub fn banner() -> String {
    let (a, b, c) = super::wire::QEMU_VERSION;
    format!("QEMU {a}.{b}.{c} monitor - type 'help' for more information\r\n{PROMPT}")
}

fn crlf(s: &str) -> String {
    s.replace('\n', "\r\n")
}

/// Run one command line; the answer's text (CRLF line ends).
pub fn execute(hub: &Hub, info: &VmInfo, line: &str) -> String {
    let mut words = line.split_whitespace();
    let Some(cmd) = words.next() else {
        return String::new();
    };
    let none = Map::new();
    let run = |name: &str| commands::execute(hub, info, name, &none);
    let out = match cmd {
        "help" | "?" => HELP.to_string(),
        "c" | "cont" => run("cont")
            .map(|_| String::new())
            .unwrap_or_else(|e| e.desc),
        "s" | "stop" => run("stop")
            .map(|_| String::new())
            .unwrap_or_else(|e| e.desc),
        "q" | "quit" => run("quit")
            .map(|_| String::new())
            .unwrap_or_else(|e| e.desc),
        "system_reset" | "system_powerdown" => {
            run(cmd).map(|_| String::new()).unwrap_or_else(|e| e.desc)
        }
        "info" => match words.next() {
            None => INFO_HELP.to_string(),
            Some(sub) => {
                info_cmd(sub, &run).unwrap_or_else(|| format!("unknown command: 'info {sub}'\n"))
            }
        },
        other => format!("unknown command: '{other}'\n"),
    };
    crlf(&out)
}

fn info_cmd(
    sub: &str,
    run: &dyn Fn(&str) -> Result<Value, super::wire::QmpError>,
) -> Option<String> {
    let v = match sub {
        "status" => "query-status",
        "version" => "query-version",
        "block" => "query-block",
        "pci" => "query-pci",
        "cpus" => "query-cpus-fast",
        _ => return None,
    };
    let v = match run(v) {
        Ok(v) => v,
        Err(e) => return Some(format!("{}\n", e.desc)),
    };
    Some(match sub {
        "status" => match v["status"].as_str() {
            Some("running") => "VM status: running\n".into(),
            Some("prelaunch") => "VM status: paused (prelaunch)\n".into(),
            Some(s) => format!("VM status: {s}\n"),
            None => String::new(),
        },
        "version" => {
            let q = &v["qemu"];
            format!(
                "{}.{}.{} ({})\n",
                q["major"], q["minor"], q["micro"],
                v["package"].as_str().unwrap_or_default()
            )
        }
        "block" => arr(&v)
            .iter()
            .map(block_info)
            .collect::<Vec<_>>()
            // QEMU puts an empty line between devices.
            .join("\n"),
        "pci" => arr(&v)
            .iter()
            .flat_map(|bus| arr(&bus["devices"]))
            .map(|d| {
                // QEMU prints an undescribed class in decimal.
                let class = match d["class_info"]["desc"].as_str() {
                    Some(desc) => desc.to_string(),
                    None => format!("Class {:04}", d["class_info"]["class"].as_u64().unwrap_or(0)),
                };
                let id = |k: &str| d["id"][k].as_u64().unwrap_or(0);
                format!(
                    "  Bus {:2}, device {:3}, function {}:\n    {class}: PCI device {:04x}:{:04x}\n      PCI subsystem {:04x}:{:04x}\n{}{}      id \"{}\"\n",
                    d["bus"].as_u64().unwrap_or(0),
                    d["slot"].as_u64().unwrap_or(0),
                    d["function"].as_u64().unwrap_or(0),
                    id("vendor"),
                    id("device"),
                    id("subsystem-vendor"),
                    id("subsystem"),
                    d.get("irq")
                        .map(|irq| format!("      IRQ {irq}, pin {}\n", pin(&d["irq_pin"])))
                        .unwrap_or_default(),
                    arr(&d["regions"])
                        .iter()
                        .map(super::pci_info::region_line)
                        .collect::<String>(),
                    d["qdev_id"].as_str().unwrap_or_default(),
                )
            })
            .collect(),
        "cpus" => arr(&v)
            .iter()
            .map(|c| {
                let i = c["cpu-index"].as_u64().unwrap_or(0);
                format!(
                    "{} CPU #{i}: thread_id={}\n",
                    if i == 0 { "*" } else { " " },
                    c["thread-id"]
                )
            })
            .collect(),
        _ => return None,
    })
}

/// One device of `info block`, QEMU's lines in QEMU's order.
fn block_info(d: &Value) -> String {
    let i = &d["inserted"];
    let mut s = format!(
        "{} ({}): {} ({}{}{})\n",
        d["device"].as_str().unwrap_or_default(),
        i["node-name"].as_str().unwrap_or_default(),
        i["file"].as_str().unwrap_or_default(),
        i["drv"].as_str().unwrap_or_default(),
        if i["ro"] == true { ", read-only" } else { "" },
        if i["encrypted"] == true {
            ", encrypted"
        } else {
            ""
        },
    );
    if let Some(q) = d["qdev"].as_str() {
        s += &format!("    Attached to:      {q}\n");
    }
    if let Some(st) = d["io-status"].as_str().filter(|st| *st != "ok") {
        s += &format!("    I/O status:       {st}\n");
    }
    if d["removable"] == true {
        s += &format!(
            "    Removable device: {}locked, tray {}\n",
            if d["locked"] == true { "" } else { "not " },
            if d["tray_open"] == true {
                "open"
            } else {
                "closed"
            },
        );
    }
    s += &format!("    Cache mode:       {}\n", cache_mode(&i["cache"]));
    if let Some(dz) = i["detect_zeroes"].as_str().filter(|dz| *dz != "off") {
        s += &format!("    Detect zeroes:    {dz}\n");
    }
    s
}

fn arr(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn pin(v: &Value) -> char {
    (b'A' + (v.as_u64().unwrap_or(1).clamp(1, 4) as u8 - 1)) as char
}

/// QEMU's three parts: the write mode, then `, direct`, `, ignore flushes`.
fn cache_mode(c: &Value) -> String {
    format!(
        "{}{}{}",
        if c["writeback"] == true {
            "writeback"
        } else {
            "writethrough"
        },
        if c["direct"] == true { ", direct" } else { "" },
        if c["no-flush"] == true {
            ", ignore flushes"
        } else {
            ""
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> VmInfo {
        VmInfo {
            name: Some("vm1".into()),
            smp: crate::config::SmpConfig::default(),
            block: Value::Array(vec![]),
            memdev: Value::Array(vec![]),
        }
    }

    #[test]
    fn status_stop_cont_and_unknown_commands_read_as_qemu() {
        let hub = Hub::new(true).unwrap();
        let i = info();
        assert_eq!(
            execute(&hub, &i, "info status"),
            "VM status: paused (prelaunch)\r\n"
        );
        assert_eq!(execute(&hub, &i, "cont"), "");
        assert_eq!(execute(&hub, &i, "info status"), "VM status: running\r\n");
        assert_eq!(execute(&hub, &i, "stop"), "");
        assert_eq!(execute(&hub, &i, "info status"), "VM status: paused\r\n");
        assert_eq!(execute(&hub, &i, "foo bar"), "unknown command: 'foo'\r\n");
        assert!(execute(&hub, &i, "info version").starts_with("7.2.0 (casemate "));
        assert!(execute(&hub, &i, "help").contains("system_powerdown"));
        let events = hub.take_events();
        assert!(events[0].contains("\"RESUME\""), "{events:?}");
        assert!(events[1].contains("\"STOP\""), "{events:?}");
    }

    #[test]
    fn info_block_reads_as_qemus() {
        let dev = |id: &str, ro: bool, dz: &str, cache: Value| {
            serde_json::json!({
                "device": id, "locked": false, "removable": false, "io-status": "ok",
                "inserted": {"file": format!("/i/{id}.img"), "node-name": format!("#block-{id}"),
                    "ro": ro, "drv": "raw", "encrypted": false, "detect_zeroes": dz,
                    "cache": cache},
            })
        };
        let mut i = info();
        i.block = serde_json::json!([
            dev(
                "virtio0",
                false,
                "off",
                serde_json::json!({"writeback": true, "direct": false, "no-flush": false})
            ),
            dev(
                "d1",
                true,
                "on",
                serde_json::json!({"writeback": true, "direct": true, "no-flush": true})
            ),
        ]);
        let hub = Hub::new(false).unwrap();
        assert_eq!(
            execute(&hub, &i, "info block"),
            "virtio0 (#block-virtio0): /i/virtio0.img (raw)\r\n\
             \x20   Cache mode:       writeback\r\n\
             \r\n\
             d1 (#block-d1): /i/d1.img (raw, read-only)\r\n\
             \x20   Cache mode:       writeback, direct, ignore flushes\r\n\
             \x20   Detect zeroes:    on\r\n"
        );
    }
}
