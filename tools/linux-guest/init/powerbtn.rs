//! `casemate.mode=powerbtn`: waits for the ACPI power button through the
//! real Linux driver (drivers/acpi/button.c reports KEY_POWER on an input
//! device named "Power Button"), then asks for a power-off instead of the
//! usual reset, as an init that honours the button does. Reports
//! `init: powerbtn state=waiting devices=N` once it listens (the host
//! presses then) and `init: powerbtn key=116` when the press arrives.
//! Without a power button it fails at once rather than waiting forever.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::line::Line;
use crate::{failed, sys, trim, Outcome};

/// Set once the button was pressed: `finish` then powers off.
pub static POWER_OFF: AtomicBool = AtomicBool::new(false);

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// The event devices looked at; a small guest has a handful.
const SCAN: usize = 8;
/// `struct input_event` on x86_64: a timeval, then type, code, value.
const EVENT_LEN: usize = 24;

pub fn run() -> Outcome {
    let mut fds = [sys::PollFd::default(); SCAN];
    let mut n = 0;
    for i in 0..SCAN {
        if is_power_button(i) {
            let path = event_path(i);
            let cpath = core::ffi::CStr::from_bytes_with_nul(&path).map_err(|_| "path")?;
            let fd = sys::open_c(cpath, sys::O_RDONLY)
                .map_err(|e| failed("open-event", e, "powerbtn-open"))?;
            fds[n] = sys::PollFd::readable(fd);
            n += 1;
        }
    }
    if n == 0 {
        return Err("no-power-button");
    }
    Line::topic("powerbtn")
        .word("state", "waiting")
        .u("devices", n as u64)
        .emit();
    let _ = sys::drain(1);
    loop {
        sys::poll(&mut fds[..n]).map_err(|e| failed("poll", e, "powerbtn-poll"))?;
        for p in fds[..n].iter().filter(|p| p.ready()) {
            let mut ev = [0u8; EVENT_LEN * 4];
            let got =
                sys::read(p.fd(), &mut ev).map_err(|e| failed("read-event", e, "powerbtn-read"))?;
            for e in ev[..got].chunks_exact(EVENT_LEN) {
                let kind = u16::from_le_bytes([e[16], e[17]]);
                let code = u16::from_le_bytes([e[18], e[19]]);
                let value = i32::from_le_bytes([e[20], e[21], e[22], e[23]]);
                if kind == EV_KEY && code == KEY_POWER && value == 1 {
                    Line::topic("powerbtn").u("key", u64::from(code)).emit();
                    sys::sync();
                    POWER_OFF.store(true, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
    }
}

/// `/dev/input/eventI` with its NUL (I < 10).
fn event_path(i: usize) -> [u8; 18] {
    let mut p = *b"/dev/input/event0\0";
    p[16] = b'0' + i as u8;
    p
}

/// Whether `/sys/class/input/eventI/device/name` names a power button.
fn is_power_button(i: usize) -> bool {
    let mut path = *b"/sys/class/input/event0/device/name\0";
    path[22] = b'0' + i as u8;
    let Ok(cpath) = core::ffi::CStr::from_bytes_with_nul(&path) else {
        return false;
    };
    let Ok(fd) = sys::open_c(cpath, sys::O_RDONLY) else {
        return false;
    };
    let mut buf = [0u8; 64];
    let n = sys::read(fd, &mut buf).unwrap_or(0);
    let _ = sys::close(fd);
    trim(&buf[..n]) == b"Power Button"
}
