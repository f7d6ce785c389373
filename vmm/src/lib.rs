//! Casemate's VMM: config and CLI, the x86 platform, KVM state, the device
//! manager and the builder that turns a validated `VmConfig` into a running
//! VM. The `casemate` binary (main.rs) is a thin shell over `builder::run`.

pub mod arch;
pub mod boot;
pub mod builder;
pub mod cli;
pub mod config;
pub mod control;
pub mod devmgr;
pub mod display;
pub mod loader;
pub mod machine;
pub mod memory;
pub mod process;
pub mod qmp;
pub mod resources;
pub mod signals;
pub mod threads;
pub mod vstate;
pub mod workers;

/// The probe guest ELF, built from tools/probe by build.rs.
pub static PROBE_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe.elf"));
