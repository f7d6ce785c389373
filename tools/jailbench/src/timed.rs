//! The rows (how each configuration is started) and the timed runs: spawn
//! to the first byte on stdout (the guest's COM1) and to exit.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// One configuration under test.
pub struct Row {
    pub name: &'static str,
    /// The static casemate every row runs.
    pub vmm: PathBuf,
    jailer: Option<Jailer>,
    args: Vec<String>,
}

struct Jailer {
    path: PathBuf,
    base: PathBuf,
    pid_ns: bool,
}

/// Jail ids: unique within this process, so runs never collide.
static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

impl Row {
    pub fn all(vmm: &Path, jailer: &Path, kernel: &Path, base: &Path) -> Vec<Row> {
        let vm: Vec<String> = ["-m", "128M", "-kernel"]
            .iter()
            .map(|s| s.to_string())
            .chain([kernel.display().to_string()])
            .collect();
        let mut off = vm.clone();
        off.extend(["-sandbox".into(), "off".into()]);
        let jail = |pid_ns| {
            Some(Jailer {
                path: jailer.to_path_buf(),
                base: base.to_path_buf(),
                pid_ns,
            })
        };
        let row = |name, jailer, args: &Vec<String>| Row {
            name,
            vmm: vmm.to_path_buf(),
            jailer,
            args: args.clone(),
        };
        vec![
            row("unjailed", None, &vm),
            row("sandbox-off", None, &off),
            row("jailed-pidns", jail(true), &vm),
            row("jailed-exec", jail(false), &vm),
        ]
    }

    /// The command for one run, and the cleanup to run after it (a jail
    /// without a pid namespace has nobody left to remove it).
    pub fn command(&self) -> (Command, Option<Command>) {
        let Some(j) = &self.jailer else {
            let mut c = Command::new(&self.vmm);
            c.args(&self.args);
            return (c, None);
        };
        let id = format!(
            "jb{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let common = |c: &mut Command| {
            c.args(["--id", &id, "--exec-file"])
                .arg(&self.vmm)
                .arg("--chroot-base-dir")
                .arg(&j.base);
        };
        let mut c = Command::new(&j.path);
        common(&mut c);
        c.args(["--uid", "65534", "--gid", "65534"]);
        if j.pid_ns {
            c.arg("--new-pid-ns");
        }
        c.arg("--").args(&self.args);
        let cleanup = (!j.pid_ns).then(|| {
            let mut k = Command::new(&j.path);
            k.arg("--cleanup");
            common(&mut k);
            k
        });
        (c, cleanup)
    }
}

/// Sorted samples in milliseconds.
#[derive(Default)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn push(&mut self, ms: f64) {
        self.0.push(ms);
        self.0.sort_by(f64::total_cmp);
    }

    /// The `q`th percentile (nearest rank; 100 is the maximum).
    pub fn p(&self, q: usize) -> f64 {
        let n = self.0.len();
        let i = (q * n).div_ceil(100).clamp(1, n);
        self.0[i - 1]
    }
}

#[derive(Default)]
pub struct Times {
    pub first: Samples,
    pub exit: Samples,
}

/// Runs `cmd` once: (ms to the first stdout byte, ms to exit). Fails unless
/// the guest printed its `x` and the command exited 0.
pub fn once(mut cmd: Command) -> Result<(f64, f64)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t0 = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let mut out = child.stdout.take().context("piped stdout")?;
    let mut first = [0u8; 1];
    let n = out.read(&mut first).context("reading the console")?;
    let t_first = t0.elapsed();
    let mut rest = Vec::new();
    out.read_to_end(&mut rest).context("reading the console")?;
    let st = child.wait().context("waiting for the VMM")?;
    let t_exit = t0.elapsed();
    if n != 1 || first[0] != b'x' || !st.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        bail!("{cmd:?}: {st}, console {:?}, stderr {err}", &first[..n]);
    }
    Ok((t_first.as_secs_f64() * 1e3, t_exit.as_secs_f64() * 1e3))
}

/// Runs `c` and fails unless it exits 0.
pub fn must(mut c: Command) -> Result<()> {
    let out = c.output().with_context(|| format!("running {c:?}"))?;
    if !out.status.success() {
        bail!("{c:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// `runs` rounds, each running every row once in order, so all rows see
/// the same host state (load, free memory) over the run.
pub fn alternate(rows: &[Row], runs: usize) -> Result<Vec<Times>> {
    let mut times: Vec<Times> = rows.iter().map(|_| Times::default()).collect();
    for _ in 0..runs {
        for (row, t) in rows.iter().zip(&mut times) {
            let (cmd, cleanup) = row.command();
            let (first, exit) = once(cmd).with_context(|| row.name)?;
            if let Some(c) = cleanup {
                must(c)?;
            }
            t.first.push(first);
            t.exit.push(exit);
        }
    }
    Ok(times)
}
