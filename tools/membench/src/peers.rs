//! The VMMs under test, each timed from spawn to "ready to end": Casemate to
//! the probe's `done` line (its power-off follows), QEMU to its monitor
//! prompt (after `-S` prealloc), then told to `quit`. Also the 2 MiB
//! hugepage pool this bench raises for its hugetlb candidates.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Casemate,
    /// Casemate with `--thp off`: small pages, as the raw methods without
    /// THP use (informational; the goals use the default, THP on).
    CasemateNoThp,
    CasemateHugetlb,
    Qemu,
}

/// target/release/casemate next to this binary, or from the workspace root.
pub fn find_casemate() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let here = exe.parent().map(|d| d.join("casemate"));
    let candidates = [here, Some(PathBuf::from("target/release/casemate"))];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .context("target/release/casemate not found: cargo build --release -p casemate-vmm")
}

impl Peer {
    pub fn name(&self) -> &'static str {
        match self {
            Peer::Casemate => "casemate ram prealloc",
            Peer::CasemateNoThp => "casemate ram prealloc --thp off",
            Peer::CasemateHugetlb => "casemate memfd hugetlb-2M prealloc",
            Peer::Qemu => "qemu 7.2 ram prealloc (-S, quit)",
        }
    }

    pub fn run(&self, casemate: &Path) -> anyhow::Result<Duration> {
        match self {
            Peer::Casemate => run_casemate(casemate, RAM, &[]),
            Peer::CasemateNoThp => run_casemate(casemate, RAM, &["--thp", "off"]),
            Peer::CasemateHugetlb => run_casemate(
                casemate,
                "memory-backend-memfd,id=m0,size=4G,prealloc=on,hugetlb=on,hugetlbsize=2M",
                &[],
            ),
            Peer::Qemu => run_qemu(),
        }
    }
}

const RAM: &str = "memory-backend-ram,id=m0,size=4G,prealloc=on";

/// Timed from spawn to the moment the probe's `done` line arrives on the
/// serial pipe (COM1 output is flushed per byte; the ACPI power-off write
/// follows it). VM teardown and unmapping 4 GiB at exit come after that
/// and are not timed; the process is still reaped, and must exit 0.
fn run_casemate(bin: &Path, object: &str, extra: &[&str]) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut child = Command::new(bin)
        .args(extra)
        .args(["-m", "4G", "-object", object, "-M", "memory-backend=m0"])
        .args(["-append", "probe=hello"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning casemate")?;
    let out = BufReader::new(child.stdout.take().context("stdout")?);
    let mut ready = None;
    for line in out.lines() {
        if line?.starts_with("probe: done") {
            ready = Some(t0.elapsed());
        }
    }
    let o = child.wait_with_output()?;
    match ready {
        Some(t) if o.status.success() => Ok(t),
        _ => anyhow::bail!(
            "casemate {object} failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

fn run_qemu() -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-enable-kvm", "-M", "microvm", "-m", "4G"])
        .args(["-object", "memory-backend-ram,id=m0,size=4G,prealloc=on"])
        .args(["-machine", "memory-backend=m0", "-S"])
        .args(["-nodefaults", "-display", "none", "-monitor", "stdio"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning qemu-system-x86_64")?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    // The monitor prompt appears once the machine, prealloc included, is up.
    let ready = loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break None;
        }
        seen.extend_from_slice(&buf[..n]);
        if seen.windows(6).any(|w| w == b"(qemu)") {
            break Some(t0.elapsed());
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"quit\n");
    }
    let _ = out.read_to_end(&mut seen);
    let o = child.wait_with_output()?;
    ready.with_context(|| {
        format!(
            "qemu ended before its monitor prompt ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// Raises /proc/sys/vm/nr_hugepages for the run; restores it on drop.
pub struct HugePool {
    old: u64,
}

const NR: &str = "/proc/sys/vm/nr_hugepages";

fn read_u64(p: &str) -> anyhow::Result<u64> {
    Ok(std::fs::read_to_string(p)?.trim().parse()?)
}

impl HugePool {
    pub fn reserve(pages: u64) -> anyhow::Result<Self> {
        let old = read_u64(NR).context(NR)?;
        std::fs::write(NR, (old + pages).to_string()).context(NR)?;
        let pool = Self { old };
        let free = read_u64("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")?;
        if free < pages {
            anyhow::bail!("needed {pages} free 2 MiB pages, the kernel gave {free}");
        }
        Ok(pool)
    }
}

impl Drop for HugePool {
    fn drop(&mut self) {
        let _ = std::fs::write(NR, self.old.to_string());
    }
}
