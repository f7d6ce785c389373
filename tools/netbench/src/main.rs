//! `casemate-netbench`: the probe's `net-bench` on Casemate and on QEMU
//! 7.2 (`-netdev tap,vhost=off`: this host has no vhost-net) with the
//! same probe ELF on the same tap, alternating run by run, and the host's
//! own single-queue tap limit (`host::ceiling`) as the ceiling, in one
//! table: tx and rx frames/s at 64 and 1500 bytes, and 64 KiB TSO frames
//! (Mbit/s), medians of `--runs`.
//!
//! Everything happens in a network namespace of its own (`cm-netbench-
//! PID`, with tap `nb0` up and no address), deleted at the end: no frame
//! leaves it. The rx rows flood the tap from an AF_PACKET socket in that
//! namespace (this binary again, `--blast`) while the guest counts.
//!
//! Usage: casemate-netbench [--machine microvm|q35] [--runs N] [--ms MS]
//! [--casemate PATH]  (defaults: microvm, 3, 2000, target/release/casemate).
//! Must run as root (namespaces, taps).

mod host;

use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

const TAP: &str = "nb0";
const SIZES: [usize; 2] = [64, 1500];
const HELP: &str = "\
usage: casemate-netbench [--machine microvm|q35] [--runs N] [--ms MS] [--casemate PATH]
Runs the probe's net-bench (tx and rx, 64 and 1500 bytes) on Casemate and
QEMU 7.2 over one tap in a namespace of its own, alternating, with the
host's own tap limit as the ceiling. Defaults: microvm, 3 runs, 2000 ms,
target/release/casemate. Needs root.
";

struct Opts {
    machine: String,
    runs: usize,
    ms: u64,
    casemate: String,
}

fn opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        machine: "microvm".into(),
        runs: 3,
        ms: 2000,
        casemate: "target/release/casemate".into(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value\n{HELP}"))
        };
        match a.as_str() {
            "--machine" => o.machine = val()?,
            "--runs" => o.runs = val()?.parse().context("--runs")?,
            "--ms" => o.ms = val()?.parse().context("--ms")?,
            "--casemate" => o.casemate = val()?,
            _ => bail!("unknown argument '{a}'\n{HELP}"),
        }
    }
    if !matches!(o.machine.as_str(), "microvm" | "q35" | "pc") || o.runs == 0 || o.ms == 0 {
        bail!("bad option values\n{HELP}");
    }
    Ok(o)
}

/// The benchmark's namespace, deleted on drop.
struct Ns(String);

impl Ns {
    fn new() -> Result<Ns> {
        let ns = Ns(format!("cm-netbench-{}", std::process::id()));
        run(Command::new("ip").args(["netns", "add", &ns.0]))?;
        for a in [
            vec!["link", "set", "lo", "up"],
            vec!["tuntap", "add", "dev", TAP, "mode", "tap", "vnet_hdr"],
            vec!["link", "set", TAP, "up"],
        ] {
            run(Command::new("ip").args(["-n", &ns.0]).args(a))?;
        }
        Ok(ns)
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(c: &mut Command) -> Result<()> {
    let st = c.status().with_context(|| format!("running {c:?}"))?;
    if !st.success() {
        bail!("{c:?} failed: {st}");
    }
    Ok(())
}

/// frames/s from the probe's `net-bench` line.
fn fps(out: &std::process::Output) -> Result<f64> {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("probe: net-bench "))
        .with_context(|| {
            format!(
                "no net-bench line:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let v = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("fps="))
        .context("no fps=")?;
    Ok(v.parse()?)
}

fn vmm(ns: &Ns, o: &Opts, qemu: bool, probe: &str, append: &str) -> Command {
    let nic = if o.machine == "microvm" {
        "virtio-net-device,netdev=n0"
    } else {
        "virtio-net-pci,netdev=n0"
    };
    let netdev = format!("tap,id=n0,ifname={TAP},script=no,downscript=no,vhost=off");
    let mut c;
    if qemu {
        c = ns.cmd("qemu-system-x86_64");
        c.args(["-enable-kvm", "-M", &o.machine, "-m", "128M"])
            .args(["-nodefaults", "-nographic", "-serial", "stdio"])
            .args(["-kernel", probe, "-append", &format!("{append} exit=debug")])
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]);
        if o.machine == "microvm" {
            c.args(["-global", "virtio-mmio.force-legacy=false"]);
        }
    } else {
        c = ns.cmd(&o.casemate);
        c.args(["-M", &o.machine, "-m", "128M", "-append", append]);
    }
    c.args(["-netdev", &netdev, "-device", nic]);
    c.stdin(Stdio::null());
    c
}

/// One probe run; for rx with the blaster flooding the tap meanwhile.
fn once(ns: &Ns, o: &Opts, qemu: bool, probe: &str, dir: &str, size: usize) -> Result<f64> {
    let tx = dir != "rx";
    let append = format!(
        "probe=net-bench dir={dir} size={size} ms={} event_idx=1",
        o.ms
    );
    let mut blaster: Option<Child> = None;
    if !tx {
        let me = std::env::current_exe()?;
        let secs = (o.ms / 1000 + 30).to_string();
        blaster = Some(
            ns.cmd(me.to_str().context("exe path")?)
                .args(["--blast", TAP, &size.to_string(), &secs])
                .spawn()
                .context("starting the blaster")?,
        );
    }
    let out = vmm(ns, o, qemu, probe, &append)
        .output()
        .context("running the VMM");
    if let Some(mut b) = blaster {
        let _ = b.kill();
        let _ = b.wait();
    }
    fps(&out?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--blast") {
        let [_, ifname, size, secs] = args.as_slice() else {
            bail!("--blast IFNAME SIZE SECS");
        };
        return host::blast(ifname, size.parse()?, secs.parse()?);
    }
    if args.first().map(String::as_str) == Some("--ceiling") {
        let [_, ifname, dir, size, ms] = args.as_slice() else {
            bail!("--ceiling IFNAME tx|rx SIZE MS");
        };
        let f = host::ceiling(ifname, dir, size.parse()?, ms.parse()?)?;
        println!("ceiling fps={f:.0}");
        return Ok(());
    }
    if args.iter().any(|a| matches!(a.as_str(), "-h" | "--help")) {
        print!("{HELP}");
        return Ok(());
    }
    let o = opts(&args)?;
    let dir = std::env::temp_dir().join(format!("cm-netbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let probe = dir.join("probe.elf");
    let probe = probe.to_str().context("temp path")?.to_string();
    run(Command::new(&o.casemate).args(["--write-probe", &probe]))?;
    let ns = Ns::new()?;
    let me = std::env::current_exe()?;
    println!(
        "net-bench on {} ({} runs of {} ms each, medians; frames/s; Mbit/s of frame bytes)",
        o.machine, o.runs, o.ms
    );
    println!(
        "| row | casemate fps | qemu fps | casemate/qemu | host tap ceiling fps | casemate Mbit/s | qemu Mbit/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    let rows = [
        ("tx", SIZES[0]),
        ("tx", SIZES[1]),
        ("rx", SIZES[0]),
        ("rx", SIZES[1]),
        ("tso", host::TSO_FRAME),
    ];
    {
        for (dir, size) in rows {
            let (mut c, mut q) = (Vec::new(), Vec::new());
            for _ in 0..o.runs {
                c.push(once(&ns, &o, false, &probe, dir, size)?);
                q.push(once(&ns, &o, true, &probe, dir, size)?);
            }
            let out = ns
                .cmd(me.to_str().context("exe path")?)
                .args(["--ceiling", TAP, dir, &size.to_string(), &o.ms.to_string()])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let ceil: f64 = text
                .split_whitespace()
                .find_map(|w| w.strip_prefix("fps="))
                .with_context(|| {
                    format!("ceiling: {text}{}", String::from_utf8_lossy(&out.stderr))
                })?
                .parse()?;
            let (c, q) = (median(c), median(q));
            let mbit = |f: f64| f * size as f64 * 8.0 / 1e6;
            println!(
                "| {dir} {size} B | {c:.0} | {q:.0} | {:.2} | {ceil:.0} ({:.0} Mbit/s) | {:.0} | {:.0} |",
                c / q,
                mbit(ceil),
                mbit(c),
                mbit(q)
            );
        }
    }
    drop(ns);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
