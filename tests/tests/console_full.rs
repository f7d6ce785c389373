//! A console nobody reads: with stdout a full pipe the vCPU blocks in its
//! serial output (the guest is held back, as under QEMU), yet QMP `stop`
//! and `quit` still work: the kick that stops the vCPU interrupts that
//! write, the byte is dropped, and the VMM exits 0 without the pipe ever
//! being read.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use casemate_tests::{bin, kvm_or_skip, Scratch, Watchdog};

const LIMIT: Duration = Duration::from_secs(60);

fn connect(path: &Path) -> UnixStream {
    let end = Instant::now() + LIMIT;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return s,
            Err(e) if Instant::now() > end => panic!("{}: {e}", path.display()),
            Err(_) => std::thread::yield_now(),
        }
    }
}

/// Bytes waiting in the pipe behind `fd`.
fn queued(fd: i32) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD");
    n as usize
}

#[test]
fn a_full_stdout_does_not_keep_the_vm_from_stopping_or_quitting() {
    let test = "a_full_stdout_does_not_keep_the_vm_from_stopping_or_quitting";
    if !kvm_or_skip(test) {
        return;
    }
    let s = Scratch::new("console-full");
    let qmp = s.path("qmp.sock");
    let mut child = Command::new(bin("casemate"))
        .args(["-append", "probe=count lines=100000000 period=0", "-qmp"])
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning casemate");
    let dog = Watchdog::arm(child.id(), LIMIT);
    let out = child.stdout.take().unwrap();
    let fd = out.as_raw_fd();
    // One page of pipe: it fills within a second of output.
    // SAFETY: F_SETPIPE_SZ on our end of the child's stdout pipe.
    let size = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, 4096) };
    assert!(size >= 4096, "F_SETPIPE_SZ: {size}");
    let size = size as usize;
    let end = Instant::now() + LIMIT;
    while queued(fd) < size {
        assert!(Instant::now() < end, "the pipe never filled");
        std::thread::sleep(Duration::from_millis(10));
    }

    let q = connect(&qmp);
    q.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = q.try_clone().unwrap();
    let mut r = BufReader::new(q);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("\"QMP\""), "{line}");
    let mut ask = |cmd: &str| -> String {
        writeln!(w, "{{\"execute\":\"{cmd}\"}}").unwrap();
        loop {
            let mut l = String::new();
            r.read_line(&mut l)
                .unwrap_or_else(|e| panic!("{cmd}: no answer: {e}"));
            assert!(!l.is_empty(), "{cmd}: the monitor closed");
            if !l.contains("\"event\"") {
                return l;
            }
        }
    };
    assert!(ask("qmp_capabilities").contains("\"return\""));
    assert!(ask("stop").contains("\"return\""));
    let status = ask("query-status");
    assert!(status.contains("\"paused\""), "{status}");
    assert!(ask("quit").contains("\"return\""));
    let st = child.wait().unwrap();
    assert!(!dog.disarm(), "casemate did not end after quit");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(st.success(), "exit {st:?}\n{err}");
    // Nothing was lost before the stop: the pipe holds the start of the
    // report, whole lines from the first.
    let mut first = String::new();
    BufReader::new(out).read_line(&mut first).unwrap();
    assert!(first.starts_with("probe: "), "{first:?}");
}
