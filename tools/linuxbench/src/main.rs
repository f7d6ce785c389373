//! `casemate-linuxbench`: the Linux guest tier (tools/linux-guest) booted on
//! Casemate and on QEMU 7.2, both `-M microvm` with the same vmlinux,
//! initramfs and command line, runs alternating between the two. For each
//! run: time from process start to the init's first console line (`init:`)
//! and to process exit. Prints medians and casemate/qemu ratios.
//!
//! Usage: casemate-linuxbench [--runs N] [--smp N] [--mem MIB] [--casemate PATH]
//! (defaults: 3 runs, 1 vCPU, 256 MiB, target/release/casemate). Run
//! tools/linux-guest/build.sh first.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use casemate_tests::linux::{microvm, Artifacts, LinuxBoot, BOOT_LIMIT};
use casemate_tests::Watchdog;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// One boot's times, from spawning the process.
struct Times {
    first_line: Duration,
    exit: Duration,
}

fn time_boot(mut c: Command, ok_status: i32) -> Result<Times> {
    let t0 = Instant::now();
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {c:?}"))?;
    let dog = Watchdog::arm(child.id(), BOOT_LIMIT);
    let mut first_line = None;
    let mut console = String::new();
    let stdout = child.stdout.take().context("child stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap_or_default();
        if first_line.is_none() && line.starts_with("init: ") {
            first_line = Some(t0.elapsed());
        }
        console.push_str(&line);
        console.push('\n');
    }
    let status = child.wait()?;
    let exit = t0.elapsed();
    if dog.disarm() {
        bail!("{c:?} ran past {BOOT_LIMIT:?}:\n{console}");
    }
    let done_ok = console
        .lines()
        .any(|l| l.trim_end() == "init: done status=ok");
    if status.code() != Some(ok_status) || !done_ok {
        bail!("{c:?} ended with {status} (want {ok_status} and done status=ok):\n{console}");
    }
    let first_line = first_line.context("no init: line")?;
    Ok(Times { first_line, exit })
}

/// One column of `Times`.
type Pick = fn(&Times) -> Duration;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runs: usize = arg(&args, "--runs").map_or(Ok(3), |v| v.parse())?;
    let smp: u32 = arg(&args, "--smp").map_or(Ok(1), |v| v.parse())?;
    let mem: u64 = arg(&args, "--mem").map_or(Ok(256), |v| v.parse())?;
    let casemate =
        PathBuf::from(arg(&args, "--casemate").unwrap_or_else(|| "target/release/casemate".into()));
    if !casemate.exists() {
        bail!(
            "{} not found: run `cargo build --release -p casemate-vmm` first",
            casemate.display()
        );
    }
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let a = Artifacts::find().map_err(anyhow::Error::msg)?;
    let boot = LinuxBoot::new(microvm(&a), &a)
        .smp(smp)
        .mem_mib(mem)
        .init_arg("casemate.mode=hello");
    let (mut cm, mut q) = (Vec::new(), Vec::new());
    for i in 0..runs {
        // Casemate: the i8042 reset ends it with 0; QEMU: isa-debug-exit 1.
        let c = time_boot(boot.casemate_at(&casemate), 0)?;
        let o = time_boot(boot.qemu(), 1)?;
        eprintln!(
            "run {}/{runs}: casemate {:.2} s / {:.2} s, qemu {:.2} s / {:.2} s (first line / exit)",
            i + 1,
            c.first_line.as_secs_f64(),
            c.exit.as_secs_f64(),
            o.first_line.as_secs_f64(),
            o.exit.as_secs_f64()
        );
        cm.push(c);
        q.push(o);
    }
    let med = |v: &[Times], f: Pick| median(v.iter().map(f).collect());
    println!("Linux guest, -M microvm, -smp {smp}, -m {mem}M, medians of {runs} alternating runs");
    println!("| from process start to | casemate (s) | qemu (s) | casemate/qemu |");
    println!("|---|---|---|---|");
    let rows: [(&str, Pick); 2] = [
        ("first init line", |t| t.first_line),
        ("process exit", |t| t.exit),
    ];
    for (name, f) in rows {
        let (a, b) = (med(&cm, f), med(&q, f));
        println!(
            "| {name} | {:.2} | {:.2} | {:.3} |",
            a.as_secs_f64(),
            b.as_secs_f64(),
            a.as_secs_f64() / b.as_secs_f64()
        );
    }
    Ok(())
}
