//! The display surface: one framebuffer (`width` x `height` pixels of
//! 32-bit BGRX, i.e. `0x00RRGGBB` in a little-endian `u32`) shared between
//! the device that draws it (virtio-gpu on RESOURCE_FLUSH, VGA from its
//! dirty log) and the servers that read it (VNC, screenshots), plus the
//! damage (dirty rectangles) drawn since a reader last looked.
//!
//! Owns the pixels, their size and the damage list; not how they reach a
//! client (the VMM's VNC server) nor how a device produces them. Writers
//! hold the lock only to copy pixels in; every change writes the `wake`
//! eventfd so a server thread can poll it next to its sockets. Damage is
//! bounded: past `MAX_RECTS` rectangles it collapses into their bounding
//! box, so a guest flushing many small areas costs no host memory.

pub mod screendump;
pub mod vga;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// Largest width or height a surface takes (QEMU's virtio-gpu caps a
/// scanout at 16384; 8192 keeps one frame under 256 MiB).
pub const MAX_DIM: u32 = 8192;
/// Damage rectangles kept before they merge into one.
pub const MAX_RECTS: usize = 64;
/// What a display shows before any device set a mode (as QEMU's 640x480
/// "not initialized" console).
pub const DEFAULT_SIZE: (u32, u32) = (640, 480);

/// A rectangle in surface pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub const fn new(x: u32, y: u32, w: u32, h: u32) -> Self {
        Self { x, y, w, h }
    }

    pub fn is_empty(&self) -> bool {
        self.w == 0 || self.h == 0
    }

    /// The part of `self` inside a `width` x `height` surface.
    pub fn clip(&self, width: u32, height: u32) -> Rect {
        let x = self.x.min(width);
        let y = self.y.min(height);
        let w = self.w.min(width - x);
        let h = self.h.min(height - y);
        Rect { x, y, w, h }
    }

    /// The smallest rectangle holding both.
    pub fn union(&self, o: &Rect) -> Rect {
        if self.is_empty() {
            return *o;
        }
        if o.is_empty() {
            return *self;
        }
        let x = self.x.min(o.x);
        let y = self.y.min(o.y);
        let x2 = (self.x + self.w).max(o.x + o.w);
        let y2 = (self.y + self.h).max(o.y + o.h);
        Rect::new(x, y, x2 - x, y2 - y)
    }
}

/// Add `r` to a damage list, collapsing it past `MAX_RECTS`.
pub fn add_damage(list: &mut Vec<Rect>, r: Rect) {
    if r.is_empty() || list.iter().any(|d| d.union(&r) == *d) {
        return;
    }
    list.push(r);
    if list.len() > MAX_RECTS {
        let all = list.iter().fold(Rect::default(), |a, b| a.union(b));
        list.clear();
        list.push(all);
    }
}

/// The pixels and what changed in them. A clone is a snapshot a reader
/// can encode without holding the lock.
#[derive(Clone)]
pub struct Frame {
    width: u32,
    height: u32,
    pixels: Vec<u32>,
    damage: Vec<Rect>,
    /// Bumped on every resize: a reader that saw another value must
    /// resend everything.
    generation: u64,
}

impl Frame {
    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Row-major pixels, `width` per row.
    pub fn pixels(&self) -> &[u32] {
        &self.pixels
    }

    pub fn pixels_mut(&mut self) -> &mut [u32] {
        &mut self.pixels
    }

    /// Mark `r` (clipped to the frame) as changed.
    pub fn damage(&mut self, r: Rect) {
        let r = r.clip(self.width, self.height);
        add_damage(&mut self.damage, r);
    }

    /// The damage since the last call, emptied.
    pub fn take_damage(&mut self) -> Vec<Rect> {
        std::mem::take(&mut self.damage)
    }

    /// New size, all black, all damaged. Sizes outside 1..=MAX_DIM are
    /// clamped into it (callers check and report before).
    pub fn resize(&mut self, width: u32, height: u32) {
        let width = width.clamp(1, MAX_DIM);
        let height = height.clamp(1, MAX_DIM);
        self.width = width;
        self.height = height;
        self.pixels = vec![0; width as usize * height as usize];
        self.pixels.shrink_to_fit();
        self.generation += 1;
        self.damage.clear();
        self.damage.push(Rect::new(0, 0, width, height));
    }
}

/// See the module doc.
pub struct Surface {
    frame: Mutex<Frame>,
    wake: EventFd,
}

impl Surface {
    /// A black `DEFAULT_SIZE` surface.
    pub fn new() -> std::io::Result<Self> {
        let (w, h) = DEFAULT_SIZE;
        Ok(Self {
            frame: Mutex::new(Frame {
                width: w,
                height: h,
                pixels: vec![0; (w * h) as usize],
                damage: Vec::new(),
                generation: 0,
            }),
            wake: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// The frame, locked. Call `changed` after drawing.
    pub fn lock(&self) -> MutexGuard<'_, Frame> {
        self.frame.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wake the readers (after damage or a resize).
    pub fn changed(&self) {
        // A full eventfd counter only means a wake-up is already pending.
        let _ = self.wake.write(1);
    }

    /// Copy a `w` x `h` block of BGRX pixels (`stride` bytes per source
    /// row) to (`x`, `y`), clipped to the frame, damage it and wake the
    /// readers.
    pub fn blit(&self, x: u32, y: u32, w: u32, h: u32, src: &[u8], stride: usize) {
        let mut f = self.lock();
        let r = Rect::new(x, y, w, h).clip(f.width, f.height);
        let fw = f.width as usize;
        for row in 0..r.h as usize {
            let s = row * stride;
            let Some(line) = src.get(s..s + r.w as usize * 4) else {
                break;
            };
            let d = (r.y as usize + row) * fw + r.x as usize;
            for (px, b) in f.pixels[d..d + r.w as usize]
                .iter_mut()
                .zip(line.chunks_exact(4))
            {
                *px = u32::from_le_bytes([b[0], b[1], b[2], 0]);
            }
        }
        f.damage(r);
        drop(f);
        self.changed();
    }

    /// The fd readers poll; `drain_wake` after it fires.
    pub fn wake_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    pub fn drain_wake(&self) {
        let _ = self.wake.read();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blit_copies_clips_and_damages() {
        let s = Surface::new().unwrap();
        s.lock().resize(4, 2);
        let _ = s.lock().take_damage();
        // 3x1 block at x=2: the third pixel falls outside and is dropped.
        let src = [1, 2, 3, 0xff, 4, 5, 6, 0xff, 7, 8, 9, 0xff];
        s.blit(2, 1, 3, 1, &src, 12);
        let mut f = s.lock();
        assert_eq!(f.pixels()[6], 0x0003_0201);
        assert_eq!(f.pixels()[7], 0x0006_0504);
        assert_eq!(f.take_damage(), vec![Rect::new(2, 1, 2, 1)]);
        assert!(f.take_damage().is_empty());
    }

    #[test]
    fn damage_stays_bounded() {
        let mut l = Vec::new();
        for i in 0..1000 {
            add_damage(&mut l, Rect::new(i, i, 1, 1));
        }
        assert!(l.len() <= MAX_RECTS);
        assert!(l.iter().any(|r| r.x == 0 && r.w >= 900));
    }

    #[test]
    fn resize_clamps_and_damages_everything() {
        let s = Surface::new().unwrap();
        let mut f = s.lock();
        let g = f.generation();
        f.resize(0, 100_000);
        assert_eq!((f.width(), f.height()), (1, MAX_DIM));
        assert_eq!(f.generation(), g + 1);
        assert_eq!(f.take_damage(), vec![Rect::new(0, 0, 1, MAX_DIM)]);
    }
}
