//! Starting one benchmark VM (Casemate or QEMU 7.2, and the vfio-user
//! device process where the path needs one), waiting for it and reading
//! what it reported: the probe's `blk-bench` line, the host CPU time of
//! every process it took (`getrusage(RUSAGE_CHILDREN)` around the run)
//! and, for Casemate, its vCPUs' exits (the info-level "exits to the
//! VMM" lines). Each VM runs under `timeout` so a hung guest ends the run
//! with an error instead of hanging the benchmark.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::paths::{Attach, IoPath};

/// Seconds one VM may take, boot included.
const VM_TIMEOUT_S: u32 = 120;

/// The tools a run needs.
pub struct Tools {
    pub casemate: PathBuf,
    pub server: PathBuf,
    /// The probe ELF for QEMU (`casemate --write-probe`).
    pub probe: PathBuf,
    pub dir: PathBuf,
    /// The host CPU every vCPU thread is pinned to (`pin`).
    pub vcpu_cpu: Option<usize>,
    /// QEMU's virtio-blk runs in an IOThread (`--qemu-iothread`).
    pub qemu_iothread: bool,
}

/// What one run reported.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    pub ops: f64,
    pub iops: f64,
    pub mib_s: f64,
    pub mean_lat_us: f64,
    pub p99_lat_us: f64,
    pub cpu_s: f64,
    /// `None` for QEMU, which does not report them.
    pub exits: Option<f64>,
}

/// The figures of the `probe: blk-bench` line in `console`.
pub fn parse(console: &str) -> Option<Sample> {
    let line = console
        .lines()
        .find(|l| l.starts_with("probe: blk-bench "))?;
    let get = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some(Sample {
        ops: get("ops")?,
        iops: get("iops")?,
        mib_s: get("mib_s")?,
        mean_lat_us: get("mean_lat_us")?,
        p99_lat_us: get("p99_lat_us").unwrap_or(0.0),
        ..Sample::default()
    })
}

/// The sum of every vCPU's "exits to the VMM: N" log line.
pub fn exits(log: &str) -> Option<f64> {
    let mut total = None;
    for l in log.lines() {
        if let Some(n) = l.split("exits to the VMM: ").nth(1) {
            *total.get_or_insert(0.0) += n.trim().parse::<f64>().ok()?;
        }
    }
    total
}

fn children_cpu_s() -> f64 {
    // SAFETY: getrusage writes only the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN always exists.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// A `casemate-vfio-user-blk` serving `image` on one socket; it ends
/// when its VMM disconnects.
struct Server {
    child: Child,
    sock: PathBuf,
}

impl Server {
    fn start(bin: &Path, dir: &Path, image: &Path) -> Result<Server> {
        let sock = dir.join("vfu.sock");
        let _ = std::fs::remove_file(&sock);
        let mut child = Command::new(bin)
            .arg("--socket")
            .arg(&sock)
            .arg("--image")
            .arg(image)
            .args(["--format", "raw"])
            .env("CASEMATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut err = BufReader::new(child.stderr.take().context("server stderr")?);
        let mut line = String::new();
        loop {
            line.clear();
            if err
                .read_line(&mut line)
                .context("reading the server's log")?
                == 0
            {
                let _ = child.wait();
                bail!("{} ended before listening", bin.display());
            }
            if line.contains("listening on") {
                break;
            }
        }
        // Keep draining its log so it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = err.read_to_string(&mut sink);
        });
        Ok(Server { child, sock })
    }
}

fn casemate_cmd(t: &Tools, p: &IoPath, img: &Path, sock: Option<&Path>, append: &str) -> Command {
    let mut c = Command::new("timeout");
    c.arg(VM_TIMEOUT_S.to_string()).arg(&t.casemate);
    c.args(["-M", p.machine, "-m", "256M"]);
    match (p.attach, sock) {
        (Attach::VfioUser, Some(sock)) => {
            c.args(["-object", "memory-backend-memfd,id=mem,size=256M"])
                .args(["-machine", "memory-backend=mem", "-device"])
                .arg(format!("vfio-user-pci,socket={}", sock.display()));
        }
        _ => {
            let iface = if p.attach == Attach::Ide {
                "ide"
            } else {
                "virtio"
            };
            c.arg("-drive").arg(format!(
                "file={},format=raw,if={iface},cache=none",
                img.display()
            ));
        }
    }
    c.args(["-append", append]).env("CASEMATE_LOG", "info");
    c
}

fn qemu_cmd(t: &Tools, p: &IoPath, img: &Path, append: &str) -> Command {
    let mut c = Command::new("timeout");
    c.arg(VM_TIMEOUT_S.to_string()).arg("qemu-system-x86_64");
    c.args([
        "-enable-kvm",
        "-M",
        p.machine,
        "-m",
        "256M",
        "-nodefaults",
        "-nographic",
        // Names the vCPU thread "CPU 0/KVM", for `pin`.
        "-name",
        "iobench,debug-threads=on",
    ])
    .args(["-serial", "stdio", "-no-reboot", "-kernel"])
    .arg(&t.probe)
    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"])
    .arg("-append")
    .arg(format!("{append} exit=debug"));
    let drive = format!("file={},format=raw,cache=none", img.display());
    if p.attach == Attach::Virtio {
        let dev = if p.machine == "microvm" {
            c.args(["-global", "virtio-mmio.force-legacy=false"]);
            "virtio-blk-device"
        } else {
            "virtio-blk-pci"
        };
        let mut dev = format!("{dev},drive=d0");
        if t.qemu_iothread {
            c.args(["-object", "iothread,id=io0"]);
            dev.push_str(",iothread=io0");
        }
        c.arg("-drive")
            .arg(format!("id=d0,{drive},if=none"))
            .args(["-device", &dev]);
    } else {
        c.arg("-drive").arg(format!("{drive},if=ide"));
    }
    c
}

/// One VM run of `append` on `p`: Casemate when `qemu` is false.
pub fn run(t: &Tools, p: &IoPath, img: &Path, append: &str, qemu: bool) -> Result<Sample> {
    let before = children_cpu_s();
    let server = match (p.attach, qemu) {
        (Attach::VfioUser, false) => Some(Server::start(&t.server, &t.dir, img)?),
        _ => None,
    };
    let mut cmd = if qemu {
        qemu_cmd(t, p, img, append)
    } else {
        casemate_cmd(t, p, img, server.as_ref().map(|s| s.sock.as_path()), append)
    };
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|child| {
            let pinner = t.vcpu_cpu.map(|c| crate::pin::spawn(child.id(), c));
            let out = child.wait_with_output();
            if pinner.is_some_and(|h| !h.join().unwrap_or(false)) {
                eprintln!("iobench: the vCPU thread was not pinned in this run");
            }
            out
        });
    if let Some(mut s) = server {
        // It ends when the VMM's connection closes; if the VMM never
        // started, end it here.
        if out.is_err() {
            let _ = s.child.kill();
        }
        let _ = s.child.wait();
    }
    let out = out.context("starting the VMM")?;
    let cpu_s = children_cpu_s() - before;
    let console = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    let who = if qemu { "QEMU" } else { "Casemate" };
    let mut s = parse(&console).with_context(|| {
        format!(
            "{who} on {}: no blk-bench line ({}); console:\n{console}\n{log}",
            p.name, out.status
        )
    })?;
    s.cpu_s = cpu_s;
    s.exits = if qemu { None } else { exits(&log) };
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_blk_bench_line_of_every_path_parses() {
        let s = parse("x\nprobe: blk-bench path=ahci mode=randread bs=4096 qd=1 ops=9 iops=654 mib_s=2.55 mean_lat_us=1526.8 p99_lat_us=2001.5 elapsed_us=1 errors=0\n").unwrap();
        assert_eq!(
            (s.ops, s.iops, s.mib_s, s.mean_lat_us, s.p99_lat_us),
            (9.0, 654.0, 2.55, 1526.8, 2001.5)
        );
        assert!(parse("probe: done status=ok").is_none());
    }

    #[test]
    fn qemu_iothread_goes_to_virtio_blk_only() {
        let args = |name: &str, iothread: bool| {
            let t = Tools {
                casemate: "c".into(),
                server: "s".into(),
                probe: "p".into(),
                dir: "d".into(),
                vcpu_cpu: None,
                qemu_iothread: iothread,
            };
            let p = crate::paths::PATHS.iter().find(|p| p.name == name).unwrap();
            let c = qemu_cmd(&t, p, Path::new("i.raw"), "probe=x");
            c.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        for path in ["virtio-pci", "virtio-mmio"] {
            let a = args(path, true);
            assert!(a.contains("-object iothread,id=io0"), "{a}");
            assert!(a.contains(",drive=d0,iothread=io0"), "{a}");
            assert!(!args(path, false).contains("iothread"));
        }
        assert!(!args("ahci", true).contains("iothread"));
    }

    #[test]
    fn exits_add_up_over_vcpus() {
        let log = "[INFO ] vcpu0 exits to the VMM: 605\n[INFO ] other\n[INFO ] vcpu1 exits to the VMM: 5\n";
        assert_eq!(exits(log), Some(610.0));
        assert_eq!(exits("nothing"), None);
    }
}
