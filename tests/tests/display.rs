//! The VNC display: `-vnc` serves the guest's screen to several RFB
//! clients at once (the tests' own client, tests/src/rfb.rs); a client
//! that stops reading holds up neither the others nor the VM; bad
//! options are refused by name.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use casemate_tests::rfb::{free_display, RfbClient};
use casemate_tests::{bin, casemate, kvm_or_skip, Watchdog};

/// Start casemate with `args`, piped.
fn spawn(args: &[&str]) -> Child {
    Command::new(bin("casemate"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning casemate")
}

/// Wait for the probe's first report line: the VNC listener is bound
/// before the guest runs, so it accepts from then on. The reader keeps
/// the console pipe open.
fn wait_report(child: &mut Child) -> BufReader<std::process::ChildStdout> {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = out.read_line(&mut line).unwrap_or(0);
        assert!(n > 0, "casemate ended before the probe reported");
        if line.starts_with("probe: ") {
            return out;
        }
    }
}

/// SIGTERM, then the exit status and stderr (within 60 s).
fn stop(child: Child) -> (Option<i32>, String) {
    // SAFETY: kill(2) on our own child, not reaped yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let dog = Watchdog::arm(child.id(), Duration::from_secs(60));
    let out = child.wait_with_output().unwrap();
    assert!(!dog.disarm(), "casemate did not end on SIGTERM");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn several_clients_see_the_screen_and_a_stalled_one_blocks_nothing() {
    if !kvm_or_skip("vnc clients") {
        return;
    }
    let n = free_display();
    let vnc = format!(":{n}");
    let mut child = spawn(&["-vnc", &vnc, "-append", "probe=spin ms=60000"]);
    let _out = wait_report(&mut child);
    let addr = format!("127.0.0.1:{}", 5900 + u32::from(n));

    // A client that asks for full frames and never reads them.
    let mut stalled = RfbClient::connect(&addr).expect("stalled client connects");
    for _ in 0..200 {
        stalled.request(false).unwrap();
    }
    // A client that vanishes mid-handshake.
    drop(std::net::TcpStream::connect(&addr).unwrap());
    let mut garbage = std::net::TcpStream::connect(&addr).unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();

    let mut shots = Vec::new();
    for _ in 0..3 {
        let mut c = RfbClient::connect(&addr).expect("client connects");
        assert_eq!(c.name, "casemate");
        shots.push(c.capture().expect("capture"));
    }
    for s in &shots {
        // No graphics device: QEMU's 640x480 "no display" size, black.
        assert_eq!((s.width, s.height), (640, 480));
        assert!(s.pixels.iter().all(|&p| p == 0));
    }
    let (code, err) = stop(child);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("seccomp") && !err.contains("SIGSYS"), "{err}");
}

#[test]
fn refuses_what_it_cannot_serve() {
    for (args, want) in [
        (&["-display", "gtk"][..], "headless"),
        (&["-display", "sdl"][..], "headless"),
        (&["-vnc", ":1,password=on"][..], "no authentication"),
        (&["-vnc", ":1,tls-creds=tls0"][..], "no authentication"),
        (&["-vnc", ":99999"][..], "display number"),
    ] {
        let out = casemate(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let n = l.local_addr().unwrap().port() - 5900;
    let out = casemate(&["-vnc", &format!(":{n}"), "-append", "probe=hello"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot listen"), "{err}");
}

#[test]
fn keys_typed_through_vnc_reach_the_guest() {
    if !kvm_or_skip("vnc keys") {
        return;
    }
    let n = free_display();
    for machine in ["microvm", "q35"] {
        let mut child = spawn(&[
            "-M",
            machine,
            "-vnc",
            &format!(":{n}"),
            "-append",
            "probe=kbd count=6",
        ]);
        let mut out = wait_report(&mut child);
        // The probe has drained the controller and polls it now.
        let mut line = String::new();
        while !line.starts_with("probe: kbd-ready") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "no kbd-ready");
        }
        let mut c = RfbClient::connect(&format!("127.0.0.1:{}", 5900 + u32::from(n))).unwrap();
        c.key(0x61).unwrap(); // a
        c.key(0xff52).unwrap(); // Up: an 0xe0-prefixed key
        let dog = Watchdog::arm(child.id(), Duration::from_secs(60));
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
        let done = child.wait_with_output().unwrap();
        assert!(!dog.disarm(), "{machine}: the probe did not finish");
        assert!(done.status.success(), "{machine}: {rest}");
        // a down, a up, Up down, Up up (set 1).
        assert!(
            rest.contains("probe: kbd bytes=30,158,224,72,224,200"),
            "{machine}: {rest}"
        );
        assert!(rest.contains("probe: done status=ok"), "{machine}: {rest}");
    }
}
