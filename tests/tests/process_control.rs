//! `-daemonize` and `-pidfile`: the foreground process exits 0 once the
//! daemon is set up; the pid file holds the daemon's pid, is locked (a
//! second VM with it is refused) and is removed when the daemon ends; a
//! daemon ignores SIGHUP (its `quit` SHUTDOWN says host-qmp-quit, not
//! host-signal).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use casemate_tests::{bin, kvm_or_skip, Scratch};

/// Poll `cond` until it holds, at most `limit` (a bounded wait on an
/// observable condition, not a sleep standing in for one).
fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Qmp(BufReader<UnixStream>);

impl Qmp {
    fn connect(path: &std::path::Path) -> Self {
        let s = UnixStream::connect(path).expect("connect to QMP");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut q = Qmp(BufReader::new(s));
        assert!(q.line().contains("\"QMP\""), "greeting");
        q
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.0.read_line(&mut l).expect("QMP line");
        l
    }

    /// Send `cmd`; the first line that is not an event.
    fn cmd(&mut self, cmd: &str) -> String {
        writeln!(self.0.get_mut(), "{{\"execute\": \"{cmd}\"}}").unwrap();
        loop {
            let l = self.line();
            if !l.contains("\"event\"") {
                return l;
            }
        }
    }
}

#[test]
fn daemon_with_pidfile_detaches_locks_ignores_hup_and_cleans_up() {
    if !kvm_or_skip("daemon_with_pidfile") {
        return;
    }
    let s = Scratch::new("daemon");
    let (pidfile, sock) = (s.path("vm.pid"), s.path("qmp.sock"));
    let qmp = format!("unix:{},server=on,wait=off", sock.display());
    let t0 = Instant::now();
    let out = Command::new(bin("casemate"))
        .args(["-daemonize", "-pidfile"])
        .arg(&pidfile)
        .args(["-qmp", &qmp, "-append", "probe=spin ms=60000"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "the parent waited for the VM"
    );
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .expect("pid file written")
        .trim()
        .parse()
        .expect("a pid");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("daemon alive");
    assert_eq!(comm.trim(), "casemate");

    let second = Command::new(bin("casemate"))
        .arg("-pidfile")
        .arg(&pidfile)
        .args(["-append", "probe=hello"])
        .output()
        .unwrap();
    assert!(
        !second.status.success(),
        "a second VM took the locked pid file"
    );
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("Cannot lock pid file"), "{err}");

    let mut q = Qmp::connect(&sock);
    assert!(q.cmd("qmp_capabilities").contains("return"));
    // SAFETY: signals the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    assert!(q.cmd("query-status").contains("\"running\""));
    assert!(q.cmd("quit").contains("return"));
    let shutdown = loop {
        let l = q.line();
        if l.contains("SHUTDOWN") {
            break l;
        }
    };
    assert!(
        shutdown.contains("host-qmp-quit"),
        "SIGHUP was not ignored: {shutdown}"
    );
    wait_for("the pid file's removal", Duration::from_secs(10), || {
        !pidfile.exists()
    });
}
