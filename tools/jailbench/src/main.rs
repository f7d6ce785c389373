//! `casemate-jailbench`: what a jailed start costs, beside an unjailed one,
//! in one run on the same binaries (a driver, not a timed test: it asserts
//! only that every VM printed its byte and exited 0).
//!
//! Rows, all booting the tiny PVH guest of benches/tiny (one byte to COM1,
//! then ACPI power-off) with 128 MiB:
//! - `unjailed`: `casemate -kernel tiny.elf` (seccomp and Landlock on);
//! - `sandbox-off`: the same with `-sandbox off`;
//! - `jailed-pidns`: under `casemate-jailer --new-pid-ns` (the jailer
//!   supervises, cleans up and exits with the VM);
//! - `jailed-exec`: under `casemate-jailer` without a pid namespace (the
//!   jailer becomes the VMM; `--cleanup` runs after, outside the timing).
//!
//! Per row, over `--runs` alternating runs: p50 (and p25/p75) from spawn to
//! the first byte on stdout and to exit, and the VMM's peak RSS (see
//! `rss`: VmHWM of the VMM's own image at its exit, read under ptrace in
//! separate runs so tracing never touches the timings). Then `--load` VMs
//! started at once, jailed (`--new-pid-ns`) and unjailed: p50/p99 spawn →
//! first byte.
//!
//! Needs root (the jailer), /dev/kvm, `as`/`ld` (to build the guest) and
//! a static casemate (a jail has no /lib); defaults are the release builds:
//! target/x86_64-unknown-linux-gnu/release/casemate and
//! target/release/casemate-jailer.

mod guest;
mod load;
mod rss;
mod timed;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use timed::Row;

/// What to run and how often.
struct Opts {
    vmm: PathBuf,
    jailer: PathBuf,
    runs: usize,
    load: usize,
}

const USAGE: &str = "usage: casemate-jailbench [--vmm STATIC_CASEMATE] [--jailer PATH] \
                     [--runs N (20)] [--load N (50, 0 skips)]";

fn parse() -> Result<Opts> {
    // target/release/casemate-jailbench → target/
    let exe = std::env::current_exe().context("locating this executable")?;
    let target = exe
        .parent()
        .and_then(|p| p.parent())
        .context("this executable is not under target/<profile>/")?;
    let mut o = Opts {
        vmm: target.join("x86_64-unknown-linux-gnu/release/casemate"),
        jailer: target.join("release/casemate-jailer"),
        runs: 20,
        load: 50,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--vmm" => o.vmm = val()?.into(),
            "--jailer" => o.jailer = val()?.into(),
            "--runs" => o.runs = val()?.parse().context("--runs")?,
            "--load" => o.load = val()?.parse().context("--load")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {a}\n{USAGE}"),
        }
    }
    for p in [&o.vmm, &o.jailer] {
        if !p.exists() {
            bail!(
                "{} does not exist (build the static casemate with RUSTFLAGS=\"-C \
                 target-feature=+crt-static\" cargo build --release -p casemate-vmm --bin \
                 casemate --target x86_64-unknown-linux-gnu, and cargo build --release -p \
                 casemate-jailer)",
                p.display()
            );
        }
    }
    if o.runs == 0 {
        bail!("--runs must be at least 1");
    }
    Ok(o)
}

/// The 1-minute load average: timings here swing with what else runs.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn main() -> Result<()> {
    let o = parse()?;
    // SAFETY: geteuid only reads the caller's effective uid.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the jailer needs root");
    }
    let scratch = guest::Scratch::new()?;
    let kernel = guest::tiny(&scratch)?;
    let rows = Row::all(&o.vmm, &o.jailer, &kernel, &scratch.base());
    println!(
        "tiny guest, 128 MiB, {} alternating runs per row; vmm {}; load average {}",
        o.runs,
        o.vmm.display(),
        loadavg()
    );
    println!(
        "{:<13} {:>28} {:>10} {:>14}",
        "row", "first byte p25/p50/p75 ms", "exit p50", "peak RSS KiB"
    );
    let times = timed::alternate(&rows, o.runs)?;
    for (row, t) in rows.iter().zip(&times) {
        let peak = rss::peak(row).with_context(|| format!("peak RSS of {}", row.name))?;
        println!(
            "{:<13} {:>8.2} {:>8.2} {:>8.2}    {:>9.2}    {:>11}",
            row.name,
            t.first.p(25),
            t.first.p(50),
            t.first.p(75),
            t.exit.p(50),
            peak
        );
    }
    if o.load > 0 {
        println!("{} VMs started at once: spawn -> first byte, ms", o.load);
        for row in rows.iter().filter(|r| load::ROWS.contains(&r.name)) {
            let t = load::at_once(row, o.load)?;
            println!(
                "{:<13} p50 {:>8.2}  p99 {:>8.2}  max {:>8.2}",
                row.name,
                t.p(50),
                t.p(99),
                t.p(100)
            );
        }
    }
    println!("load average at the end {}", loadavg());
    Ok(())
}
