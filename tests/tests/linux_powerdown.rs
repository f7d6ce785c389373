//! `system_powerdown` on a real Linux guest (q35): the kernel's ACPI
//! button driver sees the PM1 fixed power button and reports KEY_POWER on
//! its input device; the init's `powerbtn` mode reads it there, syncs and
//! powers off through ACPI S5. Over QMP (raw JSON on a unix socket) the
//! client sees POWERDOWN, then SHUTDOWN from the guest, and the VMM exits
//! 0. One Linux boot (30-100 s here); the same on QEMU 7.2.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use casemate_tests::linux::{artifacts_or_skip, pci_machine, LinuxBoot, BOOT_LIMIT};
use casemate_tests::{kvm_or_skip, qemu_or_skip, Scratch, Watchdog};

/// Console lines as they arrive, so the test can wait for one.
fn console(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a console line holding `want`; returns the lines seen.
fn wait_for(rx: &mpsc::Receiver<String>, want: &str, seen: &mut Vec<String>) -> bool {
    let end = Instant::now() + BOOT_LIMIT;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let hit = l.contains(want);
                seen.push(l);
                if hit {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

/// The `"event"` name of a QMP message, if it is an event.
fn event_name(msg: &str) -> Option<String> {
    let compact: String = msg.chars().filter(|c| !c.is_whitespace()).collect();
    let rest = compact.split("\"event\":\"").nth(1)?;
    Some(rest.split('"').next()?.to_string())
}

#[test]
fn q35_linux_powers_off_on_system_powerdown() {
    powerdown("q35_linux_powers_off_on_system_powerdown", false);
}

/// The same boot and checks on QEMU 7.2 (q35: SeaBIOS first, then the
/// same bzImage, initramfs and command line; ACPI S5 ends it with 0).
#[test]
fn same_linux_powerdown_passes_on_qemu() {
    powerdown("same_linux_powerdown_passes_on_qemu", true);
}

fn powerdown(test: &str, qemu: bool) {
    if !kvm_or_skip(test) || (qemu && !qemu_or_skip(test)) {
        return;
    }
    let Some(a) = artifacts_or_skip(test) else {
        return;
    };
    let s = Scratch::new(test);
    let sock = s.path("qmp.sock");
    let boot = LinuxBoot::new(pci_machine(&a, "q35"), &a).init_arg("casemate.mode=powerbtn");
    let mut cmd = if qemu {
        // Not LinuxBoot::qemu(): its isa-debug-exit would end QEMU before
        // the power-off this test is about.
        let mut c = Command::new("qemu-system-x86_64");
        c.args([
            "-enable-kvm",
            "-cpu",
            "host,-arch-capabilities",
            "-nodefaults",
        ])
        .args(["-serial", "stdio", "-M", "q35", "-smp", "1", "-m", "256M"])
        .arg("-kernel")
        .arg(&boot.machine.kernel)
        .arg("-initrd")
        .arg(&boot.initramfs)
        .args(["-append", &boot.append(), "-display", "none", "-no-reboot"]);
        c
    } else {
        boot.casemate()
    };
    cmd.arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawning casemate");
    let dog = Watchdog::arm(child.id(), BOOT_LIMIT + Duration::from_secs(60));
    let rx = console(&mut child);
    let mut seen = Vec::new();
    let waiting = wait_for(&rx, "init: powerbtn state=waiting", &mut seen);
    if !waiting {
        let _ = child.kill();
    }
    assert!(waiting, "the init never listened:\n{}", seen.join("\n"));

    let stream = UnixStream::connect(&sock).expect("connecting to the QMP socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut next = || {
        let mut l = String::new();
        r.read_line(&mut l).expect("reading the QMP socket");
        l
    };
    assert!(next().contains("\"QMP\""), "no greeting");
    w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")
        .unwrap();
    assert!(next().contains("\"return\""), "negotiation failed");
    w.write_all(b"{\"execute\":\"system_powerdown\"}\n")
        .unwrap();
    let mut events = Vec::new();
    let mut shutdown = String::new();
    while events.last().map(String::as_str) != Some("SHUTDOWN") {
        let msg = next();
        if msg.is_empty() {
            break;
        }
        if let Some(e) = event_name(&msg) {
            if e == "SHUTDOWN" {
                shutdown = msg.clone();
            }
            events.push(e);
        }
    }
    let status = child.wait().expect("waiting for casemate");
    let killed = dog.disarm();
    seen.extend(rx.try_iter());
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    let log = format!("{}\n{stderr}", seen.join("\n"));
    assert!(!killed, "casemate ran past its limit\n{log}");
    assert_eq!(events, ["POWERDOWN", "SHUTDOWN"], "{log}");
    let compact: String = shutdown.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(
        compact.contains("\"reason\":\"guest-shutdown\"") && compact.contains("\"guest\":true"),
        "{shutdown}"
    );
    assert!(
        seen.iter().any(|l| l == "init: powerbtn key=116"),
        "the init saw KEY_POWER\n{log}"
    );
    assert!(seen.iter().any(|l| l == "init: done status=ok"), "{log}");
    assert!(status.success(), "exit {status:?}\n{log}");
}
