//! COM1 on a socket and on a pty (`-serial unix:...`, `-serial pty`,
//! `-chardev ... -serial chardev:ID`): the probe's echo mode reads lines
//! typed by the connected client and its report reaches that client.
//! The VM starts stopped (`-S`) and runs (QMP `cont`) only once the
//! client is there, so no output is lost to an empty socket; a line typed
//! afterwards comes back as `probe: echo line=...`, `quit` ends the probe
//! and the VMM exits 0.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use casemate_tests::{bin, kvm_or_skip, Scratch, Watchdog};

const LIMIT: Duration = Duration::from_secs(60);

/// casemate with the probe's echo mode, stopped, QMP on `qmp`.
fn casemate(qmp: &Path, serial: &[&str]) -> (Child, Watchdog) {
    let mut c = Command::new(bin("casemate"));
    c.args(["-M", "q35", "-append", "probe=echo", "-S", "-qmp"])
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .args(serial)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().expect("spawning casemate");
    let dog = Watchdog::arm(child.id(), LIMIT);
    (child, dog)
}

/// Connects once the socket exists (the VMM binds it at start-up).
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

/// Negotiates and sends `cont`.
fn qmp_cont(path: &Path) -> UnixStream {
    let s = connect(path);
    s.set_read_timeout(Some(LIMIT)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("\"QMP\""), "greeting: {line}");
    for cmd in ["qmp_capabilities", "cont"] {
        writeln!(w, "{{\"execute\":\"{cmd}\"}}").unwrap();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line.contains("\"return\"") {
                break;
            }
            assert!(line.contains("\"event\""), "{cmd}: {line}");
        }
    }
    s
}

/// Lines from the console side, until one equals `want`.
fn expect(lines: &mut impl Iterator<Item = String>, want: &str, seen: &mut Vec<String>) {
    for l in lines.by_ref() {
        let l = l.trim_end_matches('\r').to_string();
        seen.push(l.clone());
        if l == want {
            return;
        }
    }
    panic!("no line {want:?}; seen:\n{}", seen.join("\n"));
}

/// The echo conversation over `rx`/`tx`, then the exit.
fn converse(mut child: Child, dog: Watchdog, rx: impl Read, mut tx: impl Write) {
    let mut lines = BufReader::new(rx).lines().map_while(Result::ok);
    let mut seen = Vec::new();
    expect(&mut lines, "probe: echo state=ready", &mut seen);
    tx.write_all(b"hello over the link\r").unwrap();
    expect(
        &mut lines,
        "probe: echo line=\"hello over the link\"",
        &mut seen,
    );
    tx.write_all(b"quit\r").unwrap();
    expect(&mut lines, "probe: done status=ok", &mut seen);
    let status = child.wait().unwrap();
    assert!(!dog.disarm(), "casemate ran past {LIMIT:?}");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "exit {status:?}\n{err}");
    assert!(
        !out.contains("probe:"),
        "the console went to the link, not stdout: {out}"
    );
}

#[test]
fn probe_echoes_through_a_unix_socket_serial() {
    let test = "probe_echoes_through_a_unix_socket_serial";
    if !kvm_or_skip(test) {
        return;
    }
    let s = Scratch::new("serial-unix");
    let (con, qmp) = (s.path("con.sock"), s.path("qmp.sock"));
    let spec = format!("unix:{},server=on,wait=off", con.display());
    let (child, dog) = casemate(&qmp, &["-serial", &spec]);
    let link = connect(&con);
    link.set_read_timeout(Some(LIMIT)).unwrap();
    let _qmp = qmp_cont(&qmp);
    converse(child, dog, link.try_clone().unwrap(), link);
}

#[test]
fn probe_echoes_through_a_chardev_socket_serial() {
    let test = "probe_echoes_through_a_chardev_socket_serial";
    if !kvm_or_skip(test) {
        return;
    }
    let s = Scratch::new("serial-chardev");
    let (con, qmp) = (s.path("con.sock"), s.path("qmp.sock"));
    let spec = format!("socket,id=con0,path={},server=on,wait=off", con.display());
    let (child, dog) = casemate(&qmp, &["-chardev", &spec, "-serial", "chardev:con0"]);
    let link = connect(&con);
    link.set_read_timeout(Some(LIMIT)).unwrap();
    let _qmp = qmp_cont(&qmp);
    converse(child, dog, link.try_clone().unwrap(), link);
}

#[test]
fn probe_echoes_through_a_pty_serial() {
    let test = "probe_echoes_through_a_pty_serial";
    if !kvm_or_skip(test) {
        return;
    }
    let s = Scratch::new("serial-pty");
    let qmp = s.path("qmp.sock");
    let (mut child, dog) = casemate(&qmp, &["-serial", "pty"]);
    // QEMU's line, which scripts parse: the pty's name.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stderr);
        let mut first = String::new();
        let _ = r.read_line(&mut first);
        let _ = tx.send(first);
        let mut rest = String::new();
        let _ = r.read_to_string(&mut rest);
    });
    let first = rx.recv_timeout(LIMIT).expect("a line on stderr");
    let pts = first
        .strip_prefix("char device redirected to ")
        .and_then(|r| r.strip_suffix(" (label serial0)\n"))
        .unwrap_or_else(|| panic!("unexpected stderr line {first:?}"));
    assert!(pts.starts_with("/dev/pts/"), "{pts}");
    let pty: File = OpenOptions::new()
        .read(true)
        .write(true)
        .open(pts)
        .unwrap_or_else(|e| panic!("{pts}: {e}"));
    let _qmp = qmp_cont(&qmp);
    // stderr is drained by the thread; converse reads none of it.
    child.stderr = None;
    converse_pty(child, dog, pty);
}

/// As `converse`, for a child whose stderr a thread holds.
fn converse_pty(mut child: Child, dog: Watchdog, pty: File) {
    let mut lines = BufReader::new(pty.try_clone().unwrap())
        .lines()
        .map_while(Result::ok);
    let mut tx = pty;
    let mut seen = Vec::new();
    expect(&mut lines, "probe: echo state=ready", &mut seen);
    tx.write_all(b"hello over the pty\r").unwrap();
    expect(
        &mut lines,
        "probe: echo line=\"hello over the pty\"",
        &mut seen,
    );
    tx.write_all(b"quit\r").unwrap();
    expect(&mut lines, "probe: done status=ok", &mut seen);
    let status = child.wait().unwrap();
    assert!(!dog.disarm(), "casemate ran past {LIMIT:?}");
    assert!(status.success(), "exit {status:?}");
}
