//! virtio-gpu 2D seen through VNC: the probe's `gpu` mode draws a known
//! pattern (tools/probe/src/probes/gpu.rs) and the tests' RFB client
//! captures exactly that pattern on microvm (virtio-mmio), pc and q35
//! (virtio-pci); `gpu-evil` gets every error it provokes, the memory cap
//! holds and the device draws afterwards; QEMU 7.2 shows the same screen
//! to the same client. One PNG per machine type is kept under
//! target/display-artefacts/ for a person to look at.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use casemate_tests::rfb::{free_display, RfbClient, Screen};
use casemate_tests::{bin, kvm_or_skip, qemu_or_skip, qemu_probe, target_dir, Scratch, Watchdog};

/// The probe's pattern (tools/probe/src/probes/gpu.rs), `w` x `h`.
fn pattern(w: u32, h: u32) -> Screen {
    let mut pixels = Vec::new();
    for y in 0..h {
        for x in 0..w {
            pixels.push(((x * 7) & 0xff) << 16 | ((y * 3) & 0xff) << 8 | ((x ^ y) & 0xff));
        }
    }
    Screen {
        width: w,
        height: h,
        pixels,
    }
}

fn spawn(mut c: Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {c:?}: {e}"))
}

/// Read the console until `probe: gpu-drawn`; the lines before it.
fn wait_drawn(child: &mut Child) -> (Vec<String>, BufReader<std::process::ChildStdout>) {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).unwrap_or(0);
        assert!(n > 0, "the VM ended before drawing: {lines:#?}");
        let done = line.starts_with("probe: gpu-drawn");
        assert!(!line.contains("status=fail"), "{line}: {lines:#?}");
        lines.push(line);
        if done {
            return (lines, out);
        }
    }
}

/// SIGTERM and reap within 60 s; the stderr.
fn stop(child: Child) -> String {
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let dog = Watchdog::arm(child.id(), Duration::from_secs(60));
    let out = child.wait_with_output().unwrap();
    assert!(!dog.disarm(), "did not end on SIGTERM");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run `cmd` (listening on VNC display `n`) until the probe has drawn,
/// capture the screen until it equals `want` (20 s at most), stop it.
fn capture(mut child: Child, n: u16, want: &Screen) -> (Screen, Vec<String>, String, u64) {
    let (lines, _out) = wait_drawn(&mut child);
    let addr = format!("127.0.0.1:{}", 5900 + u32::from(n));
    let mut c = RfbClient::connect(&addr).expect("connecting to the VNC server");
    let shot = c
        .capture_until(|s| s == want, Duration::from_secs(20))
        .expect("capture");
    let hwm = vm_hwm_kib(child.id());
    let err = stop(child);
    (shot, lines, err, hwm)
}

/// Peak resident memory of `pid` (VmHWM, KiB).
fn vm_hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn casemate_gpu(machine: &str, device: &str, append: &str, n: u16) -> Command {
    let mut c = Command::new(bin("casemate"));
    c.args(["-M", machine, "-device", device])
        .args(["-vnc", &format!(":{n}"), "-append", append]);
    c
}

/// Keep `s` as a PNG artefact and say where.
fn keep(s: &Screen, name: &str) {
    let dir = target_dir().join("display-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    s.write_png(&p);
    println!("screen captured: {}", p.display());
}

fn assert_same(got: &Screen, want: &Screen, who: &str) {
    assert_eq!((got.width, got.height), (want.width, want.height), "{who}");
    let bad = got
        .pixels
        .iter()
        .zip(&want.pixels)
        .position(|(a, b)| a != b);
    if let Some(i) = bad {
        let (x, y) = (i as u32 % want.width, i as u32 / want.width);
        panic!(
            "{who}: pixel ({x},{y}) is {:#08x}, the pattern has {:#08x}",
            got.pixels[i], want.pixels[i]
        );
    }
}

#[test]
fn the_pattern_drawn_through_virtio_gpu_is_captured_exactly() {
    if !kvm_or_skip("gpu capture") {
        return;
    }
    let want = pattern(256, 160);
    for (machine, device) in [
        ("microvm", "virtio-gpu-device"),
        ("pc", "virtio-gpu-pci"),
        ("q35", "virtio-gpu-pci"),
    ] {
        let n = free_display();
        let c = casemate_gpu(machine, device, "probe=gpu hold=60000", n);
        let (shot, lines, err, _) = capture(spawn(c), n, &want);
        let info = lines
            .iter()
            .find(|l| l.contains("xres="))
            .expect("display info line");
        assert!(
            info.contains("xres=1280 yres=800 enabled=1 edid_size=128 edid_header_ok=1"),
            "{info}"
        );
        assert_same(&shot, &want, machine);
        keep(&shot, &format!("gpu-{machine}.png"));
        assert!(!err.contains("SIGSYS") && !err.contains("refused"), "{err}");
    }
}

#[test]
fn gpu_evil_gets_its_errors_stays_capped_and_draws_after() {
    if !kvm_or_skip("gpu-evil") {
        return;
    }
    let want = pattern(256, 160);
    let n = free_display();
    let c = casemate_gpu(
        "q35",
        "virtio-gpu-pci,max_hostmem=32M",
        "probe=gpu-evil hold=60000",
        n,
    );
    let (shot, lines, err, hwm) = capture(spawn(c), n, &want);
    let sum = lines
        .iter()
        .find(|l| l.starts_with("probe: gpu-evil checks="))
        .unwrap_or_else(|| panic!("no summary: {lines:#?}"));
    // 28 refusals and successes in the table; 7 resources of 4 MiB fit
    // under 32 MiB with their bookkeeping, the 8th is refused.
    assert_eq!(sum.trim(), "probe: gpu-evil checks=28 capped_after=7");
    assert_same(&shot, &want, "after gpu-evil");
    // Guest RAM (128 MiB, mostly untouched) plus the 32 MiB cap plus the
    // VMM's own: far below what the refused resources would have taken.
    assert!(hwm < 160 * 1024, "VmHWM {hwm} KiB");
    // Guest errors are logged, but only a few times.
    assert!(
        err.lines().filter(|l| l.contains("refused")).count() <= 8,
        "{err}"
    );
}

#[test]
fn qemu_shows_the_same_screen() {
    if !kvm_or_skip("gpu qemu peer") || !qemu_or_skip("gpu qemu peer") {
        return;
    }
    let s = Scratch::new("gpu-qemu");
    let probe = s.probe();
    let want = pattern(256, 160);
    for (machine, device) in [("microvm", "virtio-gpu-device"), ("q35", "virtio-gpu-pci")] {
        let n = free_display();
        let ours = casemate_gpu(machine, device, "probe=gpu hold=60000", n);
        let (ours, ..) = capture(spawn(ours), n, &want);

        let n = free_display();
        let mut q = qemu_probe(machine, &probe, "1", "probe=gpu hold=60000");
        q.args(["-global", "virtio-mmio.force-legacy=false"]).args([
            "-device",
            device,
            "-vnc",
            &format!("127.0.0.1:{n}"),
        ]);
        let (theirs, ..) = capture(spawn(q), n, &want);
        keep(&theirs, &format!("gpu-{machine}-qemu.png"));
        assert_same(&theirs, &want, &format!("QEMU {machine}"));
        assert_eq!(ours, theirs, "{machine}");
    }
}
