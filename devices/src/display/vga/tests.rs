//! The VGA function and its refresh without KVM: registers through BAR2,
//! a fake slot that reports chosen dirty pages.

use std::sync::{Arc, Mutex};

use super::dispi::*;
use super::refresh::VgaRefresh;
use super::*;
use crate::display::{Rect, Surface};

struct FakeSlot(Mutex<Option<Vec<u64>>>);

impl FramebufferSlot for FakeSlot {
    fn place(&self, _gpa: Option<u64>) -> io::Result<()> {
        Ok(())
    }
    fn take_dirty(&self) -> io::Result<Option<Vec<u64>>> {
        Ok(self.0.lock().unwrap().replace(vec![0; 64]))
    }
}

fn vga(kind: VgaKind) -> (StdVga, Arc<VgaMemory>, Arc<Mutex<Dispi>>) {
    let vram = Arc::new(VgaMemory::new(4 << 20).unwrap());
    let dispi = Arc::new(Mutex::new(Dispi::new(4 << 20)));
    let v = StdVga::new(VgaParams {
        name: "vga0".into(),
        kind,
        vram: vram.clone(),
        dispi: dispi.clone(),
        edid: [7; 128],
        bar0: 0xc000_0000,
        bar2: 0xc100_0000,
    })
    .unwrap();
    (v, vram, dispi)
}

fn reg(v: &mut StdVga, i: u16, val: u16) {
    v.bar_write(2, 0x500 + 2 * u64::from(i), &val.to_le_bytes());
}

fn rd(v: &mut StdVga, i: u16) -> u16 {
    let mut b = [0u8; 2];
    v.bar_read(2, 0x500 + 2 * u64::from(i), &mut b);
    u16::from_le_bytes(b)
}

fn set_mode(v: &mut StdVga, w: u16, h: u16, bpp: u16) {
    reg(v, INDEX_ENABLE, 0);
    reg(v, INDEX_BPP, bpp);
    reg(v, INDEX_XRES, w);
    reg(v, INDEX_YRES, h);
    reg(v, INDEX_VIRT_WIDTH, w);
    reg(v, INDEX_ENABLE, ENABLED | LFB_ENABLED);
}

#[test]
fn ids_bars_and_registers() {
    let (mut v, ..) = vga(VgaKind::Std);
    let mut b = [0u8; 4];
    v.config_read(0, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x1111_1234);
    v.config_read(8, &mut b);
    assert_eq!(u32::from_le_bytes(b) >> 16, 0x0300);
    let bars = v.active_bars();
    assert_eq!(bars.len(), 2);
    assert_eq!((bars[0].addr, bars[0].size), (0xc000_0000, 4 << 20));
    assert_eq!(v.framebuffer_addr(), Some(0xc000_0000));
    assert_eq!(rd(&mut v, INDEX_ID), ID5);
    assert_eq!(rd(&mut v, INDEX_VIDEO_MEMORY_64K), 64);
    reg(&mut v, INDEX_ENABLE, GETCAPS);
    assert_eq!(rd(&mut v, INDEX_XRES), MAX_XRES);
    let mut e = [0u8; 4];
    v.bar_read(2, 0, &mut e);
    assert_eq!(e, [7; 4], "EDID at offset 0");
    v.bar_read(2, 0x604, &mut e);
    assert_eq!(u32::from_le_bytes(e), 0x1e1e_1e1e);
    let (mut b, ..) = vga(VgaKind::BochsDisplay);
    b.config_read(8, &mut e);
    assert_eq!(u32::from_le_bytes(e) >> 16, 0x0380);
}

#[test]
fn modes_outside_the_framebuffer_are_not_shown() {
    let (mut v, _, dispi) = vga(VgaKind::Std);
    set_mode(&mut v, 1024, 768, 32);
    assert!(dispi.lock().unwrap().mode().is_some());
    set_mode(&mut v, 4096, 4096, 32);
    assert_eq!(dispi.lock().unwrap().mode(), None, "64 MiB in 4 MiB");
    set_mode(&mut v, 64, 64, 7);
    assert_eq!(dispi.lock().unwrap().mode(), None, "odd depth");
    set_mode(&mut v, 64, 64, 32);
    reg(&mut v, INDEX_Y_OFFSET, 0xffff);
    assert_eq!(dispi.lock().unwrap().mode(), None, "panned off the end");
}

#[test]
fn refresh_copies_the_mode_then_only_dirty_rows() {
    let (mut v, vram, dispi) = vga(VgaKind::Std);
    set_mode(&mut v, 64, 32, 32);
    for y in 0..32u32 {
        for x in 0..64u32 {
            let p = (x << 16 | y << 8 | 0x55).to_le_bytes();
            vram.write(((y * 64 + x) * 4) as usize, &p);
        }
    }
    let surface = Arc::new(Surface::new().unwrap());
    let slot = Arc::new(FakeSlot(Mutex::new(Some(vec![0; 64]))));
    let mut r = VgaRefresh::new(
        "vga0".into(),
        dispi,
        vram.clone(),
        slot.clone(),
        surface.clone(),
    )
    .unwrap();
    r.refresh();
    {
        let mut f = surface.lock();
        assert_eq!((f.width(), f.height()), (64, 32));
        assert_eq!(f.pixels()[5 * 64 + 3], 3 << 16 | 5 << 8 | 0x55);
        let _ = f.take_damage();
    }
    // A write on row 20 (byte 20 * 256 lies in page 1); only page 1 is
    // reported dirty, which covers rows 16..32.
    vram.write(20 * 256, &0x00ab_cdefu32.to_le_bytes());
    let mut bits = vec![0u64; 64];
    bits[0] = 1 << 1;
    *slot.0.lock().unwrap() = Some(bits);
    r.refresh();
    let mut f = surface.lock();
    assert_eq!(f.pixels()[20 * 64], 0x00ab_cdef);
    assert_eq!(f.take_damage(), vec![Rect::new(0, 16, 64, 16)]);
}

#[test]
fn rgb565_and_rgb888_convert() {
    let (mut v, vram, dispi) = vga(VgaKind::Std);
    set_mode(&mut v, 2, 1, 16);
    vram.write(0, &[0x00, 0xf8, 0x1f, 0x00]);
    let surface = Arc::new(Surface::new().unwrap());
    let slot = Arc::new(FakeSlot(Mutex::new(None)));
    let mut r = VgaRefresh::new("vga0".into(), dispi, vram.clone(), slot, surface.clone()).unwrap();
    r.refresh();
    assert_eq!(&surface.lock().pixels()[..2], &[0xff0000, 0x0000ff]);
    set_mode(&mut v, 1, 1, 24);
    vram.write(0, &[1, 2, 3]);
    r.refresh();
    assert_eq!(surface.lock().pixels()[0], 0x030201);
}
