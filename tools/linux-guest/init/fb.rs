//! `casemate.mode=fb [casemate.hold=MS]`: the Linux framebuffer through
//! the real DRM driver's fbdev emulation (virtio_gpu or bochs). Opens
//! /dev/fb0 (waiting up to 5 s for the driver to register it), reads the
//! variable and fixed screen info, writes a line of text to /dev/tty1
//! (the framebuffer console draws it at the top left), then writes the
//! probe's `gpu` pattern, 256 x 160, at the bottom-right corner in one
//! pwrite, and reports `init: fb-drawn x=.. y=..`. With `hold` it stays
//! up that long so a VNC client can look. Run with
//! `vt.global_cursor_default=0` so the console cursor does not blink.

use crate::line::Line;
use crate::{failed, sys, Outcome};

const FBIOGET_VSCREENINFO: usize = 0x4600;
const FBIOGET_FSCREENINFO: usize = 0x4602;
const W: usize = 256;
const H: usize = 160;
/// Rows of the pattern with their full line length, at most.
const MAX_BYTES: usize = 4 << 20;
/// What the console shows.
pub const TEXT: &[u8] = b"casemate framebuffer console: text drawn by fbcon\n";

static mut ROWS: [u8; MAX_BYTES] = [0; MAX_BYTES];

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

pub fn pattern(x: u32, y: u32) -> u32 {
    ((x * 7) & 0xff) << 16 | ((y * 3) & 0xff) << 8 | ((x ^ y) & 0xff)
}

pub fn run(hold_ms: u64) -> Outcome {
    let mut fd = Err(0);
    for _ in 0..50 {
        fd = sys::open(c"/dev/fb0", sys::O_RDWR);
        if fd.is_ok() {
            break;
        }
        sys::sleep_ms(100);
    }
    let fd = fd.map_err(|e| failed("open-fb0", e, "no-fb"))?;
    let mut var = [0u8; 160];
    sys::ioctl(fd, FBIOGET_VSCREENINFO, var.as_mut_ptr() as usize)
        .map_err(|e| failed("fbioget-vscreeninfo", e, "fb-ioctl"))?;
    let mut fix = [0u8; 80];
    sys::ioctl(fd, FBIOGET_FSCREENINFO, fix.as_mut_ptr() as usize)
        .map_err(|e| failed("fbioget-fscreeninfo", e, "fb-ioctl"))?;
    let (xres, yres, bpp) = (u32_at(&var, 0), u32_at(&var, 4), u32_at(&var, 24));
    let red = u32_at(&var, 32);
    let line_length = u32_at(&fix, 48) as usize;
    let smem_len = u32_at(&fix, 24);
    let id_end = fix[..16].iter().position(|&c| c == 0).unwrap_or(16);
    Line::topic("fb")
        .text("id", &fix[..id_end])
        .u("xres", xres as u64)
        .u("yres", yres as u64)
        .u("bpp", bpp as u64)
        .u("red_offset", red as u64)
        .u("line_length", line_length as u64)
        .u("smem_len", smem_len as u64)
        .emit();
    if bpp != 32 || red != 16 || (xres as usize) < W || (yres as usize) < H {
        return Err("fb-format");
    }
    if let Ok(tty) = sys::open(c"/dev/tty1", sys::O_RDWR) {
        let _ = sys::write(tty, TEXT);
        let _ = sys::close(tty);
    }
    let (x0, y0) = (xres as usize - W, yres as usize - H);
    let bytes = line_length * H;
    if bytes > MAX_BYTES || x0 * 4 + W * 4 > line_length {
        return Err("fb-too-large");
    }
    // SAFETY: the init is single-threaded and this is the only use of ROWS.
    let rows = unsafe { &mut *core::ptr::addr_of_mut!(ROWS) };
    for y in 0..H {
        for x in 0..W {
            let at = y * line_length + (x0 + x) * 4;
            rows[at..at + 4].copy_from_slice(&pattern(x as u32, y as u32).to_le_bytes());
        }
    }
    let n = sys::pwrite(fd, &rows[..bytes], (y0 * line_length) as u64)
        .map_err(|e| failed("pwrite-fb0", e, "fb-io"))?;
    if n != bytes {
        return Err("fb-short-write");
    }
    Line::topic("fb-drawn")
        .u("x", x0 as u64)
        .u("y", y0 as u64)
        .u("w", W as u64)
        .u("h", H as u64)
        .emit();
    sys::sleep_ms(hold_ms);
    let _ = sys::close(fd);
    Ok(())
}
