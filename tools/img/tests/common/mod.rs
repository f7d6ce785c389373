//! Helpers shared by the newer casemate-img test files: a temp dir, running
//! a program under `timeout`, the qemu-utils skip rule (fail with CI=true)
//! and a QEMU VM that holds an image until dropped.

#![allow(dead_code)] // Each test file uses its own subset.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_casemate-img");

pub fn have(prog: &str, test: &str) -> bool {
    let ok = Command::new(prog)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: {prog} is missing and CI=true (install qemu-utils and qemu-system-x86)"
        );
        println!("SKIP {test}: {prog} not installed");
    }
    ok
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("casemate-img-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, f: &str) -> String {
        self.0.join(f).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(prog: &str, args: &[&str]) -> Output {
    let out = Command::new("timeout")
        .arg("60")
        .arg(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
    assert_ne!(out.status.code(), Some(124), "{prog} {args:?} timed out");
    out
}

pub fn ok(prog: &str, args: &[&str]) -> String {
    let out = run(prog, args);
    assert!(
        out.status.success(),
        "{prog} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `prog`, expects it to fail, returns its stderr.
pub fn fails(prog: &str, args: &[&str]) -> String {
    let out = run(prog, args);
    assert!(
        !out.status.success(),
        "{prog} {args:?} succeeded but must fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn allocated(path: &str) -> u64 {
    std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).unwrap()) * 512
}

/// `/proc/locks` lines (kind and byte range) on the file at `path`:
/// `("OFDLCK", "READ", 100, 101)`.
pub fn proc_locks(path: &str) -> Vec<(String, String, u64, u64)> {
    let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap());
    let text = std::fs::read_to_string("/proc/locks").unwrap();
    let mut v: Vec<_> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // "1: OFDLCK ADVISORY READ -1 fe:00:123 100 101"
            let file_ino: u64 = f.get(5)?.rsplit(':').next()?.parse().ok()?;
            (file_ino == ino).then(|| {
                (
                    f[1].to_string(),
                    f[3].to_string(),
                    f[6].parse().unwrap_or(0),
                    f[7].parse().unwrap_or(0),
                )
            })
        })
        .collect();
    v.sort_by_key(|l| l.2);
    v
}

/// A stopped (`-S`) QEMU VM with `drive` as a virtio disk, killed on drop.
pub struct QemuVm(Child);

impl QemuVm {
    /// Starts QEMU and waits until its locks on `image` in /proc/locks are
    /// the byte ranges `expect` (QEMU takes them in steps while it opens the
    /// drive); panics with what it saw if they never are.
    pub fn start(drive: &str, image: &str, expect: &[(u64, u64)]) -> QemuVm {
        let child = Command::new("qemu-system-x86_64")
            .args(["-S", "-nographic", "-nodefaults", "-monitor", "none"])
            .args(["-serial", "none", "-drive", drive])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qemu-system-x86_64");
        let mut vm = QemuVm(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let ranges =
            || -> Vec<(u64, u64)> { proc_locks(image).iter().map(|l| (l.2, l.3)).collect() };
        while ranges() != expect {
            if let Ok(Some(st)) = vm.0.try_wait() {
                panic!("qemu exited early: {st}");
            }
            assert!(
                Instant::now() < deadline,
                "qemu's locks on {image} are {:?}, expected {expect:?}",
                proc_locks(image)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        vm
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
