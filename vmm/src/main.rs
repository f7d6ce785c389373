//! `casemate`: parse the command line, validate, run the VM, map how it
//! ended to an exit status. Prints nothing on a clean run but the guest's
//! console; errors go to stderr as one line per cause.

use std::process::ExitCode;

use anyhow::Context;
use casemate_vmm::builder::{self, VmEnd};
use casemate_vmm::cli::{self, Command, HELP};
use casemate_vmm::config::validate::HostLimits;
use casemate_vmm::config::VmConfig;
use casemate_vmm::vstate::vm::host_memory;
use casemate_vmm::PROBE_ELF;

fn init_log(level: Option<&str>) -> anyhow::Result<()> {
    let level = match level.or(std::env::var("CASEMATE_LOG").ok().as_deref()) {
        None => log::LevelFilter::Warn,
        Some(l) => l
            .parse()
            .with_context(|| format!("--log: unknown level '{l}'"))?,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format_timestamp(None)
        .format_target(false)
        .init();
    Ok(())
}

fn run() -> anyhow::Result<ExitCode> {
    let cmd = cli::parse(std::env::args().skip(1))?;
    let from_file = matches!(cmd, Command::RunConfigFile { .. });
    let (config, log, notes) = match cmd {
        Command::Print(text) => {
            print!("{text}");
            return Ok(ExitCode::SUCCESS);
        }
        Command::Help => {
            print!("{HELP}");
            return Ok(ExitCode::SUCCESS);
        }
        Command::Version => {
            println!("casemate {}", env!("CARGO_PKG_VERSION"));
            return Ok(ExitCode::SUCCESS);
        }
        Command::WriteProbe(path) => {
            std::fs::write(&path, PROBE_ELF)
                .with_context(|| format!("writing the probe to {}", path.display()))?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::SeccompSelftest(role) => {
            let mode = cli::seccomp_mode_of(std::env::args().skip(1));
            let code =
                casemate_vmm::threads::selftest::run(&role, mode).map_err(anyhow::Error::msg)?;
            return Ok(ExitCode::from(code as u8));
        }
        Command::Run { config, log, notes } => (*config, log, notes),
        Command::RunConfigFile { path, log } => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading --config {}", path.display()))?;
            let config = VmConfig::from_json(&text)
                .with_context(|| format!("--config {}", path.display()))?;
            (config, log, Vec::new())
        }
    };
    init_log(log.as_deref())?;
    for n in notes {
        log::info!("{n}");
    }
    if config.kernel.is_none() && PROBE_ELF.is_empty() {
        anyhow::bail!("no -kernel given and this build has no embedded probe guest");
    }
    // Every config problem is reported before /dev/kvm is opened; KVM's
    // vCPU limit is checked when the builder opens it.
    let host = HostLimits {
        memory: host_memory(),
        max_vcpus: None,
    };
    let config = if from_file {
        config
            .validate(&host)
            .map_err(casemate_vmm::config::json::JsonProblems)?
    } else {
        config.validate(&host)?
    };
    Ok(match builder::run(config, PROBE_ELF)? {
        VmEnd::PowerOff | VmEnd::Reset | VmEnd::HostReset | VmEnd::Quit => ExitCode::SUCCESS,
        VmEnd::Signal(t) => {
            // As QEMU: a signal ends the VM like a power-off, with one line.
            eprintln!("casemate: {}", t.describe());
            ExitCode::SUCCESS
        }
        VmEnd::TripleFault { vcpu, regs } => {
            eprintln!("casemate: guest triple fault on vCPU {vcpu}; registers:\n{regs}");
            ExitCode::from(2)
        }
        VmEnd::Fatal { vcpu, why, regs } => {
            eprintln!("casemate: vCPU {vcpu} stopped: {why}; registers:\n{regs}");
            ExitCode::from(3)
        }
    })
}

fn main() -> ExitCode {
    let code = match run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("casemate: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    };
    // Everything is flushed and closed by now but the last VM's fd: hand
    // its teardown to a reaper so this process ends without waiting on it.
    casemate_vmm::vstate::reaper::finish();
    code
}
