//! The command set QMP and HMP share: each command takes its arguments as
//! a JSON object and answers a JSON value in QEMU 7.2's documented shape,
//! or a `QmpError` with QEMU's class and wording. Static facts about the
//! VM (`VmInfo`) are taken from the config once; live ones (run state,
//! vCPU threads, the PCI root) from the `Hub`.

use serde_json::{json, Map, Value};

use super::wire::{package, QmpError, QEMU_VERSION};
use super::Hub;
use crate::config::{CacheConfig, DetectZeroesConfig, ValidConfig};
use crate::control::HostAction;
use crate::resources::Resources;

/// Every command, in `query-commands` order.
pub const COMMANDS: &[&str] = &[
    "qmp_capabilities",
    "query-version",
    "query-commands",
    "query-status",
    "query-name",
    "query-kvm",
    "query-cpus-fast",
    "query-block",
    "query-pci",
    "query-memdev",
    "stop",
    "cont",
    "system_reset",
    "system_powerdown",
    "quit",
    "screendump",
];

/// What the commands report that does not change while the VM runs.
pub struct VmInfo {
    pub name: Option<String>,
    pub smp: crate::config::SmpConfig,
    pub block: Value,
    pub memdev: Value,
}

impl VmInfo {
    pub fn new(config: &ValidConfig, res: &Resources) -> Self {
        let block = config
            .drives
            .iter()
            .zip(&res.disks)
            .map(|(d, disk)| {
                let (writeback, direct, no_flush) = match d.cache {
                    CacheConfig::Writeback => (true, false, false),
                    CacheConfig::None => (true, true, false),
                    CacheConfig::Writethrough => (false, false, false),
                    CacheConfig::Unsafe => (true, false, true),
                };
                let detect_zeroes = match d.detect_zeroes {
                    DetectZeroesConfig::Off => "off",
                    DetectZeroesConfig::On => "on",
                    DetectZeroesConfig::Unmap => "unmap",
                };
                let file = d.file.display().to_string();
                let drv = disk.format().name();
                json!({
                    "device": d.id,
                    "locked": false,
                    "removable": false,
                    "type": "unknown",
                    "io-status": "ok",
                    "inserted": {
                        "file": file,
                        "node-name": format!("#block-{}", d.id),
                        "ro": disk.is_read_only(),
                        "drv": drv,
                        "encrypted": false,
                        "backing_file_depth": 0,
                        "bps": 0, "bps_rd": 0, "bps_wr": 0,
                        "iops": 0, "iops_rd": 0, "iops_wr": 0,
                        "write_threshold": 0,
                        "detect_zeroes": detect_zeroes,
                        "cache": {"writeback": writeback, "direct": direct, "no-flush": no_flush},
                        "image": {
                            "filename": file,
                            "format": drv,
                            "virtual-size": disk.virtual_size(),
                            "dirty-flag": false,
                        },
                    },
                })
            })
            .collect();
        let b = config.ram_backend();
        let memdev = json!([{
            // QEMU's implicit RAM backend is named after the machine's RAM.
            "id": if config.memory_backend.is_some() { b.id.clone() } else { "pc.ram".into() },
            "size": b.size,
            "merge": b.merge,
            "dump": b.dump,
            "prealloc": b.prealloc,
            "share": b.share,
            "reserve": true,
            "host-nodes": [],
            "policy": "default",
        }]);
        Self {
            name: config.control.name.clone(),
            smp: config.smp,
            block: Value::Array(block),
            memdev,
        }
    }
}

fn no_args(args: &Map<String, Value>) -> Result<(), QmpError> {
    match args.keys().next() {
        Some(k) => Err(QmpError::generic(format!("Parameter '{k}' is unexpected"))),
        None => Ok(()),
    }
}

/// Run `name` (not `qmp_capabilities`, which the server handles).
pub fn execute(
    hub: &Hub,
    info: &VmInfo,
    name: &str,
    args: &Map<String, Value>,
) -> Result<Value, QmpError> {
    if name == "screendump" {
        return screendump(hub, args);
    }
    if !COMMANDS.contains(&name) {
        return Err(QmpError::not_found(format!(
            "The command {name} has not been found"
        )));
    }
    no_args(args)?;
    let (major, minor, micro) = QEMU_VERSION;
    Ok(match name {
        "query-version" => json!({
            "qemu": {"major": major, "minor": minor, "micro": micro},
            "package": package(),
        }),
        "query-commands" => COMMANDS.iter().map(|c| json!({"name": c})).collect(),
        "query-status" => {
            let s = hub.pause.status();
            json!({
                "running": s == crate::vstate::pause::RunStatus::Running,
                "singlestep": false,
                "status": s.name(),
            })
        }
        "query-name" => match &info.name {
            Some(n) => json!({"name": n}),
            None => json!({}),
        },
        "query-kvm" => json!({"enabled": true, "present": true}),
        "query-cpus-fast" => cpus(hub, info),
        "query-block" => info.block.clone(),
        "query-pci" => super::pci_info::query_pci(hub),
        "query-memdev" => info.memdev.clone(),
        "stop" => {
            if hub.pause.stop() {
                hub.emit("STOP", None);
            }
            json!({})
        }
        "cont" => {
            if hub.pause.cont() {
                hub.emit("RESUME", None);
            }
            json!({})
        }
        "system_reset" => {
            hub.host(HostAction::Reset);
            json!({})
        }
        "system_powerdown" => {
            // As QEMU: the event says the button was pressed, whatever the
            // guest then does with it.
            hub.emit("POWERDOWN", None);
            hub.host(HostAction::PowerButton);
            json!({})
        }
        "quit" => {
            hub.host(HostAction::Quit);
            json!({})
        }
        _ => return Err(QmpError::generic(format!("{name}: not handled"))),
    })
}

fn screendump(hub: &Hub, args: &Map<String, Value>) -> Result<Value, QmpError> {
    for k in args.keys() {
        if !matches!(k.as_str(), "filename" | "format" | "device" | "head") {
            return Err(QmpError::generic(format!("Parameter '{k}' is unexpected")));
        }
    }
    let Some(Value::String(file)) = args.get("filename") else {
        return Err(QmpError::generic("Parameter 'filename' is missing"));
    };
    let format = args.get("format").and_then(Value::as_str);
    let screen = hub
        .screendump()
        .ok_or_else(|| QmpError::generic("no display"))?;
    screen.screendump(file, format).map_err(QmpError::generic)?;
    Ok(json!({}))
}

fn cpus(hub: &Hub, info: &VmInfo) -> Value {
    let threads = hub.pause.threads();
    let per_socket = (info.smp.cores * info.smp.threads).max(1);
    let per_core = info.smp.threads.max(1);
    (0..info.smp.cpus)
        .map(|i| {
            let tid = threads.iter().find(|t| t.index == i).map_or(0, |t| t.tid);
            json!({
                "cpu-index": i,
                "qom-path": format!("/machine/unattached/device[{i}]"),
                "thread-id": tid,
                "props": {
                    "socket-id": i / per_socket,
                    "core-id": (i % per_socket) / per_core,
                    "thread-id": i % per_core,
                },
                "target": "x86_64",
            })
        })
        .collect()
}
