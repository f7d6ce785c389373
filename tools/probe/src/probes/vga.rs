//! `probe=vga [w=W h=H] [fb_move=ADDR] [hold=MS]`: finds the standard VGA or
//! bochs-display (PCI 1234:1111), reads the bochs dispi id and video
//! memory through BAR2 (MMIO at 0x500), sets a W x H x 32 linear mode
//! (default 256 x 160), writes the `gpu` probe's pattern straight into
//! the BAR0 framebuffer, and reports `probe: vga-drawn`; with `hold` it
//! stays up for a VNC client to look. The framebuffer is plain memory to
//! the guest (a memory slot on Casemate, RAM on QEMU): no exits. With
//! `fb_move` BAR0 is first moved to ADDR (decoding off while it moves),
//! so the framebuffer must follow the BAR.

use super::gpu::pattern;
use super::{Ctx, Outcome};
use crate::io::{mmio_read16, mmio_write16, mmio_write32, mmio_write8};
use crate::pci::{self, Access, Bdf, Config, Function, MAX_FUNCS};
use crate::report::Line;
use crate::tsc;
use crate::virtio::find::bdf_str;

const DISPI: u64 = 0x500;
const ID: u64 = 0;
const XRES: u64 = 1;
const YRES: u64 = 2;
const BPP: u64 = 3;
const ENABLE: u64 = 4;
const BANK: u64 = 5;
const VIRT_WIDTH: u64 = 6;
const VIRT_HEIGHT: u64 = 7;
const X_OFFSET: u64 = 8;
const Y_OFFSET: u64 = 9;
const VIDEO_MEMORY_64K: u64 = 0xa;

pub fn run(ctx: &Ctx) -> Outcome {
    let w = ctx.args.number("w", 256).map_err(|_| "bad-arg")?;
    let h = ctx.args.number("h", 160).map_err(|_| "bad-arg")?;
    if w == 0 || h == 0 || w > 4096 || h > 4096 {
        return Err("bad-arg");
    }
    let access = pci::mcfg().unwrap_or(Access::Cam);
    let cfg = Config { access };
    let mut funcs = [Function { bdf: Bdf { bus: 0, dev: 0, func: 0 }, vendor: 0, device: 0 }; MAX_FUNCS];
    let n = pci::enumerate(&cfg, &mut funcs).min(MAX_FUNCS);
    let f = funcs[..n].iter().find(|f| f.vendor == 0x1234 && f.device == 0x1111).ok_or("no-vga")?;
    let class = cfg.read16(f.bdf, 0x0a);
    let mut fb = pci::bar(&cfg, f.bdf, 0).ok_or("vga-no-bar0")?;
    let to = ctx.args.number("fb_move", 0).map_err(|_| "bad-arg")?;
    if to != 0 {
        if to % fb.size != 0 || !crate::io::phys_ok(to, fb.size) {
            return Err("bad-arg");
        }
        let cmd = cfg.read16(f.bdf, 4);
        cfg.write16(f.bdf, 4, cmd & !2);
        pci::set_bar(&cfg, f.bdf, 0, to, false);
        cfg.write16(f.bdf, 4, cmd);
        fb = pci::bar(&cfg, f.bdf, 0).ok_or("vga-no-bar0")?;
        if fb.addr != to {
            return Err("vga-bar-not-moved");
        }
    }
    let mmio = pci::bar(&cfg, f.bdf, 2).ok_or("vga-no-bar2")?;
    if fb.addr == 0 || mmio.addr == 0 {
        return Err("vga-bar-unassigned");
    }
    pci::enable(&cfg, f.bdf);
    let reg = |i: u64| mmio.addr + DISPI + 2 * i;
    let id = mmio_read16(reg(ID));
    let vram = mmio_read16(reg(VIDEO_MEMORY_64K)) as u64 * 65536;
    Line::topic("vga")
        .kv_word("bdf", bdf_str(f.bdf).as_str())
        .kv_hex("class", class as u64)
        .kv_hex("fb", fb.addr)
        .kv_u("fb_size", fb.size)
        .kv_hex("mmio", mmio.addr)
        .kv_hex("dispi_id", id as u64)
        .kv_u("vram", vram)
        .emit();
    if !(0xb0c0..=0xb0c5).contains(&id) {
        return Err("vga-bad-dispi-id");
    }
    if w * h * 4 > vram.min(fb.size) {
        return Err("vga-mode-too-large");
    }
    // As Linux's bochs driver: palette access off (the VGA attribute
    // index's PAS bit), then the dispi mode.
    mmio_write8(mmio.addr + 0x400, 0x20);
    for (i, v) in [(ENABLE, 0), (BPP, 32), (XRES, w), (YRES, h), (BANK, 0), (VIRT_WIDTH, w), (VIRT_HEIGHT, h), (X_OFFSET, 0), (Y_OFFSET, 0), (ENABLE, 0x41)] {
        mmio_write16(reg(i), v as u16);
    }
    if mmio_read16(reg(XRES)) as u64 != w || mmio_read16(reg(ENABLE)) & 1 == 0 {
        return Err("vga-mode-not-set");
    }
    let t0 = crate::io::rdtsc();
    for y in 0..h as u32 {
        for x in 0..w as u32 {
            mmio_write32(fb.addr + ((y as u64 * w + x as u64) * 4), pattern(x, y));
        }
    }
    // Time for the whole pattern: microseconds without exits, about a
    // second if every store trapped to the VMM.
    let ticks = crate::io::rdtsc() - t0;
    let us = ticks / tsc::us_to_ticks(1).max(1);
    Line::topic("vga-drawn").kv_u("w", w).kv_u("h", h).kv_u("draw_us", us).emit();
    let ms = ctx.args.number("hold", 0).map_err(|_| "bad-arg")?;
    tsc::delay_us(ms.saturating_mul(1000));
    Ok(())
}
