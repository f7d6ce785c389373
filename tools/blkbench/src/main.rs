//! `casemate-blkbench`: the probe's `blk-bench` on Casemate and on QEMU 7.2,
//! both on the same machine type (`-M q35` by default: virtio-blk-pci;
//! `--machine microvm`: virtio-mmio), against copies of one raw image, runs
//! alternating between the two, medians and ratios printed.
//!
//! Usage: casemate-blkbench [--machine q35|pc|microvm] [--runs N] [--ops N]
//! [--casemate PATH] (defaults: q35, 5 runs, 20000 ops,
//! target/release/casemate). QEMU's microvm needs
//! `-global virtio-mmio.force-legacy=false` for modern virtio-mmio; on
//! pc/q35 QEMU boots the probe through SeaBIOS, which only delays the start:
//! the figures are measured inside the guest.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const MODES: [&str; 4] = ["seqread", "randread", "seqwrite", "randwrite"];
const DISK_BYTES: u64 = 256 << 20;

const HELP: &str = "\
usage: casemate-blkbench [--machine q35|pc|microvm] [--runs N] [--ops N] [--casemate PATH]
Runs the probe's blk-bench (seqread, randread, seqwrite, randwrite) on
Casemate and on QEMU 7.2, alternating, on copies of one raw image, and
prints medians and ratios. Defaults: q35, 5 runs, 20000 ops,
target/release/casemate.
";

/// Options the benchmark takes; anything else (a typo, `--help`) must not
/// start minutes of benchmarking.
const KNOWN: [&str; 4] = ["--machine", "--runs", "--ops", "--casemate"];

/// `Some(text)` when the arguments ask for help or are not understood:
/// print it instead of running.
fn help_or_misuse(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if matches!(a.as_str(), "-h" | "--help" | "help") {
            return Some(HELP.to_string());
        }
        if !KNOWN.contains(&a.as_str()) {
            return Some(format!("unknown argument '{a}'\n{HELP}"));
        }
        if it.next().is_none() {
            return Some(format!("{a} needs a value\n{HELP}"));
        }
    }
    None
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn run_probe(mut c: Command) -> Result<f64> {
    let out = c.output().context("starting the VMM")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("probe: blk-bench "))
        .with_context(|| {
            format!(
                "no blk-bench line; console:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let iops = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("iops="))
        .context("no iops= on the blk-bench line")?;
    Ok(iops.parse()?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match help_or_misuse(&args) {
        Some(text) if text == HELP => {
            print!("{text}");
            return Ok(());
        }
        Some(text) => bail!("{text}"),
        None => {}
    }
    let runs: usize = arg(&args, "--runs").map_or(Ok(5), |v| v.parse())?;
    let ops: u64 = arg(&args, "--ops").map_or(Ok(20_000), |v| v.parse())?;
    let machine = arg(&args, "--machine").unwrap_or_else(|| "q35".into());
    if !["q35", "pc", "microvm"].contains(&machine.as_str()) {
        bail!("--machine {machine}: choose q35, pc or microvm");
    }
    let casemate =
        PathBuf::from(arg(&args, "--casemate").unwrap_or_else(|| "target/release/casemate".into()));
    if !casemate.exists() {
        bail!(
            "{} not found: run `cargo build --release -p casemate-vmm` first",
            casemate.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("casemate-blkbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let probe = dir.join("probe.elf");
    let st = Command::new(&casemate)
        .arg("--write-probe")
        .arg(&probe)
        .status()?;
    if !st.success() {
        bail!("--write-probe failed");
    }
    // One image, filled so reads hit real data, copied for each VMM.
    let master = dir.join("master.raw");
    std::fs::write(
        &master,
        (0..DISK_BYTES).map(|i| (i >> 9) as u8).collect::<Vec<u8>>(),
    )?;
    let (cm_img, q_img) = (dir.join("casemate.raw"), dir.join("qemu.raw"));
    std::fs::copy(&master, &cm_img)?;
    std::fs::copy(&master, &q_img)?;
    println!("machine {machine}, bs 4096, qd 32, {ops} ops, median of {runs} runs");
    println!("| mode | casemate IOPS | qemu IOPS | casemate/qemu |");
    println!("|---|---|---|---|");
    for mode in MODES {
        let append = format!("probe=blk-bench mode={mode} bs=4096 qd=32 n={ops}");
        let (mut cm, mut q) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            cm.push(run_probe(casemate_cmd(
                &casemate, &machine, &cm_img, &append,
            ))?);
            q.push(run_probe(qemu_cmd(&probe, &machine, &q_img, &append))?);
        }
        let (a, b) = (median(cm), median(q));
        println!("| {mode} | {a:.0} | {b:.0} | {:.2} |", a / b);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn casemate_cmd(bin: &Path, machine: &str, img: &Path, append: &str) -> Command {
    let mut c = Command::new(bin);
    c.args(["-M", machine, "-m", "256M", "-drive"])
        .arg(format!(
            "file={},format=raw,if=virtio,cache=writeback",
            img.display()
        ))
        .args(["-append", append]);
    c
}

fn qemu_cmd(probe: &Path, machine: &str, img: &Path, append: &str) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-enable-kvm",
        "-M",
        machine,
        "-m",
        "256M",
        "-nodefaults",
        "-nographic",
    ])
    .args(["-serial", "stdio", "-no-reboot"]);
    if machine == "microvm" {
        c.args(["-global", "virtio-mmio.force-legacy=false"]);
    }
    c.arg("-kernel")
        .arg(probe)
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4", "-drive"])
        .arg(format!(
            "id=d0,file={},format=raw,if=none,cache=writeback",
            img.display()
        ))
        .args([
            "-device",
            if machine == "microvm" {
                "virtio-blk-device,drive=d0"
            } else {
                "virtio-blk-pci,drive=d0"
            },
            "-append",
            &format!("{append} exit=debug"),
        ]);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn help_and_unknown_arguments_do_not_run_the_benchmark() {
        assert_eq!(help_or_misuse(&v(&["--help"])).as_deref(), Some(HELP));
        assert_eq!(help_or_misuse(&v(&["-h"])).as_deref(), Some(HELP));
        let e = help_or_misuse(&v(&["--rusn", "3"])).unwrap();
        assert!(e.starts_with("unknown argument '--rusn'"), "{e}");
        assert!(help_or_misuse(&v(&["--runs"]))
            .unwrap()
            .contains("needs a value"));
        assert_eq!(
            help_or_misuse(&v(&["--runs", "3", "--machine", "pc"])),
            None
        );
    }
}
