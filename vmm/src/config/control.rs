//! How the VM is controlled from outside: QMP and HMP monitors, `-S`,
//! `-name`, `-pidfile`, `-daemonize`. Plain data; the sockets are opened
//! by `qmp::listen` and served by `qmp::server`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Process control and monitors (`-qmp`, `-monitor`, `-mon`, `-S`, ...).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Every monitor, in command-line order.
    pub monitors: Vec<MonitorConfig>,
    /// `-S`: vCPUs do not run until `cont`.
    pub start_paused: bool,
    /// `-name NAME`: `query-name`.
    pub name: Option<String>,
    /// `-name ...,process=NAME`: the main thread's name (`comm`, as `ps`
    /// shows it). Other threads are always named (`cm-vcpu0`, ...), as
    /// QEMU's `debug-threads=on`.
    pub process_name: Option<String>,
    /// `-pidfile PATH`: written and locked at start, removed at exit.
    pub pidfile: Option<PathBuf>,
    /// `-daemonize`: detach from the terminal once set up.
    pub daemonize: bool,
}

/// One monitor: where it listens and which protocol it speaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    pub endpoint: Endpoint,
    pub mode: MonitorMode,
}

/// A listening socket (server=on, wait=off) or the standard streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
    Stdio,
}

/// QMP (JSON, `mode=control`) or HMP (human, `mode=readline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MonitorMode {
    Control,
    Readline,
}
