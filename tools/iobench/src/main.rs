//! `casemate-iobench`: one command that measures every I/O path the
//! probe guest drives, on Casemate and on QEMU 7.2 in the same run,
//! alternating, on copies of one raw image (`cache=none` on both): IDE
//! PIO and IDE DMA (pc), AHCI (q35), virtio-blk over virtio-mmio
//! (microvm) and over virtio-pci (q35), virtio-blk served by the
//! vfio-user device process (q35, Casemate only), a row saying why
//! kernel VFIO is absent, and the host's own io_uring on the same kind of
//! file as the ceiling. It prints a markdown table (or `--json`) and
//! writes a PNG and an SVG plot; progress goes to stderr.
//!
//! Modules: `paths` (what each path is), `vm` (one VM run and what it
//! reported), `ceiling` (io_uring on the host), `table` (rows, table,
//! JSON), `plot` (plotters). CPU seconds per GiB and exits per I/O have
//! the boot's share taken out: each VMM also boots each path once with
//! `n=0` (no I/O), and that run's CPU time and exits are subtracted.

mod ceiling;
mod paths;
mod pin;
mod plot;
mod table;
mod vm;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use paths::{IoPath, PATHS};
use table::{Figures, Row, Workload};
use vm::{Sample, Tools};

const DISK_BYTES: u64 = 256 << 20;
const HELP: &str = "\
usage: casemate-iobench [--runs N] [--ms MS] [--casemate PATH] [--server PATH]
                        [--paths NAME,...] [--plot PREFIX] [--json]
                        [--vcpu-cpu N|none] [--qemu-iothread]
Runs the probe's block benchmarks over IDE PIO, IDE DMA, AHCI, virtio-mmio,
virtio-pci and vfio-user on Casemate and (all but vfio-user) QEMU 7.2,
alternating, plus the host's io_uring ceiling; prints medians and ratios
and writes PREFIX.png and PREFIX.svg. Defaults: 3 runs of 1500 ms,
target/release/casemate, casemate-vfio-user-blk next to it, every path,
--plot target/iobench. --paths also takes 'host' for the ceiling.
--vcpu-cpu pins every VM's vCPU thread (Casemate's and QEMU's alike) to
host CPU N; default 0 on a host with two CPUs or more, else none.
--qemu-iothread gives QEMU's virtio-blk an IOThread (polling with QEMU's
default poll-max-ns, as Casemate's block worker does); QEMU 7.2's IDE and
AHCI take none.
";

struct Opts {
    runs: usize,
    ms: u64,
    casemate: PathBuf,
    server: Option<PathBuf>,
    paths: Option<Vec<String>>,
    plot: PathBuf,
    json: bool,
    vcpu_cpu: Option<usize>,
    qemu_iothread: bool,
}

/// Parse the arguments; `Err` carries the message (the help text for
/// `--help`).
fn parse_args(args: &[String]) -> std::result::Result<Opts, String> {
    let mut o = Opts {
        runs: 3,
        ms: 1500,
        casemate: "target/release/casemate".into(),
        server: None,
        paths: None,
        plot: "target/iobench".into(),
        json: false,
        vcpu_cpu: (host_cpus() >= 2).then_some(0),
        qemu_iothread: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value\n{HELP}"))
        };
        match a.as_str() {
            "-h" | "--help" => return Err(HELP.into()),
            "--json" => o.json = true,
            "--qemu-iothread" => o.qemu_iothread = true,
            "--runs" => o.runs = val()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--ms" => o.ms = val()?.parse().map_err(|e| format!("--ms: {e}"))?,
            "--casemate" => o.casemate = val()?.into(),
            "--server" => o.server = Some(val()?.into()),
            "--plot" => o.plot = val()?.into(),
            "--vcpu-cpu" => {
                o.vcpu_cpu = match val()?.as_str() {
                    "none" => None,
                    n => match n.parse::<usize>() {
                        Ok(c) if c < host_cpus() => Some(c),
                        _ => {
                            return Err(format!(
                                "--vcpu-cpu: '{n}' is not a CPU of this host (0-{}) nor 'none'",
                                host_cpus() - 1
                            ))
                        }
                    },
                }
            }
            "--paths" => {
                let v: Vec<String> = val()?.split(',').map(str::to_string).collect();
                if let Some(bad) = v
                    .iter()
                    .find(|n| *n != "host" && !PATHS.iter().any(|p| p.name == *n))
                {
                    return Err(format!("--paths: unknown path '{bad}'\n{HELP}"));
                }
                o.paths = Some(v);
            }
            _ => return Err(format!("unknown argument '{a}'\n{HELP}")),
        }
    }
    if o.runs == 0 || o.ms == 0 {
        return Err("--runs and --ms must be at least 1".into());
    }
    Ok(o)
}

fn host_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Medians of `runs`, with the boot's CPU time and exits (`base`) taken
/// out of the per-GiB and per-I/O figures.
fn summarise(runs: &[Sample], base: &Sample, w: &Workload) -> Figures {
    let m = |g: fn(&Sample) -> f64| median(runs.iter().map(g).collect());
    let cpu_per_gib = runs
        .iter()
        .map(|s| {
            (s.cpu_s - base.cpu_s).max(0.0) / (s.ops * w.bs as f64 / (1u64 << 30) as f64).max(1e-12)
        })
        .collect();
    let exits: Option<Vec<f64>> = runs
        .iter()
        .map(|s| Some((s.exits? - base.exits?).max(0.0) / s.ops.max(1.0)))
        .collect();
    Figures {
        iops: m(|s| s.iops),
        mib_s: m(|s| s.mib_s),
        mean_lat_us: m(|s| s.mean_lat_us),
        p99_lat_us: m(|s| s.p99_lat_us),
        cpu_s_per_gib: Some(median(cpu_per_gib)),
        exits_per_io: exits.map(median),
    }
}

fn note(p: &IoPath, w: &Workload) -> String {
    let mut n = Vec::new();
    if !p.queued {
        n.push(if p.name == "ahci" {
            "QD1 only: no NCQ"
        } else {
            "QD1 only: IDE has no queue"
        });
    }
    if !p.on_qemu() {
        n.push("QEMU 7.2 has no vfio-user");
    }
    if w.mode == "seqread" && w.bs < 1 << 20 {
        n.push("64K requests (one PRD)");
    }
    n.join("; ")
}

fn bench_path(
    o: &Opts,
    t: &Tools,
    p: &IoPath,
    imgs: &[PathBuf; 2],
    rows: &mut Vec<Row>,
) -> Result<()> {
    let boot = Workload {
        mode: "randread",
        bs: 4096,
        qd: 1,
    };
    eprintln!(
        "iobench: {}: boot without I/O (CPU and exit baseline)",
        p.name
    );
    let base_c = vm::run(t, p, &imgs[0], &p.append(&boot, "n=0"), false)?;
    let base_q = if p.on_qemu() {
        Some(vm::run(t, p, &imgs[1], &p.append(&boot, "n=0"), true)?)
    } else {
        None
    };
    for w in p.workloads() {
        eprintln!(
            "iobench: {} {} ({} runs of {} ms each)",
            p.name,
            w.label(),
            o.runs,
            o.ms
        );
        let append = p.append(&w, &format!("ms={}", o.ms));
        let (mut c, mut q) = (Vec::new(), Vec::new());
        for _ in 0..o.runs {
            c.push(vm::run(t, p, &imgs[0], &append, false)?);
            if p.on_qemu() {
                q.push(vm::run(t, p, &imgs[1], &append, true)?);
            }
        }
        rows.push(Row {
            path: p.name.into(),
            work: w,
            casemate: Some(summarise(&c, &base_c, &w)),
            qemu: base_q.as_ref().map(|b| summarise(&q, b, &w)),
            note: note(p, &w),
        });
    }
    Ok(())
}

fn bench_host(o: &Opts, img: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let works = PATHS[4].workloads();
    for w in works {
        eprintln!(
            "iobench: {} {} ({} runs of {} ms)",
            plot::CEILING,
            w.label(),
            o.runs,
            o.ms
        );
        let runs: Vec<Figures> = (0..o.runs)
            .map(|_| ceiling::measure(img, &w, o.ms))
            .collect::<Result<_>>()?;
        let m = |g: fn(&Figures) -> f64| median(runs.iter().map(g).collect());
        rows.push(Row {
            path: plot::CEILING.into(),
            work: w,
            casemate: Some(Figures {
                iops: m(|f| f.iops),
                mib_s: m(|f| f.mib_s),
                mean_lat_us: m(|f| f.mean_lat_us),
                p99_lat_us: m(|f| f.p99_lat_us),
                cpu_s_per_gib: Some(m(|f| f.cpu_s_per_gib.unwrap_or(0.0))),
                exits_per_io: None,
            }),
            qemu: None,
            note: "no VM: io_uring, O_DIRECT (figures in the Casemate columns)".into(),
        });
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse_args(&args) {
        Ok(o) => o,
        Err(text) if text == HELP => {
            print!("{text}");
            return Ok(());
        }
        Err(text) => bail!("{text}"),
    };
    if !o.casemate.exists() {
        bail!(
            "{} not found: run `cargo build --release -p casemate-vmm` first",
            o.casemate.display()
        );
    }
    let server = o
        .server
        .clone()
        .unwrap_or_else(|| o.casemate.with_file_name("casemate-vfio-user-blk"));
    let want = |n: &str| o.paths.as_ref().is_none_or(|v| v.iter().any(|x| x == n));
    if want("vfio-user") && !server.exists() {
        bail!(
            "{} not found: run `cargo build --release -p casemate-vfio-user-blk` first (or leave vfio-user out of --paths)",
            server.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("casemate-iobench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let result = bench(&o, &dir, server, want);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn bench(o: &Opts, dir: &Path, server: PathBuf, want: impl Fn(&str) -> bool) -> Result<()> {
    let t = Tools {
        casemate: o.casemate.clone(),
        server,
        probe: dir.join("probe.elf"),
        dir: dir.to_path_buf(),
        vcpu_cpu: o.vcpu_cpu,
        qemu_iothread: o.qemu_iothread,
    };
    if !Command::new(&t.casemate)
        .arg("--write-probe")
        .arg(&t.probe)
        .status()?
        .success()
    {
        bail!("{} --write-probe failed", t.casemate.display());
    }
    let imgs = [dir.join("casemate.raw"), dir.join("qemu.raw")];
    let pattern: Vec<u8> = (0..DISK_BYTES).map(|i| (i >> 9) as u8).collect();
    for img in imgs.iter().chain([&dir.join("host.raw")]) {
        std::fs::write(img, &pattern).with_context(|| format!("writing {}", img.display()))?;
    }
    drop(pattern);
    let mut rows = Vec::new();
    for p in PATHS.iter().filter(|p| want(p.name)) {
        bench_path(o, &t, p, &imgs, &mut rows)?;
    }
    if want("vfio-user") {
        rows.push(Row {
            path: "kernel-vfio".into(),
            work: Workload {
                mode: "randread",
                bs: 4096,
                qd: 1,
            },
            casemate: None,
            qemu: None,
            note: paths::kernel_vfio_absent(),
        });
    }
    if want("host") {
        bench_host(o, &dir.join("host.raw"), &mut rows)?;
    }
    let header = format!(
        "median of {} runs of {} ms, Casemate and QEMU 7.2{} alternating, cache=none, {} MiB raw image",
        o.runs,
        o.ms,
        if o.qemu_iothread {
            " (virtio-blk with an IOThread)"
        } else {
            ""
        },
        DISK_BYTES >> 20
    );
    let [png, svg] = plot::write(
        &o.plot,
        &rows,
        "Casemate vs QEMU 7.2: I/O paths (log scale)",
    )?;
    eprintln!(
        "iobench: plot written to {} and {}",
        png.display(),
        svg.display()
    );
    if o.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&table::to_json(&rows, o.runs, o.ms))?
        );
    } else {
        print!("{}", table::markdown(&rows, &header));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unknown_arguments_do_not_start_the_benchmark() {
        let e = |a: &[&str]| parse_args(&v(a)).err().unwrap();
        assert!(e(&["--rusn", "3"]).contains("unknown argument"));
        assert!(e(&["--ms"]).contains("needs a value"));
        assert!(e(&["--paths", "ide-pio,scsi"]).contains("unknown path 'scsi'"));
        assert!(e(&["--runs", "0"]).contains("at least 1"));
        assert!(e(&["--vcpu-cpu", "4096"]).contains("not a CPU of this host"));
        assert!(e(&["--vcpu-cpu", "x"]).contains("not a CPU of this host"));
        assert_eq!(
            parse_args(&v(&["--vcpu-cpu", "none"]))
                .ok()
                .unwrap()
                .vcpu_cpu,
            None
        );
        let o = parse_args(&v(&[
            "--runs",
            "2",
            "--json",
            "--paths",
            "ahci,host",
            "--plot",
            "x/y",
        ]))
        .unwrap();
        assert_eq!((o.runs, o.json, o.plot), (2, true, PathBuf::from("x/y")));
        assert_eq!(o.paths.unwrap(), ["ahci", "host"]);
    }

    #[test]
    fn the_boot_is_taken_out_of_cpu_and_exits() {
        let w = Workload {
            mode: "randread",
            bs: 4096,
            qd: 1,
        };
        let base = Sample {
            cpu_s: 0.5,
            exits: Some(100.0),
            ..Sample::default()
        };
        // 262144 ops of 4 KiB = 1 GiB.
        let s = Sample {
            ops: 262144.0,
            iops: 1000.0,
            cpu_s: 2.5,
            exits: Some(100.0 + 524288.0),
            ..Sample::default()
        };
        let f = summarise(&[s, s, s], &base, &w);
        assert_eq!(f.cpu_s_per_gib, Some(2.0));
        assert_eq!(f.exits_per_io, Some(2.0));
        let q = summarise(
            &[Sample { exits: None, ..s }],
            &Sample {
                exits: None,
                ..base
            },
            &w,
        );
        assert_eq!(q.exits_per_io, None);
    }
}
