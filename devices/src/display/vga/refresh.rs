//! The VGA refresh worker (`cm-vgaN`, role `Worker("vga")`): 30 times a
//! second it reads the framebuffer slot's dirty log and copies the rows
//! of the visible mode that the guest wrote into the display surface,
//! converting the mode's pixels to the surface's. A mode change (any
//! dispi register write) repaints everything; so does a tick while the
//! slot is unmapped, when no dirty log exists.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmm_sys_util::timerfd::TimerFd;

use super::{Dispi, FramebufferSlot, Mode, VgaMemory};
use crate::display::{Rect, Surface};
use crate::virtio::{Worker, WorkerError};

/// The refresh period (QEMU's GUI refresh is 30 ms).
pub const PERIOD: Duration = Duration::from_millis(33);
const PAGE: u64 = 4096;

pub struct VgaRefresh {
    name: String,
    dispi: Arc<Mutex<Dispi>>,
    vram: Arc<VgaMemory>,
    slot: Arc<dyn FramebufferSlot>,
    surface: Arc<Surface>,
    timer: TimerFd,
    /// The mode on screen and the register generation it came from.
    shown: Option<(Mode, u64)>,
    row: Vec<u8>,
    logged: u32,
}

impl VgaRefresh {
    pub fn new(
        name: String,
        dispi: Arc<Mutex<Dispi>>,
        vram: Arc<VgaMemory>,
        slot: Arc<dyn FramebufferSlot>,
        surface: Arc<Surface>,
    ) -> std::io::Result<Self> {
        let mut timer = TimerFd::new()?;
        timer.reset(PERIOD, Some(PERIOD))?;
        Ok(Self {
            name,
            dispi,
            vram,
            slot,
            surface,
            timer,
            shown: None,
            row: Vec::new(),
            logged: 0,
        })
    }

    /// One refresh (also called directly by tests).
    pub fn refresh(&mut self) {
        let (mode, generation) = {
            let d = self.dispi.lock().unwrap_or_else(|p| p.into_inner());
            (d.mode(), d.generation)
        };
        let dirty = match self.slot.take_dirty() {
            Ok(d) => d,
            Err(e) => {
                if self.logged < 4 {
                    self.logged += 1;
                    log::warn!("{}: reading the framebuffer's dirty log: {e}", self.name);
                }
                None
            }
        };
        let Some(mode) = mode else {
            self.shown = None;
            return;
        };
        let rows: Vec<bool> = match (&dirty, self.shown == Some((mode, generation))) {
            (Some(bits), true) => dirty_rows(bits, &mode),
            _ => vec![true; mode.height as usize],
        };
        self.shown = Some((mode, generation));
        self.copy_rows(&mode, &rows);
    }

    fn copy_rows(&mut self, mode: &Mode, rows: &[bool]) {
        let mut f = self.surface.lock();
        if (f.width(), f.height()) != (mode.width, mode.height) {
            f.resize(mode.width, mode.height);
        }
        let w = mode.width as usize;
        self.row.resize(w * mode.bytes_pp as usize, 0);
        let mut run_start = None;
        for y in 0..=rows.len() {
            let dirty = rows.get(y).copied().unwrap_or(false);
            if dirty {
                let off = mode.offset + u64::from(mode.stride) * y as u64;
                if !self.vram.read(off as usize, &mut self.row) {
                    continue;
                }
                let px = &mut f.pixels_mut()[y * w..(y + 1) * w];
                convert(&self.row, mode.bytes_pp, px);
                run_start.get_or_insert(y);
            } else if let Some(s) = run_start.take() {
                f.damage(Rect::new(0, s as u32, mode.width, (y - s) as u32));
            }
        }
        drop(f);
        if rows.iter().any(|&r| r) {
            self.surface.changed();
        }
    }
}

/// Rows of `mode` touched by the dirty pages in `bits`.
fn dirty_rows(bits: &[u64], mode: &Mode) -> Vec<bool> {
    let mut rows = vec![false; mode.height as usize];
    let stride = u64::from(mode.stride);
    let end = mode.offset + stride * u64::from(mode.height);
    for (wi, &word) in bits.iter().enumerate() {
        let mut w = word;
        while w != 0 {
            let bit = w.trailing_zeros() as u64;
            w &= w - 1;
            let start = (wi as u64 * 64 + bit) * PAGE;
            let stop = start + PAGE;
            if stop <= mode.offset || start >= end {
                continue;
            }
            let first = start.saturating_sub(mode.offset) / stride;
            let last =
                ((stop - 1 - mode.offset.min(stop - 1)) / stride).min(u64::from(mode.height) - 1);
            for r in &mut rows[first as usize..=last as usize] {
                *r = true;
            }
        }
    }
    rows
}

/// Mode pixels (little-endian XRGB8888, RGB888 or RGB565) to `0x00RRGGBB`.
fn convert(src: &[u8], bytes_pp: u32, dst: &mut [u32]) {
    match bytes_pp {
        4 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = u32::from_le_bytes([s[0], s[1], s[2], 0]);
            }
        }
        3 => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(3)) {
                *d = u32::from_le_bytes([s[0], s[1], s[2], 0]);
            }
        }
        _ => {
            for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
                let v = u32::from(u16::from_le_bytes([s[0], s[1]]));
                let (r, g, b) = ((v >> 11) & 31, (v >> 5) & 63, v & 31);
                *d = (r * 255 / 31) << 16 | (g * 255 / 63) << 8 | (b * 255 / 31);
            }
        }
    }
}

impl Worker for VgaRefresh {
    fn fds(&self) -> Vec<(RawFd, u32)> {
        vec![(self.timer.as_raw_fd(), 0)]
    }

    fn on_event(&mut self, _token: u32) -> Result<(), WorkerError> {
        // The expiration count; missed ticks need no catching up.
        let _ = self.timer.wait();
        self.refresh();
        Ok(())
    }
}
