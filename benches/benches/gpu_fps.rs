//! Full-screen virtio-gpu updates per second as a VNC client receives
//! them, Casemate and QEMU 7.2 in one run: the probe's `gpu-bench` mode
//! flushes a changed 1280 x 800 frame as fast as the device completes
//! (transfer + flush of the whole screen), and the tests' RFB client
//! keeps one incremental request outstanding and counts the updates it
//! receives (Raw, 4 MB each) over a fixed window. Both VMMs run
//! `-M microvm` with virtio-gpu-device; alternate rounds, medians
//! printed. Not a criterion bench: the quantity is a rate over a window,
//! not the time of a repeatable call. Needs /dev/kvm; QEMU rows are
//! skipped with a reason when it is not installed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use casemate_tests::rfb::{free_display, RfbClient};
use casemate_tests::{bin, have, qemu_microvm_probe, Scratch};

const WINDOW: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;

fn casemate(n: u16) -> Command {
    let mut c = Command::new(bin("casemate"));
    c.args(["-device", "virtio-gpu-device", "-vnc", &format!(":{n}")])
        .args(["-append", "probe=gpu-bench ms=8000"]);
    c
}

fn qemu(probe: &str, n: u16) -> Command {
    let mut c = qemu_microvm_probe(probe, "1", "probe=gpu-bench ms=8000");
    c.args(["-global", "virtio-mmio.force-legacy=false"])
        .args(["-device", "virtio-gpu-device"])
        .args(["-vnc", &format!("127.0.0.1:{n}")]);
    c
}

/// Run one VMM, count full updates received over `WINDOW`; updates/s and
/// the guest's own flush rate.
fn measure(mut cmd: Command, n: u16) -> (f64, f64) {
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning the VMM");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("probe: gpu-bench-ready") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "no gpu-bench-ready");
    }
    let mut c = RfbClient::connect(&format!("127.0.0.1:{}", 5900 + u32::from(n))).unwrap();
    c.capture().unwrap();
    let t0 = Instant::now();
    let mut updates = 0u32;
    while t0.elapsed() < WINDOW {
        c.request(true).unwrap();
        if c.read_update().unwrap() > 0 {
            updates += 1;
        }
    }
    let rate = f64::from(updates) / t0.elapsed().as_secs_f64();
    let mut rest = String::new();
    let mut guest = 0.0;
    while out.read_line(&mut rest).unwrap_or(0) > 0 {
        if let Some(l) = rest.lines().find(|l| l.starts_with("probe: gpu-bench ")) {
            let kv = casemate_tests::parse_pairs(l.trim_start_matches("probe: gpu-bench "));
            let f: f64 = kv["frames"].parse().unwrap();
            let ms: f64 = kv["ms"].parse().unwrap();
            guest = f * 1000.0 / ms;
            break;
        }
        rest.clear();
    }
    let _ = child.kill();
    let _ = child.wait();
    (rate, guest)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if !std::path::Path::new("/dev/kvm").exists() {
        println!("SKIP gpu_fps: /dev/kvm is not available");
        return;
    }
    let s = Scratch::new("gpu-fps");
    let probe = have("qemu-system-x86_64").then(|| s.probe());
    if probe.is_none() {
        println!("SKIP qemu rows: qemu-system-x86_64 is not installed");
    }
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let n = free_display();
        ours.push(measure(casemate(n), n));
        if let Some(p) = &probe {
            let n = free_display();
            theirs.push(measure(qemu(p, n), n));
        }
    }
    let row = |name: &str, v: &[(f64, f64)]| {
        if v.is_empty() {
            return;
        }
        println!(
            "gpu_fps/{name}: client {:.1} full-screen updates/s, guest {:.1} flushes/s (median of {})",
            median(v.iter().map(|x| x.0).collect()),
            median(v.iter().map(|x| x.1).collect()),
            v.len()
        );
    };
    row("casemate", &ours);
    row("qemu-microvm", &theirs);
}
