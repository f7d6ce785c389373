//! `casemate-iobench`: one command that measures every I/O path the
//! probe guest drives, on Casemate and on QEMU 7.2 in the same run,
//! alternating, on copies of one raw image: IDE PIO and IDE DMA (pc),
//! AHCI (q35), virtio-blk over virtio-mmio (microvm) and over virtio-pci
//! (q35). For each path and workload it prints the median IOPS, MiB/s and
//! mean latency of each VMM and Casemate's ratio (a markdown table, or
//! `--json`). Progress goes to stderr.
//!
//! A skeleton of issue 19's benchmark: not yet here are the passthrough
//! rows (a row says why they are absent), the host's own io_uring
//! ceiling, host CPU seconds per GiB, exits per I/O, QD32 on the emulated
//! paths (they have no queue: IDE by design, AHCI without NCQ) and the
//! PNG/SVG plot.
//!
//! Usage: casemate-iobench [--runs N] [--ms MS] [--casemate PATH] [--json]

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const DISK_BYTES: u64 = 256 << 20;
const HELP: &str = "\
usage: casemate-iobench [--runs N] [--ms MS] [--casemate PATH] [--json]
Runs the probe's block benchmarks over IDE PIO, IDE DMA, AHCI, virtio-mmio
and virtio-pci on Casemate and QEMU 7.2, alternating, and prints medians
and ratios. Defaults: 3 runs of 1500 ms each, target/release/casemate.
";

/// One I/O path: the machine and drive the VMMs get, and the probe
/// command line that drives it.
struct IoPath {
    name: &'static str,
    machine: &'static str,
    /// `-drive` interface; for virtio QEMU gets an explicit `-device`.
    iface: &'static str,
    /// The probe mode, before the workload words.
    probe: &'static str,
    /// The queue depths the path has.
    qds: &'static [u32],
}

const PATHS: [IoPath; 5] = [
    IoPath {
        name: "ide-pio",
        machine: "pc",
        iface: "ide",
        probe: "ata-bench path=ide-pio",
        qds: &[1],
    },
    IoPath {
        name: "ide-dma",
        machine: "pc",
        iface: "ide",
        probe: "ata-bench path=ide-dma",
        qds: &[1],
    },
    IoPath {
        name: "ahci",
        machine: "q35",
        iface: "ide",
        probe: "ata-bench path=ahci",
        qds: &[1],
    },
    IoPath {
        name: "virtio-mmio",
        machine: "microvm",
        iface: "virtio",
        probe: "blk-bench",
        qds: &[1, 32],
    },
    IoPath {
        name: "virtio-pci",
        machine: "q35",
        iface: "virtio",
        probe: "blk-bench",
        qds: &[1, 32],
    },
];

/// Workloads: (mode, block size).
const WORKLOADS: [(&str, u32); 3] = [("randread", 4096), ("randwrite", 4096), ("seqread", 65536)];

#[derive(Clone, Copy, Default)]
struct Figures {
    iops: f64,
    mib_s: f64,
    lat_us: f64,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn check_args(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => return Some(HELP.into()),
            "--json" => {}
            "--runs" | "--ms" | "--casemate" => {
                if it.next().is_none() {
                    return Some(format!("{a} needs a value\n{HELP}"));
                }
            }
            _ => return Some(format!("unknown argument '{a}'\n{HELP}")),
        }
    }
    None
}

/// The figures of the `probe: blk-bench` line a run printed.
fn parse(text: &str) -> Option<Figures> {
    let line = text.lines().find(|l| l.starts_with("probe: blk-bench "))?;
    let get = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some(Figures {
        iops: get("iops")?,
        mib_s: get("mib_s")?,
        lat_us: get("mean_lat_us")?,
    })
}

fn run(mut c: Command) -> Result<Figures> {
    let out = c.output().context("starting the VMM")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse(&text).with_context(|| {
        format!(
            "no blk-bench line; console:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn median(mut v: Vec<Figures>) -> Figures {
    v.sort_by(|a, b| a.iops.total_cmp(&b.iops));
    v[v.len() / 2]
}

fn casemate_cmd(bin: &Path, p: &IoPath, img: &Path, append: &str) -> Command {
    let mut c = Command::new(bin);
    c.args(["-M", p.machine, "-m", "256M", "-drive"])
        .arg(format!("file={},format=raw,if={}", img.display(), p.iface))
        .args(["-append", append]);
    c
}

fn qemu_cmd(probe: &Path, p: &IoPath, img: &Path, append: &str) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-enable-kvm",
        "-M",
        p.machine,
        "-m",
        "256M",
        "-nodefaults",
        "-nographic",
    ])
    .args(["-serial", "stdio", "-no-reboot", "-kernel"])
    .arg(probe)
    .args([
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-append",
        &format!("{append} exit=debug"),
    ]);
    if p.iface == "virtio" {
        let dev = if p.machine == "microvm" {
            "virtio-blk-device"
        } else {
            "virtio-blk-pci"
        };
        if p.machine == "microvm" {
            c.args(["-global", "virtio-mmio.force-legacy=false"]);
        }
        c.arg("-drive")
            .arg(format!("id=d0,file={},format=raw,if=none", img.display()))
            .args(["-device", &format!("{dev},drive=d0")]);
    } else {
        c.arg("-drive")
            .arg(format!("file={},format=raw,if=ide", img.display()));
    }
    c
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(text) = check_args(&args) {
        if text == HELP {
            print!("{text}");
            return Ok(());
        }
        bail!("{text}");
    }
    let runs: usize = arg(&args, "--runs").map_or(Ok(3), |v| v.parse())?;
    let ms: u64 = arg(&args, "--ms").map_or(Ok(1500), |v| v.parse())?;
    let json = args.iter().any(|a| a == "--json");
    if runs == 0 {
        bail!("--runs must be at least 1");
    }
    let casemate =
        PathBuf::from(arg(&args, "--casemate").unwrap_or_else(|| "target/release/casemate".into()));
    if !casemate.exists() {
        bail!(
            "{} not found: run `cargo build --release -p casemate-vmm` first",
            casemate.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("casemate-iobench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let probe = dir.join("probe.elf");
    if !Command::new(&casemate)
        .arg("--write-probe")
        .arg(&probe)
        .status()?
        .success()
    {
        bail!("--write-probe failed");
    }
    let master = dir.join("master.raw");
    std::fs::write(
        &master,
        (0..DISK_BYTES).map(|i| (i >> 9) as u8).collect::<Vec<u8>>(),
    )?;
    let (cm_img, q_img) = (dir.join("casemate.raw"), dir.join("qemu.raw"));
    std::fs::copy(&master, &cm_img)?;
    std::fs::copy(&master, &q_img)?;

    let mut rows = Vec::new();
    for p in &PATHS {
        for &(mode, bs) in &WORKLOADS {
            for &qd in p.qds {
                let append = format!("probe={} mode={mode} bs={bs} qd={qd} ms={ms}", p.probe);
                eprintln!(
                    "iobench: {} {mode} bs={bs} qd={qd} ({runs} runs each)",
                    p.name
                );
                let (mut cm, mut q) = (Vec::new(), Vec::new());
                for _ in 0..runs {
                    cm.push(run(casemate_cmd(&casemate, p, &cm_img, &append))?);
                    q.push(run(qemu_cmd(&probe, p, &q_img, &append))?);
                }
                rows.push((p.name, mode, bs, qd, median(cm), median(q)));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if json {
        let v: Vec<_> = rows
            .iter()
            .map(|(path, mode, bs, qd, c, q)| {
                serde_json::json!({
                    "path": path, "mode": mode, "bs": bs, "qd": qd,
                    "casemate": {"iops": c.iops, "mib_s": c.mib_s, "mean_lat_us": c.lat_us},
                    "qemu": {"iops": q.iops, "mib_s": q.mib_s, "mean_lat_us": q.lat_us},
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("median of {runs} runs of {ms} ms, alternating Casemate and QEMU 7.2");
    println!("| path | mode | bs | qd | casemate IOPS | qemu IOPS | ratio | casemate lat us | qemu lat us |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (path, mode, bs, qd, c, q) in &rows {
        println!(
            "| {path} | {mode} | {bs} | {qd} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} |",
            c.iops,
            q.iops,
            c.iops / q.iops.max(1.0),
            c.lat_us,
            q.lat_us
        );
    }
    let why = if Path::new("/dev/vfio").exists() {
        "not built yet"
    } else {
        "no /dev/vfio on this host"
    };
    println!("| passthrough | - | - | - | absent: {why} | | | | |");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blk_bench_line_of_every_path_parses() {
        let f = parse("x\nprobe: blk-bench path=ahci mode=randread bs=4096 qd=1 ops=9 iops=654 mib_s=2.55 mean_lat_us=1526.8 elapsed_us=1 errors=0\n").unwrap();
        assert_eq!((f.iops, f.mib_s, f.lat_us), (654.0, 2.55, 1526.8));
        assert!(parse("probe: done status=ok").is_none());
    }

    #[test]
    fn unknown_arguments_do_not_start_the_benchmark() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_args(&v(&["--rusn", "3"]))
            .unwrap()
            .contains("unknown argument"));
        assert!(check_args(&v(&["--ms"])).unwrap().contains("needs a value"));
        assert_eq!(check_args(&v(&["--runs", "2", "--json"])), None);
    }
}
