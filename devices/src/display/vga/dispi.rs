//! The bochs dispi (VBE) registers: the guest writes a resolution, depth
//! and virtual width, then sets ENABLE; `Mode` is what that describes, if
//! it fits the framebuffer. Values are stored as written; nothing a
//! guest writes is trusted until `mode` checks it.

pub const INDEX_ID: u16 = 0;
pub const INDEX_XRES: u16 = 1;
pub const INDEX_YRES: u16 = 2;
pub const INDEX_BPP: u16 = 3;
pub const INDEX_ENABLE: u16 = 4;
pub const INDEX_BANK: u16 = 5;
pub const INDEX_VIRT_WIDTH: u16 = 6;
pub const INDEX_VIRT_HEIGHT: u16 = 7;
pub const INDEX_X_OFFSET: u16 = 8;
pub const INDEX_Y_OFFSET: u16 = 9;
pub const INDEX_VIDEO_MEMORY_64K: u16 = 0xa;

pub const ID5: u16 = 0xb0c5;
pub const ENABLED: u16 = 0x01;
pub const GETCAPS: u16 = 0x02;
pub const LFB_ENABLED: u16 = 0x40;
/// What GETCAPS reports (QEMU's limits).
pub const MAX_XRES: u16 = 16000;
pub const MAX_YRES: u16 = 12000;
pub const MAX_BPP: u16 = 32;

/// A linear mode the framebuffer can show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode {
    pub width: u32,
    pub height: u32,
    /// Bytes per pixel: 4 (XRGB8888), 3 (RGB888) or 2 (RGB565).
    pub bytes_pp: u32,
    /// Bytes from one row to the next.
    pub stride: u32,
    /// Byte offset of the first visible pixel.
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct Dispi {
    regs: [u16; 11],
    vram_size: u64,
    /// Bumped on every register write, so the refresh worker notices a
    /// mode change even when the mode's numbers come out the same.
    pub generation: u64,
}

impl Dispi {
    pub fn new(vram_size: u64) -> Self {
        let mut regs = [0u16; 11];
        regs[INDEX_ID as usize] = ID5;
        Self {
            regs,
            vram_size,
            generation: 0,
        }
    }

    pub fn read(&self, index: u16) -> u16 {
        let getcaps = self.regs[INDEX_ENABLE as usize] & GETCAPS != 0;
        match index {
            INDEX_VIDEO_MEMORY_64K => (self.vram_size / 65536).min(0xffff) as u16,
            INDEX_XRES if getcaps => MAX_XRES,
            INDEX_YRES if getcaps => MAX_YRES,
            INDEX_BPP if getcaps => MAX_BPP,
            i => self.regs.get(i as usize).copied().unwrap_or(0),
        }
    }

    pub fn write(&mut self, index: u16, v: u16) {
        match index {
            // Drivers write the id they speak; the device stays at ID5.
            INDEX_ID | INDEX_VIDEO_MEMORY_64K => {}
            INDEX_ENABLE => {
                self.regs[INDEX_ENABLE as usize] = v;
                // As QEMU: enabling resets the panning if the virtual
                // width is smaller than the mode.
                if v & ENABLED != 0 {
                    let x = self.regs[INDEX_XRES as usize];
                    if self.regs[INDEX_VIRT_WIDTH as usize] < x {
                        self.regs[INDEX_VIRT_WIDTH as usize] = x;
                    }
                }
            }
            i if (i as usize) < self.regs.len() => self.regs[i as usize] = v,
            _ => {}
        }
        self.generation += 1;
    }

    /// The mode the registers describe, if it is enabled, linear, of a
    /// depth shown here, and inside the framebuffer.
    pub fn mode(&self) -> Option<Mode> {
        let r = |i: u16| u32::from(self.regs[i as usize]);
        if r(INDEX_ENABLE) & u32::from(ENABLED) == 0 {
            return None;
        }
        let bytes_pp = match r(INDEX_BPP) {
            32 => 4,
            24 => 3,
            16 => 2,
            _ => return None,
        };
        let (width, height) = (r(INDEX_XRES), r(INDEX_YRES));
        if width == 0 || height == 0 {
            return None;
        }
        let stride = r(INDEX_VIRT_WIDTH).max(width) * bytes_pp;
        let offset = u64::from(r(INDEX_Y_OFFSET)) * u64::from(stride)
            + u64::from(r(INDEX_X_OFFSET)) * u64::from(bytes_pp);
        let end = offset
            + u64::from(stride) * u64::from(height - 1)
            + u64::from(width) * u64::from(bytes_pp);
        (end <= self.vram_size).then_some(Mode {
            width,
            height,
            bytes_pp,
            stride,
            offset,
        })
    }
}
