//! Load: 50 jailed sandboxes started at once (`casemate-jailer --id load-N
//! --new-pid-ns`, so each jailer supervises its VM and cleans up), each
//! boots `probe=hello` and powers off; afterwards nothing is left: no VM
//! cgroups in any v1 hierarchy, no new mounts in this process's
//! mountinfo, no jail directories, no new fds, no child processes. Prints
//! start-to-first-serial-byte p50/p99 beside the same 50 started at once
//! unjailed (same static binary). Takes ~11 s here (2 cores, debug
//! binaries; ~7 s with a release static casemate and jailer, which it uses
//! when built), so it runs with the suite: `cargo test --test jail_load --
//! --nocapture` prints the numbers.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use casemate_tests::{bin, jail, kvm_or_skip, Scratch, Watchdog};

const N: usize = 50;

/// The static casemate and the jailer to use: release ones when built
/// (closer to production timings), else this profile's.
fn binaries(test: &str) -> Option<(PathBuf, PathBuf)> {
    let debug = jail::jail_or_skip(test)?;
    if let Some(rel) = jail::static_casemate_for("release") {
        let j = rel.with_file_name("casemate-jailer");
        if j.exists() {
            return Some((rel, j));
        }
    }
    Some((debug, bin("casemate-jailer")))
}

/// Start every command at once (one thread each, released together) and
/// return, per command, the time from its spawn to the first byte on its
/// stdout (the guest's serial console), after checking each ran the probe
/// to `done status=ok` and exited 0.
fn start_all(cmds: Vec<Command>) -> Vec<Duration> {
    let go = Arc::new(Barrier::new(cmds.len()));
    let threads: Vec<_> = cmds
        .into_iter()
        .map(|mut c| {
            let go = go.clone();
            std::thread::spawn(move || {
                c.stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                go.wait();
                let t0 = Instant::now();
                let mut child = c.spawn().unwrap();
                let dog = Watchdog::arm(child.id(), Duration::from_secs(120));
                let mut out = child.stdout.take().unwrap();
                let mut first = [0u8; 1];
                let n = out.read(&mut first).unwrap();
                let to_first = t0.elapsed();
                let mut console = String::from_utf8_lossy(&first[..n]).into_owned();
                out.read_to_string(&mut console).unwrap();
                let mut err = String::new();
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                let status = child.wait().unwrap();
                assert!(!dog.disarm(), "{c:?} hung");
                assert!(
                    n == 1 && status.success() && console.contains("probe: done status=ok"),
                    "{c:?}: {status:?}\n{console}\n{err}"
                );
                to_first
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// (p50, p99) by nearest rank.
fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    (rank(0.50), rank(0.99))
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn children() -> Vec<String> {
    let mut v = Vec::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let p = t.unwrap().path().join("children");
        v.extend(
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .split_whitespace()
                .map(String::from),
        );
    }
    v
}

/// Every `load-*` cgroup under `<hierarchy><own cgroup>/casemate` in the
/// v1 hierarchies (the jailer's default parent).
fn leftover_cgroups() -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut left = Vec::new();
    for line in own.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        let Some(ctrl) = ctrls.split(',').next().filter(|c| !c.is_empty()) else {
            continue; // the v2 line
        };
        let dir = Path::new("/sys/fs/cgroup")
            .join(ctrl.trim_start_matches("name="))
            .join(path.trim_start_matches('/'))
            .join("casemate");
        if let Ok(rd) = std::fs::read_dir(&dir) {
            left.extend(rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("load-")
            }));
        }
    }
    left
}

#[test]
fn fifty_jailed_sandboxes_at_once_leave_nothing_behind() {
    if !kvm_or_skip("jail_load") {
        return;
    }
    let Some((vmm, jailer)) = binaries("jail_load") else {
        return;
    };
    let s = Scratch::new("jail-load");
    let base = s.path("jails");
    let mounts = host_mounts();
    let (fds0, kids0) = (fds(), children());

    let jailed: Vec<Command> = (0..N)
        .map(|i| {
            let mut c = Command::new(&jailer);
            c.args(["--id", &format!("load-{i}"), "--exec-file"])
                .arg(&vmm)
                .args(["--uid", "65534", "--gid", "65534", "--new-pid-ns"])
                .arg("--chroot-base-dir")
                .arg(&base)
                .args(["--cgroup", "pids.max=64", "--"])
                .args(["-append", "probe=hello"]);
            c
        })
        .collect();
    let t = Instant::now();
    let j = percentiles(start_all(jailed));
    let jailed_wall = t.elapsed();

    assert_eq!(leftover_cgroups(), Vec::<PathBuf>::new(), "cgroups left");
    assert_eq!(host_mounts(), mounts, "mounts changed");
    let jails: Vec<_> = std::fs::read_dir(base.join("casemate"))
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(jails.is_empty(), "jail directories left: {jails:?}");
    assert_eq!(fds(), fds0, "fds left open in the test");
    assert_eq!(children(), kids0, "processes left");

    let plain: Vec<Command> = (0..N)
        .map(|_| {
            let mut c = Command::new(&vmm);
            c.args(["-append", "probe=hello"]);
            c
        })
        .collect();
    let t = Instant::now();
    let u = percentiles(start_all(plain));
    let plain_wall = t.elapsed();
    println!(
        "jail_load: {N} at once, {}: start -> first serial byte jailed p50 {:.1} ms p99 {:.1} ms \
         (all done in {:.2} s); unjailed p50 {:.1} ms p99 {:.1} ms (all done in {:.2} s)",
        vmm.display(),
        j.0.as_secs_f64() * 1e3,
        j.1.as_secs_f64() * 1e3,
        jailed_wall.as_secs_f64(),
        u.0.as_secs_f64() * 1e3,
        u.1.as_secs_f64() * 1e3,
        plain_wall.as_secs_f64(),
    );
}

/// This mount namespace's mounts, less the network namespaces bound under
/// /run/netns: other tests (and other users of the host) make and remove
/// those while this one runs, and the jailer never binds one.
fn host_mounts() -> String {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| {
            l.split(' ')
                .nth(4)
                .is_none_or(|m| !m.starts_with("/run/netns/"))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}
