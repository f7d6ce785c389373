//! COM1 on a socket and on a pty (`-serial unix:...`, `-serial pty`,
//! `-chardev ... -serial chardev:ID`): the probe's echo mode reads lines
//! typed by the connected client and its report reaches that client.
//! The VM starts stopped (`-S`) and runs (QMP `cont`) only once the
//! client is there, so no output is lost to an empty socket; a line typed
//! afterwards comes back as `probe: echo line=...`, `quit` ends the probe
//! and the VMM exits 0. The same checks pass against QEMU 7.2.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use casemate_tests::{bin, kvm_or_skip, qemu_or_skip, Scratch, Watchdog};

const LIMIT: Duration = Duration::from_secs(60);

/// The VMM under test: Casemate, or QEMU 7.2 running the same probe.
#[derive(Clone, Copy, PartialEq)]
enum Vmm {
    Casemate,
    Qemu,
}

impl Vmm {
    /// Skips (false) when the VMM cannot run here.
    fn ready(self, test: &str) -> bool {
        kvm_or_skip(test) && (self == Vmm::Casemate || qemu_or_skip(test))
    }
}

/// The probe's echo mode on q35, stopped (`-S`), QMP on `qmp`.
fn start(vmm: Vmm, s: &Scratch, qmp: &Path, serial: &[&str]) -> (Child, Watchdog) {
    let mut c = match vmm {
        Vmm::Casemate => {
            let mut c = Command::new(bin("casemate"));
            c.args(["-M", "q35", "-append", "probe=echo"]);
            c
        }
        Vmm::Qemu => {
            // isa-debug-exit ends QEMU with 1 when the probe passed.
            let mut c = Command::new("qemu-system-x86_64");
            c.args(["-enable-kvm", "-M", "q35", "-m", "128M", "-nodefaults"])
                .args(["-display", "none", "-no-reboot", "-kernel", &s.probe()])
                .args(["-append", "probe=echo exit=debug"])
                .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=4"]);
            c
        }
    };
    c.args(["-S", "-qmp"])
        .arg(format!("unix:{},server=on,wait=off", qmp.display()))
        .args(serial)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = c.spawn().expect("spawning the VMM");
    let dog = Watchdog::arm(child.id(), LIMIT);
    (child, dog)
}

/// The exit status that means the probe passed.
fn passed(vmm: Vmm, status: std::process::ExitStatus) -> bool {
    match vmm {
        Vmm::Casemate => status.success(),
        Vmm::Qemu => status.code() == Some(1),
    }
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
fn converse(vmm: Vmm, mut child: Child, dog: Watchdog, rx: impl Read, mut tx: impl Write) {
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
    assert!(passed(vmm, status), "exit {status:?}\n{err}");
    assert!(
        !out.contains("probe:"),
        "the console went to the link, not stdout: {out}"
    );
}

fn unix_socket(vmm: Vmm, test: &str) {
    if !vmm.ready(test) {
        return;
    }
    let s = Scratch::new(test);
    let (con, qmp) = (s.path("con.sock"), s.path("qmp.sock"));
    let spec = format!("unix:{},server=on,wait=off", con.display());
    let (child, dog) = start(vmm, &s, &qmp, &["-serial", &spec]);
    let link = connect(&con);
    link.set_read_timeout(Some(LIMIT)).unwrap();
    let _qmp = qmp_cont(&qmp);
    converse(vmm, child, dog, link.try_clone().unwrap(), link);
}

fn chardev_socket(vmm: Vmm, test: &str) {
    if !vmm.ready(test) {
        return;
    }
    let s = Scratch::new(test);
    let (con, qmp) = (s.path("con.sock"), s.path("qmp.sock"));
    let spec = format!("socket,id=con0,path={},server=on,wait=off", con.display());
    let (child, dog) = start(
        vmm,
        &s,
        &qmp,
        &["-chardev", &spec, "-serial", "chardev:con0"],
    );
    let link = connect(&con);
    link.set_read_timeout(Some(LIMIT)).unwrap();
    let _qmp = qmp_cont(&qmp);
    converse(vmm, child, dog, link.try_clone().unwrap(), link);
}

fn tcp_socket(vmm: Vmm, test: &str) {
    if !vmm.ready(test) {
        return;
    }
    let s = Scratch::new(test);
    let qmp = s.path("qmp.sock");
    // A port free a moment ago; the VMM binds it again.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spec = format!("tcp:127.0.0.1:{port},server=on,wait=off");
    let (child, dog) = start(vmm, &s, &qmp, &["-serial", &spec]);
    let end = Instant::now() + LIMIT;
    let link = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(l) => break l,
            Err(e) if Instant::now() > end => panic!("127.0.0.1:{port}: {e}"),
            Err(_) => std::thread::yield_now(),
        }
    };
    link.set_read_timeout(Some(LIMIT)).unwrap();
    let _qmp = qmp_cont(&qmp);
    converse(vmm, child, dog, link.try_clone().unwrap(), link);
}

fn pty(vmm: Vmm, test: &str) {
    if !vmm.ready(test) {
        return;
    }
    let s = Scratch::new(test);
    let qmp = s.path("qmp.sock");
    let (mut child, dog) = start(vmm, &s, &qmp, &["-serial", "pty"]);
    // QEMU's line on stdout (qemu_printf), which scripts parse: the
    // pty's name.
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("char device redirected to ") {
                let _ = tx.send(line);
            }
        }
    });
    let first = rx.recv_timeout(LIMIT).expect("the pty's name on stdout");
    let pts = first
        .strip_prefix("char device redirected to ")
        .and_then(|r| r.strip_suffix(" (label serial0)"))
        .unwrap_or_else(|| panic!("unexpected stderr line {first:?}"));
    assert!(pts.starts_with("/dev/pts/"), "{pts}");
    let pty: File = OpenOptions::new()
        .read(true)
        .write(true)
        .open(pts)
        .unwrap_or_else(|e| panic!("{pts}: {e}"));
    let _qmp = qmp_cont(&qmp);
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
    assert!(!dog.disarm(), "the VMM ran past {LIMIT:?}");
    assert!(passed(vmm, status), "exit {status:?}");
}

#[test]
fn probe_echoes_through_a_unix_socket_serial() {
    unix_socket(Vmm::Casemate, "probe_echoes_through_a_unix_socket_serial");
}

#[test]
fn probe_echoes_through_a_chardev_socket_serial() {
    chardev_socket(
        Vmm::Casemate,
        "probe_echoes_through_a_chardev_socket_serial",
    );
}

#[test]
fn probe_echoes_through_a_tcp_serial() {
    tcp_socket(Vmm::Casemate, "probe_echoes_through_a_tcp_serial");
}

#[test]
fn probe_echoes_through_a_pty_serial() {
    pty(Vmm::Casemate, "probe_echoes_through_a_pty_serial");
}

#[test]
fn same_serial_checks_pass_on_qemu() {
    unix_socket(Vmm::Qemu, "qemu_unix_socket_serial");
    chardev_socket(Vmm::Qemu, "qemu_chardev_socket_serial");
    tcp_socket(Vmm::Qemu, "qemu_tcp_serial");
    pty(Vmm::Qemu, "qemu_pty_serial");
}
