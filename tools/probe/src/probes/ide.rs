//! `probe=ide-pio|ide-dma [ro=1] [bus=N] [unit=N]` and `probe=ide-evil [strict=1]`:
//! an IDE disk driven through the legacy ports (PIO) or bus-master DMA.
//! The round trip writes the CONTRACT.md pattern at sector 0, the middle,
//! the last sector and a 40-sector run (three DRQ blocks of MULTIPLE in
//! PIO; three PRD regions of unequal size in DMA), reads it back and
//! flushes; every write is announced as `blk wrote ...` so the host checks
//! the file as for virtio-blk. `ide-evil` sends what a hostile guest may:
//! PRD tables and regions outside RAM, a short PRD table, ranges past the
//! end, an overlong count, an unknown command, a command to an absent
//! unit; each must end in an error status (or no answer for the absent
//! unit), and a valid round trip must work afterwards.

use super::blk::{check, fill};
use super::{Ctx, Outcome};
use crate::ata::{prd, set_prds, Done, Ide, SECTOR};
use crate::report::Line;
use crate::virtio::blk::DATA;

const MULTI: u64 = 40;
/// Guest-physical addresses no test VM has RAM at, below 4 GiB (a PRD
/// holds 32 bits): the PCI hole.
const OUTSIDE_RAM: u64 = 0xd000_0000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Pio,
    Dma,
}

fn open(ctx: &Ctx, mode: Mode) -> Result<Ide, &'static str> {
    let bus = ctx.args.number("bus", 0).map_err(|_| "bad-arg")? as usize;
    let unit = ctx.args.number("unit", 0).map_err(|_| "bad-arg")? as u8;
    if bus > 1 || unit > 1 {
        return Err("bad-arg");
    }
    let mut d = Ide::open(bus, unit, DATA.addr())?;
    if mode == Mode::Dma {
        d.find_bm(bus)?;
    }
    Line::topic("ide")
        .kv_u("bus", bus as u64)
        .kv_u("unit", unit as u64)
        .kv_u("sectors", d.sectors)
        .kv_word("mode", if mode == Mode::Pio { "pio" } else { "dma" })
        .emit();
    Ok(d)
}

/// One transfer of `n` sectors at DATA.
fn rw(d: &Ide, mode: Mode, write: bool, lba: u64, n: u64) -> Result<Done, &'static str> {
    let buf = DATA.addr();
    match mode {
        // Single sectors through the plain commands, runs through MULTIPLE.
        Mode::Pio => d.pio(write, lba, n, buf, n > 1),
        Mode::Dma => {
            // Unequal regions: 1 sector, 3 sectors, the rest.
            let bytes = n * SECTOR;
            let cuts = [SECTOR.min(bytes), (3 * SECTOR).min(bytes.saturating_sub(SECTOR))];
            let rest = bytes - cuts[0] - cuts[1];
            let mut e = [0u64; 3];
            let mut k = 0;
            let mut at = buf;
            for len in [cuts[0], cuts[1], rest] {
                if len > 0 {
                    e[k] = prd(at, len as u32, false);
                    at += len;
                    k += 1;
                }
            }
            e[k - 1] |= 1 << 63;
            let table = set_prds(&e[..k]);
            let (done, bst) = d.dma(write, lba, n as u16, table)?;
            if done.ok() && bst & 0x02 != 0 {
                return Err("bm-error-on-success");
            }
            Ok(done)
        }
    }
}

fn write(d: &Ide, mode: Mode, lba: u64, n: u64, pass: u64) -> Result<Done, &'static str> {
    fill(DATA.addr(), lba, n, pass);
    let r = rw(d, mode, true, lba, n)?;
    if r.ok() {
        Line::topic("blk wrote").kv_u("lba", lba).kv_u("sectors", n).kv_u("pass", pass).emit();
    }
    Ok(r)
}

fn verify(d: &Ide, mode: Mode, lba: u64, n: u64, pass: u64) -> Outcome {
    // SAFETY: DATA is the probe's buffer and no transfer on it is running.
    unsafe { core::ptr::write_bytes(DATA.addr() as *mut u8, 0xa5, (n * SECTOR) as usize) };
    let r = rw(d, mode, false, lba, n)?;
    let bad = if r.ok() { check(DATA.addr(), lba, n, Some(pass)) } else { None };
    let mut l = Line::topic("ide");
    l.kv_word("read", if r.ok() { "ok" } else { "err" }).kv_u("lba", lba).kv_u("sectors", n);
    match bad {
        Some(off) => l.kv_u("mismatch_at", off).emit(),
        None => l.kv_word("verified", if r.ok() { "1" } else { "0" }).emit(),
    }
    if !r.ok() {
        return Err("read-failed");
    }
    if bad.is_some() {
        return Err("verify-failed");
    }
    Ok(())
}

fn round_trip(ctx: &Ctx, mode: Mode) -> Outcome {
    let d = open(ctx, mode)?;
    let cap = d.sectors;
    if cap < 256 {
        return Err("disk-too-small");
    }
    if ctx.args.number("ro", 0).map_err(|_| "bad-arg")? != 0 {
        let r = write(&d, mode, 0, 1, 1)?;
        Line::topic("ide").kv_u("ro", 1).kv_hex("status", r.status as u64).kv_hex("error", r.error as u64).emit();
        if r.ok() {
            return Err("ro-write-not-refused");
        }
        let r = rw(&d, mode, false, 0, 1)?;
        return if r.ok() { Ok(()) } else { Err("read-failed") };
    }
    let plan = [(0, 1), (cap / 2, 1), (cap - 1, 1), (cap / 4, MULTI)];
    for &(lba, n) in &plan {
        let r = write(&d, mode, lba, n, 1)?;
        if !r.ok() {
            Line::topic("ide").kv_word("write", "err").kv_u("lba", lba).kv_hex("error", r.error as u64).emit();
            return Err("write-failed");
        }
    }
    for &(lba, n) in &plan {
        verify(&d, mode, lba, n, 1)?;
    }
    let f = d.simple(0xea)?;
    Line::topic("ide").kv_word("flush", if f.ok() { "ok" } else { "err" }).emit();
    if !f.ok() {
        return Err("flush-failed");
    }
    Ok(())
}

pub fn run_pio(ctx: &Ctx) -> Outcome {
    round_trip(ctx, Mode::Pio)
}

pub fn run_dma(ctx: &Ctx) -> Outcome {
    round_trip(ctx, Mode::Dma)
}

/// One hostile case. An error status passes; a device that never ends
/// the command is reported (`refused=hang`), reset, and the run goes on,
/// so the same mode runs on peers whose controllers hang there (the
/// host test asserts `refused=1` for Casemate); a success fails under
/// `strict=1` (QEMU, for one, drops DMA to addresses outside RAM and
/// reports success).
fn case(d: &Ide, strict: bool, name: &str, r: Result<Done, &'static str>) -> Result<(), &'static str> {
    let mut l = Line::topic("ide-evil");
    l.kv_word("case", name);
    let r = match r {
        Err("bm-timeout" | "ide-timeout") => {
            l.kv_word("refused", "hang").emit();
            return d.reset();
        }
        r => r?,
    };
    l.kv_hex("status", r.status as u64)
        .kv_hex("error", r.error as u64)
        .kv_word("refused", if r.ok() { "0" } else { "1" })
        .emit();
    if r.ok() && strict {
        return Err("evil-accepted");
    }
    if r.ok() || r.status & 0x08 != 0 {
        // Whatever the device thinks it is doing now, start clean.
        return d.reset();
    }
    Ok(())
}

pub fn run_evil(ctx: &Ctx) -> Outcome {
    let d = open(ctx, Mode::Dma)?;
    let cap = d.sectors;
    let buf = DATA.addr();
    let strict = ctx.args.number("strict", 0).map_err(|_| "bad-arg")? != 0;
    let dma = |table: u64, write: bool, lba: u64, n: u16| d.dma(write, lba, n, table).map(|(r, _)| r);
    case(&d, strict, "prd-table-outside-ram", dma(OUTSIDE_RAM, false, 0, 1))?;
    let t = set_prds(&[prd(OUTSIDE_RAM, 512, true)]);
    case(&d, strict, "prd-region-outside-ram", dma(t, false, 0, 1))?;
    let t = set_prds(&[prd(buf, 512, true)]);
    case(&d, strict, "prd-too-short", dma(t, false, 0, 2))?;
    let t = set_prds(&[prd(buf, 1024, true)]);
    case(&d, strict, "dma-past-end", dma(t, false, cap - 1, 2))?;
    case(&d, strict, "pio-past-end", d.pio(false, cap, 1, buf, false))?;
    // Count 0 is 65536 sectors: more than the disk has.
    case(&d, strict, "overlong-count", d.pio(false, 0, 0, buf, false))?;
    case(&d, strict, "unknown-command", d.simple(0xfe))?;
    // The absent slave: nobody drives its status (no DRDY), and a
    // command to it starts nothing (no DRQ, no busy).
    let absent = Ide { cmd: d.cmd, ctl: d.ctl, unit: 1 - d.unit, sectors: 0, bm: None };
    absent.issue48(0x24, 0, 1);
    let s = crate::io::inb(d.ctl);
    Line::topic("ide-evil").kv_word("case", "absent-unit").kv_hex("status", s as u64).emit();
    if s & 0xc8 != 0 {
        return Err("absent-unit-answers");
    }
    // Still working: a valid DMA and PIO round trip.
    for mode in [Mode::Dma, Mode::Pio] {
        let r = write(&d, mode, 8, 4, 3)?;
        if !r.ok() {
            return Err("write-failed-after-evil");
        }
        verify(&d, mode, 8, 4, 3)?;
    }
    Ok(())
}
