//! Harness for process-level tests: finding the `casemate` binary, running
//! it with a watchdog, parsing probe reports, and tiny hand-made guests.
//!
//! Tests that need /dev/kvm call `kvm_or_skip()`: outside CI a missing KVM
//! prints a SKIP line; under `CI=true` it fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub mod ata_rig;
pub mod blkcheck;
pub mod elf;
pub mod jail;
pub mod linux;
pub mod netns;
pub mod rfb;
pub mod screen;

/// The workspace's target directory, found from this test executable
/// (target/<profile>/deps/<test>).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps")
        .to_path_buf()
}

/// A workspace binary built by `cargo build` (the README's test command
/// builds them before the tests run).
pub fn bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace` first (the README's test command does)",
        p.display()
    );
    p
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// False (after printing why) when the test cannot run here; panics in CI.
pub fn kvm_or_skip(test: &str) -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    assert!(
        !in_ci(),
        "{test}: /dev/kvm is missing and CI=true: KVM tests must run in CI"
    );
    println!("SKIP {test}: /dev/kvm is not available on this host");
    false
}

/// Whether an external program is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run a command to completion, killing it after `limit` (a hung VM fails
/// the test instead of hanging the suite).
pub fn run_with_limit(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let dog = Watchdog::arm(child.id(), limit);
    let out = child.wait_with_output().expect("waiting for child");
    let killed = dog.disarm();
    assert!(
        !killed,
        "{cmd:?} ran past {limit:?} and was killed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Kills a child process that outlives `limit`, so a hung VM fails its
/// test instead of hanging the suite. Disarm it before reaping the child,
/// so the pid cannot be recycled under it.
pub struct Watchdog {
    done: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
}

impl Watchdog {
    pub fn arm(pid: u32, limit: Duration) -> Self {
        let (done, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            if rx.recv_timeout(limit).is_err() {
                // SAFETY: kill(2) on the pid of our own child, which the
                // caller has not reaped yet (it disarms us first).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                true
            } else {
                false
            }
        });
        Self { done, thread }
    }

    /// Stop watching; true when the limit had already run out.
    pub fn disarm(self) -> bool {
        let _ = self.done.send(());
        self.thread.join().unwrap_or(false)
    }
}

/// Run `casemate ARGS` with a 60 s limit.
pub fn casemate(args: &[&str]) -> Output {
    let mut c = Command::new(bin("casemate"));
    c.args(args);
    run_with_limit(c, Duration::from_secs(60))
}

/// The probe's `probe: key=value ...` lines, parsed.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<BTreeMap<String, String>>,
    pub raw: String,
}

impl Report {
    /// The probe's lines (`probe: `).
    pub fn parse(console: &str) -> Self {
        Self::with_prefix(console, "probe: ")
    }

    /// Lines that start with `prefix` (`init: ` for the Linux guest's init);
    /// other console output (kernel messages) is kept only in `raw`.
    pub fn with_prefix(console: &str, prefix: &str) -> Self {
        let lines = console
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix(prefix))
            .map(parse_pairs)
            .collect();
        Self {
            lines,
            raw: console.to_string(),
        }
    }

    /// The last value of `key` on any line.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.lines
            .iter()
            .rev()
            .find_map(|l| l.get(key))
            .map(String::as_str)
    }

    pub fn want(&self, key: &str) -> &str {
        self.get(key)
            .unwrap_or_else(|| panic!("report has no {key}=\n{}", self.raw))
    }

    /// Panics unless the last line is `done status=ok`.
    pub fn assert_ok(&self) {
        let last = self
            .lines
            .last()
            .unwrap_or_else(|| panic!("no report lines at all:\n{}", self.raw));
        assert!(
            last.contains_key("done") && last.get("status").map(String::as_str) == Some("ok"),
            "guest did not finish with status=ok:\n{}",
            self.raw
        );
    }
}

/// `key=value` words; values may be double-quoted with `\"` and `\\`
/// escapes. A bare word is a key with an empty value.
pub fn parse_pairs(s: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ' ' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        let mut val = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => val.extend(chars.next()),
                        '"' => break,
                        c => val.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ' ' {
                        break;
                    }
                    val.push(c);
                    chars.next();
                }
            }
        }
        m.insert(key, val);
    }
    m
}

/// Boot the embedded probe with `extra` options; returns the parsed report
/// and the process output, asserting exit status 0.
pub fn boot_probe(extra: &[&str]) -> (Report, Output) {
    let out = casemate(extra);
    let console = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "casemate {extra:?} exited {:?}\nstdout:\n{console}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (Report::parse(&console), out)
}

/// QEMU 7.2 `-M microvm` (128 MiB) booting the probe ELF at `probe` with
/// `append`, ended through isa-debug-exit: exit status 1 means the probe
/// passed (`(0 << 1) | 1`).
pub fn qemu_microvm_probe(probe: &str, smp: &str, append: &str) -> Command {
    qemu_probe("microvm", probe, smp, append)
}

/// QEMU 7.2 on `machine` booting the probe with isa-debug-exit to end it.
pub fn qemu_probe(machine: &str, probe: &str, smp: &str, append: &str) -> Command {
    let mut c = qemu_probe_rebooting(machine, probe, smp, append);
    c.arg("-no-reboot");
    c
}

/// As `qemu_probe`, but a guest reset reboots the guest (through SeaBIOS
/// on pc/q35, seconds here) instead of ending QEMU: for `probe=blk-reboot`.
pub fn qemu_probe_rebooting(machine: &str, probe: &str, smp: &str, append: &str) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-enable-kvm", "-M", machine, "-m", "128M", "-smp", smp])
        .args(["-nodefaults", "-nographic", "-serial", "stdio"])
        .args(["-kernel", probe, "-append", &format!("{append} exit=debug")])
        .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]);
    c
}

/// False (after printing why) when qemu-system-x86_64 is not installed;
/// panics in CI, whose test command installs it.
pub fn qemu_or_skip(test: &str) -> bool {
    if have("qemu-system-x86_64") {
        return true;
    }
    assert!(
        !in_ci(),
        "{test}: qemu-system-x86_64 missing in CI: the test command installs it"
    );
    println!("SKIP {test}: qemu-system-x86_64 is not installed");
    false
}

/// A fresh scratch directory for one test, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(test: &str) -> Self {
        let p = std::env::temp_dir().join(format!("casemate-test-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create scratch dir");
        Self(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Write `bytes` to a file in the scratch dir and return its path as a string.
    pub fn file(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.path(name);
        std::fs::write(&p, bytes).expect("write scratch file");
        p.to_string_lossy().into_owned()
    }

    /// The embedded probe ELF, written out by `casemate --write-probe`.
    pub fn probe(&self) -> String {
        let p = self.path("probe.elf");
        let s = p.to_string_lossy().into_owned();
        let out = casemate(&["--write-probe", &s]);
        assert!(
            out.status.success(),
            "--write-probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        s
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_with_quotes() {
        let m = parse_pairs(r#"cmdline="a b \"c\" \\d" cpus=2 done"#);
        assert_eq!(m["cmdline"], r#"a b "c" \d"#);
        assert_eq!(m["cpus"], "2");
        assert_eq!(m["done"], "");
    }
}
