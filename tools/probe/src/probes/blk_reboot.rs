//! `probe=blk-reboot [disk=N]`: disk writes must survive a guest reset
//! within one VMM run (with `-snapshot` they live only in the VMM's
//! overlay, which a reset must keep). Boot 1 finds no marker in sector 0:
//! it writes the pattern (pass 3) to LBA 1..8, then the marker to LBA 0,
//! flushes, and resets the machine (0xCF9 reset control on a PC chipset,
//! else the i8042). Boot 2 finds the marker, reads LBA 1..8 back and checks
//! the pattern, then ends normally.

use super::{blk, Ctx, Outcome};
use crate::io::{outb, phys_ok, phys_write_bytes};
use crate::pci::{Access, Bdf, Config};
use crate::report::Line;
use crate::tsc;
use crate::virtio::blk::{Blk, DATA, F_FLUSH, SECTOR, S_OK, T_FLUSH, T_IN, T_OUT};
use crate::virtio::find;
use crate::virtio::queue::Buf;

/// First bytes of sector 0 after boot 1.
const MARKER: &[u8; 32] = b"casemate-probe-blk-reboot-mark\x00\x01";
const PATTERN_LBA: u64 = 1;
const PATTERN_SECTORS: u64 = 8;
const PASS: u64 = 3;
/// A RAM breadcrumb left by boot 1: guest RAM survives a reset (QEMU and
/// Casemate keep it), so a boot 2 that finds it but no disk marker knows
/// the write was lost, instead of writing and resetting forever. 15 MiB:
/// above the probe's image, below any RAM size a test gives.
const CRUMB: u64 = 0xf0_0000;
const CRUMB_BYTES: &[u8; 16] = b"blk-reboot-boot1";

fn crumb_is_ram(ctx: &Ctx) -> bool {
    ctx.boot.e820().iter().any(|e| e.kind == 1 && e.addr <= CRUMB && CRUMB + 16 <= e.addr + e.size)
}

fn crumb_present() -> bool {
    // SAFETY: checked to be RAM by the caller (crumb_is_ram); plain bytes.
    let got = unsafe { core::slice::from_raw_parts(CRUMB as *const u8, 16) };
    got == CRUMB_BYTES
}

/// One-sector transfer of DATA's first sector.
fn rw1(b: &mut Blk, typ: u32, lba: u64) -> Result<u8, &'static str> {
    let write = typ == T_IN;
    b.rw(typ, lba, &[Buf { addr: DATA.addr(), len: SECTOR as u32, write }])
}

fn data_sector() -> &'static mut [u8] {
    // SAFETY: DATA is the probe's buffer; no request on it is in flight
    // while the slice is used (each use ends before the next request).
    unsafe { core::slice::from_raw_parts_mut(DATA.addr() as *mut u8, SECTOR as usize) }
}

/// A PC chipset (PIIX3 or ICH9) answers at 00:00.0 through 0xCF8/0xCFC and
/// has the reset control register at 0xCF9; microvm has neither.
fn pc_chipset() -> bool {
    let cfg = Config { access: Access::Cam };
    cfg.read16(Bdf { bus: 0, dev: 0, func: 0 }, 0) != 0xffff
}

fn reset() -> ! {
    let via = if pc_chipset() { "cf9" } else { "i8042" };
    Line::topic("blk-reboot").kv_word("resetting", via).emit();
    if via == "cf9" {
        // Bit 1: system reset, bit 2: do it now (hard reset).
        outb(0xcf9, 0x06);
        tsc::delay_us(200_000);
    }
    outb(0x64, 0xfe);
    tsc::delay_us(200_000);
    crate::finish(Err("reset-ignored"))
}

pub fn run(ctx: &Ctx) -> Outcome {
    let mut b = find::open_disk(ctx.boot, &ctx.args, 16)?;
    if b.capacity < 64 {
        return Err("disk-too-small");
    }
    // SAFETY: DATA is ours and idle.
    unsafe { core::ptr::write_bytes(DATA.addr() as *mut u8, 0xa5, SECTOR as usize) };
    if rw1(&mut b, T_IN, 0)? != S_OK {
        return Err("read-failed");
    }
    let marked = data_sector()[..MARKER.len()] == MARKER[..];
    let crumb_ok = crumb_is_ram(ctx);

    if !marked {
        if crumb_ok && crumb_present() {
            Line::topic("blk-reboot").kv_u("phase", 1).kv_u("again", 1).emit();
            return Err("reboot-write-lost");
        }
        let s = blk::write(&mut b, PATTERN_LBA, PATTERN_SECTORS, PASS, 1)?;
        if s != S_OK {
            return Err("write-failed");
        }
        let sec = data_sector();
        sec.fill(0);
        sec[..MARKER.len()].copy_from_slice(MARKER);
        if rw1(&mut b, T_OUT, 0)? != S_OK {
            return Err("write-failed");
        }
        let flush = if b.has(F_FLUSH) { blk::status_word(b.rw(T_FLUSH, 0, &[])?) } else { "unsupp" };
        if crumb_ok && phys_ok(CRUMB, 16) {
            phys_write_bytes(CRUMB, CRUMB_BYTES);
        }
        Line::topic("blk-reboot")
            .kv_u("phase", 1)
            .kv_u("wrote", PATTERN_SECTORS + 1)
            .kv_u("marker_lba", 0)
            .kv_u("lba", PATTERN_LBA)
            .kv_u("sectors", PATTERN_SECTORS)
            .kv_u("pass", PASS)
            .kv_word("flush", flush)
            .emit();
        if flush != "ok" && flush != "unsupp" {
            return Err("flush-failed");
        }
        reset();
    }

    let s = blk::read(&mut b, PATTERN_LBA, PATTERN_SECTORS, 1)?;
    let bad = match s {
        S_OK => blk::check(DATA.addr(), PATTERN_LBA, PATTERN_SECTORS, Some(PASS)),
        _ => None,
    };
    let mut l = Line::topic("blk-reboot");
    l.kv_u("phase", 2).kv_word("read", blk::status_word(s));
    if let Some(off) = bad {
        l.kv_u("mismatch_at", off);
    }
    l.kv_u("ok", (s == S_OK && bad.is_none()) as u64);
    l.kv_u("crumb", (crumb_ok && crumb_present()) as u64).emit();
    if s != S_OK {
        return Err("read-failed");
    }
    if bad.is_some() {
        return Err("verify-failed");
    }
    Ok(())
}
