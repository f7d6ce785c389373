//! Screens for tests: the probe's drawing pattern, running a VM until
//! it reports it has drawn, capturing its VNC screen with the tests' RFB
//! client (`rfb.rs`), comparing, and keeping PNG artefacts under
//! target/display-artefacts/.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::rfb::{RfbClient, Screen};
use crate::{target_dir, Watchdog};

/// The probe's pattern (tools/probe/src/probes/gpu.rs), `w` x `h`.
pub fn pattern(w: u32, h: u32) -> Screen {
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

pub fn spawn(mut c: Command) -> Child {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {c:?}: {e}"))
}

/// Read the console until a line starting with `marker`; the lines
/// up to it.
pub fn wait_drawn(
    child: &mut Child,
    marker: &str,
) -> (Vec<String>, BufReader<std::process::ChildStdout>) {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        let n = out.read_line(&mut line).unwrap_or(0);
        assert!(n > 0, "the VM ended before drawing: {lines:#?}");
        let done = line.starts_with(marker);
        assert!(!line.contains("status=fail"), "{line}: {lines:#?}");
        lines.push(line);
        if done {
            return (lines, out);
        }
    }
}

/// SIGTERM and reap within 60 s; the stderr.
pub fn stop(child: Child) -> String {
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let dog = Watchdog::arm(child.id(), Duration::from_secs(60));
    let out = child.wait_with_output().unwrap();
    assert!(!dog.disarm(), "did not end on SIGTERM");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Let `child` (listening on VNC display `n`) run until it prints a line
/// starting with `marker`, capture the screen until it equals `want`
/// (20 s at most), stop it. Returns the screen, the console lines, the
/// stderr and the peak RSS (KiB) before the stop.
pub fn capture(
    child: Child,
    n: u16,
    marker: &str,
    want: &Screen,
) -> (Screen, Vec<String>, String, u64) {
    capture_where(
        child,
        n,
        marker,
        |s| s == want,
        Duration::from_secs(20),
        Duration::from_secs(120),
    )
}

/// As `capture`, until `done` holds for the screen or `patience` passed;
/// the whole run is killed after `limit` (a guest that never draws
/// fails the test).
pub fn capture_where(
    mut child: Child,
    n: u16,
    marker: &str,
    done: impl Fn(&Screen) -> bool,
    patience: Duration,
    limit: Duration,
) -> (Screen, Vec<String>, String, u64) {
    let dog = Watchdog::arm(child.id(), limit);
    let (lines, _out) = wait_drawn(&mut child, marker);
    let addr = format!("127.0.0.1:{}", 5900 + u32::from(n));
    let shot = RfbClient::connect(&addr).and_then(|mut c| c.capture_until(done, patience));
    let shot = match shot {
        Ok(s) => s,
        Err(e) => {
            dog.disarm();
            let err = stop(child);
            panic!("capturing the screen: {e}\nstderr:\n{err}\nconsole: {lines:#?}");
        }
    };
    let hwm = vm_hwm_kib(child.id());
    assert!(!dog.disarm(), "ran past {limit:?}: {lines:#?}");
    let err = stop(child);
    (shot, lines, err, hwm)
}

/// Whether `s` shows `want` with its top-left corner at (`x`, `y`).
pub fn shows_at(s: &Screen, want: &Screen, x: u32, y: u32) -> bool {
    x + want.width <= s.width
        && y + want.height <= s.height
        && (0..want.height).all(|r| (0..want.width).all(|c| s.at(x + c, y + r) == want.at(c, r)))
}

/// Peak resident memory of `pid` (VmHWM, KiB).
pub fn vm_hwm_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Keep `s` as a PNG artefact and say where.
pub fn keep(s: &Screen, name: &str) {
    let dir = target_dir().join("display-artefacts");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    s.write_png(&p);
    println!("screen captured: {}", p.display());
}

pub fn assert_same(got: &Screen, want: &Screen, who: &str) {
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
