//! Stand-in for `casemate` in the jailer's integration test: compiled by
//! `tests/jail.rs` with rustc as a static executable (the jail has no
//! /lib), std only. From inside the jail it reports, one `standin: ` line
//! each, what the test asserts: ids, privileges, what is visible, the
//! handed-over fds, cgroups and limits; then it exits with status 7.
//! It is a test input, not a Cargo target (Cargo does not build files in
//! subdirectories of tests/ other than main.rs).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

extern "C" {
    fn getuid() -> u32;
    fn getgid() -> u32;
    fn geteuid() -> u32;
    fn getegid() -> u32;
    fn getpid() -> i32;
    fn fcntl(fd: i32, cmd: i32, ...) -> i32;
    fn prctl(option: i32, ...) -> i32;
    fn signal(sig: i32, handler: extern "C" fn(i32)) -> usize;
    fn write(fd: i32, buf: *const u8, n: usize) -> isize;
    fn _exit(code: i32) -> !;
}

/// SIGTERM handler: as pid 1 of a pid namespace the stand-in receives the
/// supervisor's forwarded SIGTERM only because it handles it.
extern "C" fn on_term(sig: i32) {
    let msg = b"standin: got SIGTERM\n";
    // SAFETY (test program): write and _exit are async-signal-safe.
    unsafe {
        write(1, msg.as_ptr(), msg.len());
        _exit(128 + sig);
    }
}

const F_GETFD: i32 = 1;
const F_GETFL: i32 = 3;
const PR_GET_SECCOMP: i32 = 21;
const PR_CAPBSET_READ: i32 = 23;
const PR_GET_NO_NEW_PRIVS: i32 = 39;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = std::io::stdout();
    let mut o = out.lock();
    let mut say = |s: String| {
        let _ = writeln!(o, "standin: {s}");
    };
    say(format!("argv={args:?}"));
    // SAFETY (test program): plain libc getters without arguments.
    let (uid, gid, euid, egid, pid) =
        unsafe { (getuid(), getgid(), geteuid(), getegid(), getpid()) };
    say(format!("uid={uid} gid={gid} euid={euid} egid={egid}"));
    say(format!("pid={pid}"));
    say(format!("env_count={}", std::env::vars_os().count()));
    // Reported through prctl too, for a jail without /proc.
    // SAFETY (test program): query-only prctls.
    let (nnp, seccomp) = unsafe {
        (
            prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
            prctl(PR_GET_SECCOMP, 0, 0, 0, 0),
        )
    };
    // SAFETY (test program): query-only prctl.
    let bnd = (0..64)
        .filter(|c| unsafe { prctl(PR_CAPBSET_READ, *c, 0, 0, 0) } == 1)
        .count();
    say(format!(
        "prctl no_new_privs={nnp} seccomp={seccomp} capbnd_count={bnd}"
    ));
    match fs::read_to_string("/proc/self/status") {
        Ok(s) => {
            for line in s.lines() {
                let keys = [
                    "NoNewPrivs",
                    "CapInh",
                    "CapPrm",
                    "CapEff",
                    "CapBnd",
                    "CapAmb",
                    "Seccomp",
                    "Groups",
                ];
                if keys.iter().any(|k| line.starts_with(&format!("{k}:"))) {
                    say(format!(
                        "status {}",
                        line.split_whitespace().collect::<Vec<_>>().join(" ")
                    ));
                }
            }
        }
        Err(e) => say(format!("proc=absent ({e})")),
    }
    // The host binary is reachable only through /proc/self/exe (the jailer
    // execs it from an fd): it must not be writable from inside.
    match fs::OpenOptions::new().write(true).open("/proc/self/exe") {
        Ok(_) => say("exe_write=opened".into()),
        Err(e) => say(format!("exe_write=denied ({e})")),
    }
    say(format!(
        "passwd_visible={}",
        Path::new("/etc/passwd").exists()
    ));
    let mut root: Vec<String> = fs::read_dir("/")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    root.sort();
    say(format!("root_entries={}", root.join(",")));
    for dev in ["/dev/kvm", "/dev/urandom", "/dev/net/tun"] {
        match fs::metadata(dev) {
            Ok(m) if m.file_type().is_char_device() => {
                let (major, minor) = (
                    (m.rdev() >> 8) & 0xfff,
                    (m.rdev() & 0xff) | ((m.rdev() >> 12) & 0xfff00),
                );
                say(format!(
                    "dev {dev} {major}:{minor} owner={}:{} mode={:o}",
                    m.uid(),
                    m.gid(),
                    m.mode() & 0o777
                ));
            }
            Ok(_) => say(format!("dev {dev} not-a-char-device")),
            Err(_) => say(format!("dev {dev} absent")),
        }
    }
    // The fd sets: -add-fd fd=K,set=S,opaque=O.
    for w in args.windows(2) {
        if w[0] != "-add-fd" {
            continue;
        }
        let kv: Vec<(&str, &str)> = w[1].split(',').filter_map(|p| p.split_once('=')).collect();
        let get = |k: &str| {
            kv.iter()
                .find(|(x, _)| *x == k)
                .map(|(_, v)| *v)
                .unwrap_or("?")
        };
        let fd: i32 = get("fd").parse().unwrap_or(-1);
        // SAFETY (test program): fcntl queries; the fd is only borrowed.
        let (fl, fdfl) = unsafe { (fcntl(fd, F_GETFL), fcntl(fd, F_GETFD)) };
        let acc = match fl & 3 {
            0 => "ro",
            2 => "rw",
            _ if fl < 0 => "closed",
            _ => "wo",
        };
        let mut content = String::new();
        if fl >= 0 {
            // SAFETY (test program): borrow the fd without closing it.
            let mut f = ManuallyDrop::new(unsafe { File::from_raw_fd(fd) });
            let _ = f.read_to_string(&mut content);
        }
        say(format!(
            "fd={fd} set={} opaque={} access={acc} cloexec={} content={:?}",
            get("set"),
            get("opaque"),
            fdfl >= 0 && fdfl & 1 == 1,
            content.trim()
        ));
    }
    for a in &args {
        if a.contains("/dev/fdset/") {
            say(format!("fdset_arg={a}"));
        }
    }
    if let Ok(fds) = fs::read_dir("/proc/self/fd") {
        let mut n: Vec<i32> = fds
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        n.sort();
        say(format!("open_fds={n:?}"));
    }
    if let Ok(ns) = fs::read_link("/proc/self/ns/net") {
        say(format!("netns={}", ns.display()));
    }
    if let Ok(s) = fs::read_to_string("/proc/self/cgroup") {
        for line in s.lines() {
            say(format!("cgroup {line}"));
        }
    }
    if let Ok(s) = fs::read_to_string("/proc/self/limits") {
        for line in s
            .lines()
            .filter(|l| l.starts_with("Max open files") || l.starts_with("Max file size"))
        {
            say(format!(
                "limit {}",
                line.split_whitespace().collect::<Vec<_>>().join(" ")
            ));
        }
    }
    if args.iter().any(|a| a == "--wait-stdin") {
        // SAFETY (test program): installs a handler that only writes and exits.
        unsafe { signal(15, on_term) };
        say("ready".into());
        let _ = o.flush();
        drop(o);
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    }
    std::process::exit(7);
}
