//! `-netdev user` through passt, with the probe guest: a `hostfwd` UDP
//! port on the namespace's loopback reaches the probe's UDP echo in the
//! guest (QEMU's slirp addressing: the guest is 10.0.2.15), on microvm and
//! q35; and a clear refusal when passt is not installed. Each test runs in
//! its own namespace with a veth uplink (passt needs a default route), so
//! nothing leaves it. The Linux guest's TCP/UDP to the host's loopback
//! over passt is in linux_net.rs.

use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use casemate_tests::netns::{finish, NetNs};
use casemate_tests::{bin, have, Report};

const FWD_PORT: u16 = 5007;

/// Sends datagrams to 127.0.0.1:FWD_PORT until one comes back; then `n`
/// more, each compared. Returns how many matched.
fn forwarded_echoes(n: usize) -> usize {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let to = ("127.0.0.1", FWD_PORT);
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    loop {
        s.send_to(b"casemate-user-hello", to).unwrap();
        if let Ok((len, _)) = s.recv_from(&mut buf) {
            assert_eq!(&buf[..len], b"casemate-user-hello");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "no echo through passt's hostfwd"
        );
    }
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    (0..n)
        .filter(|i| {
            let msg = format!("casemate-user-{i}-{}", "y".repeat(i * 200));
            s.send_to(msg.as_bytes(), to).unwrap();
            loop {
                match s.recv_from(&mut buf) {
                    Ok((len, _)) if &buf[..len] == b"casemate-user-hello" => continue,
                    Ok((len, _)) => return &buf[..len] == msg.as_bytes(),
                    Err(_) => return false,
                }
            }
        })
        .count()
}

fn hostfwd_reaches_the_probe(machine: &str) {
    let test = format!("hostfwd_reaches_the_probe on {machine}");
    if !have("passt") {
        println!("SKIP {test}: passt is not installed (scripts/setup.sh installs it)");
        return;
    }
    let Some(ns) = NetNs::new(&test) else {
        return;
    };
    ns.uplink();
    let device = if machine == "microvm" {
        "virtio-net-device,netdev=n0"
    } else {
        "virtio-net-pci,netdev=n0"
    };
    let child = ns.casemate(&[
        "-M",
        machine,
        "-netdev",
        &format!("user,id=n0,hostfwd=udp::{FWD_PORT}-:7"),
        "-device",
        device,
        "-append",
        "probe=net peer=10.0.2.2 ms=5000",
    ]);
    let ok = ns.enter(|| forwarded_echoes(3));
    let out = finish(child, Duration::from_secs(30));
    let r = Report::parse(&String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}\n{}",
        r.raw,
        String::from_utf8_lossy(&out.stderr)
    );
    r.assert_ok();
    println!(
        "{test}: {} echoes of 3 | {}",
        ok,
        r.raw.trim_end().replace('\n', " | ")
    );
    assert_eq!(ok, 3, "{}", r.raw);
}

#[test]
fn hostfwd_reaches_the_probe_on_microvm() {
    hostfwd_reaches_the_probe("microvm");
}

#[test]
fn hostfwd_reaches_the_probe_on_q35() {
    hostfwd_reaches_the_probe("q35");
}

#[test]
fn user_without_passt_is_refused_clearly() {
    let out = Command::new(bin("casemate"))
        .args([
            "-nic",
            "user,model=virtio-net-device",
            "-append",
            "probe=hello",
        ])
        .env("PATH", "/nonexistent")
        .stdin(Stdio::null())
        .output()
        .expect("casemate");
    let e = String::from_utf8_lossy(&out.stderr);
    println!("{e}");
    assert!(!out.status.success());
    assert!(e.contains("passt") && e.contains("not installed"), "{e}");
}

/// passt's pid: the child of `vmm` named passt (or passt.avx2, which
/// Debian's passt re-executes itself as).
fn passt_child(vmm: u32) -> Option<i32> {
    let kids = std::fs::read_to_string(format!("/proc/{vmm}/task/{vmm}/children")).ok()?;
    kids.split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim().starts_with("passt"))
        })
}

/// passt dies under a running VM: the worker logs the lost stream and
/// stops reading it, the VMM keeps running and the guest ends normally.
#[test]
fn passt_killed_under_a_running_vm() {
    let test = "passt_killed_under_a_running_vm";
    if !have("passt") {
        println!("SKIP {test}: passt is not installed");
        return;
    }
    let Some(ns) = NetNs::new(test) else {
        return;
    };
    ns.uplink();
    let child = ns.casemate(&[
        "-netdev",
        &format!("user,id=n0,hostfwd=udp::{FWD_PORT}-:7"),
        "-device",
        "virtio-net-device,netdev=n0",
        "-append",
        "probe=net peer=10.0.2.2 ms=4000",
    ]);
    assert_eq!(ns.enter(|| forwarded_echoes(1)), 1);
    let pid = passt_child(child.id()).expect("passt under the VMM");
    // SAFETY: kill(2) of the passt this test's VMM started, by its pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // The VMM reaps it while the guest still runs: no defunct passt.
    let reaped = gone_from_children(child.id(), pid, Duration::from_secs(3));
    let out = finish(child, Duration::from_secs(30));
    let r = Report::parse(&String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{test}: {stderr}");
    assert!(out.status.success(), "{}\n{stderr}", r.raw);
    r.assert_ok();
    assert!(
        reaped,
        "passt stayed a child (defunct) of the VMM\n{stderr}"
    );
    assert!(
        stderr.contains("passt(n0): passt was killed by signal 9"),
        "{stderr}"
    );
}

/// Whether `pid` leaves `vmm`'s children (reaped) within `limit`. A
/// zombie stays listed until its parent waits for it.
fn gone_from_children(vmm: u32, pid: i32, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        let kids =
            std::fs::read_to_string(format!("/proc/{vmm}/task/{vmm}/children")).unwrap_or_default();
        if !kids.split_whitespace().any(|p| p == pid.to_string()) {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// passt ends at start-up in a namespace with no default route ("No
/// external routable interface"): the VMM reaps it and says how it
/// ended, and the guest still runs to its end (its network has no peer).
#[test]
fn passt_that_exits_early_is_reaped() {
    let test = "passt_that_exits_early_is_reaped";
    if !have("passt") {
        println!("SKIP {test}: passt is not installed");
        return;
    }
    let Some(ns) = NetNs::new(test) else {
        return;
    };
    // No uplink: no default route in this namespace.
    let child = ns.casemate(&[
        "-netdev",
        "user,id=n0",
        "-device",
        "virtio-net-device,netdev=n0",
        "-append",
        "probe=net peer=10.0.2.2 ms=3000",
    ]);
    let vmm = child.id();
    let start = Instant::now();
    let mut seen = None;
    // passt's pid while it lives, then whether it left the VMM's children.
    while seen.is_none() && start.elapsed() < Duration::from_secs(2) {
        seen = passt_child(vmm);
        std::thread::sleep(Duration::from_millis(5));
    }
    let reaped = match seen {
        Some(pid) => gone_from_children(vmm, pid, Duration::from_secs(5)),
        // Already reaped before the first look.
        None => passt_child(vmm).is_none(),
    };
    let out = finish(child, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{test}: {stderr}");
    assert!(
        reaped,
        "passt stayed a child (defunct) of the VMM\n{stderr}"
    );
    assert!(
        stderr.contains("passt(n0): passt exited with status 1"),
        "{stderr}"
    );
}
