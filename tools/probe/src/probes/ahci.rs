//! `probe=ahci [port=N] [ro=1]`, `probe=ahci-evil [strict=1]` and
//! `probe=ahci-cd [port=N]`: the AHCI HBA driven through its command
//! list. `ahci` writes the CONTRACT.md pattern (sector 0, middle, last, a
//! 40-sector run over three PRDT entries of unequal size) with WRITE DMA
//! EXT, reads it back with READ DMA EXT and one READ SECTORS EXT (PIO
//! commands run through the PRDT too), flushes, and announces each write
//! as `blk wrote ...`. `ahci-evil` sends a command table and a PRDT
//! region outside RAM, a PRDT shorter than the transfer, a range past the
//! end, an overlong count and an unknown command; each must fail the
//! command (TFES/HBFS, ERR) and the port must work after recovery; the
//! empty ports must say so. `ahci-cd` reads an ATAPI disc: READ CAPACITY,
//! READ(10) of its first blocks (reported as an FNV-1a hash), and a read
//! past the end, whose REQUEST SENSE must say ILLEGAL REQUEST / LBA out of
//! range.

use super::blk::{check, fill};
use super::{Ctx, Outcome};
use crate::ahci::{Ahci, Done};
use crate::report::Line;
use crate::virtio::blk::{DATA, SECTOR};

const MULTI: u64 = 40;
/// Below 4 GiB, above the RAM of any test VM, outside the PCI windows.
const OUTSIDE_RAM: u64 = 0x9000_0000;

fn open(ctx: &Ctx) -> Result<Ahci, &'static str> {
    let port = ctx.args.number("port", 0).map_err(|_| "bad-arg")? as u32;
    if port > 31 {
        return Err("bad-arg");
    }
    let abar = Ahci::find()?;
    let a = Ahci::open(abar, port, DATA.addr())?;
    Line::topic("ahci")
        .kv_u("port", port as u64)
        .kv_u("sectors", a.sectors)
        .kv_u("atapi", a.atapi as u64)
        .kv_hex("abar", abar)
        .emit();
    Ok(a)
}

/// DATA split into unequal PRDT entries: 1 sector, 3 sectors, the rest.
fn prds(bytes: u64, out: &mut [(u64, u32); 3]) -> usize {
    let buf = DATA.addr();
    let a = SECTOR.min(bytes);
    let b = (3 * SECTOR).min(bytes - a);
    let c = bytes - a - b;
    let mut k = 0;
    let mut at = buf;
    for len in [a, b, c] {
        if len > 0 {
            out[k] = (at, len as u32);
            at += len;
            k += 1;
        }
    }
    k
}

fn rw(a: &Ahci, write: bool, lba: u64, n: u64, pio: bool) -> Result<Done, &'static str> {
    let mut p = [(0, 0); 3];
    let k = prds(n * SECTOR, &mut p);
    let op = match (write, pio) {
        (true, _) => 0x35,
        (false, false) => 0x25,
        (false, true) => 0x24,
    };
    let d = a.command(op, lba, n as u16, write, &p[..k], None)?;
    if !d.ok() {
        a.recover()?;
    }
    Ok(d)
}

fn verify(a: &Ahci, lba: u64, n: u64, pass: u64, pio: bool) -> Outcome {
    // SAFETY: DATA is the probe's buffer and no command on it is running.
    unsafe { core::ptr::write_bytes(DATA.addr() as *mut u8, 0xa5, (n * SECTOR) as usize) };
    let d = rw(a, false, lba, n, pio)?;
    let bad = if d.ok() { check(DATA.addr(), lba, n, Some(pass)) } else { None };
    let mut l = Line::topic("ahci");
    l.kv_word("read", if d.ok() { "ok" } else { "err" }).kv_u("lba", lba).kv_u("sectors", n).kv_u("bytes", d.bytes as u64);
    match bad {
        Some(off) => l.kv_u("mismatch_at", off).emit(),
        None => l.kv_word("verified", if d.ok() { "1" } else { "0" }).emit(),
    }
    if !d.ok() {
        return Err("read-failed");
    }
    if bad.is_some() {
        return Err("verify-failed");
    }
    Ok(())
}

fn write(a: &Ahci, lba: u64, n: u64, pass: u64) -> Result<Done, &'static str> {
    fill(DATA.addr(), lba, n, pass);
    let d = rw(a, true, lba, n, false)?;
    if d.ok() {
        Line::topic("blk wrote").kv_u("lba", lba).kv_u("sectors", n).kv_u("pass", pass).emit();
    }
    Ok(d)
}

pub fn run(ctx: &Ctx) -> Outcome {
    let a = open(ctx)?;
    let cap = a.sectors;
    if a.atapi || cap < 256 {
        return Err("not-a-disk");
    }
    if ctx.args.number("ro", 0).map_err(|_| "bad-arg")? != 0 {
        let d = write(&a, 0, 1, 1)?;
        Line::topic("ahci").kv_u("ro", 1).kv_hex("tfd", d.tfd as u64).emit();
        if d.ok() {
            return Err("ro-write-not-refused");
        }
        return if rw(&a, false, 0, 1, false)?.ok() { Ok(()) } else { Err("read-failed") };
    }
    let plan = [(0, 1), (cap / 2, 1), (cap - 1, 1), (cap / 4, MULTI)];
    for &(lba, n) in &plan {
        if !write(&a, lba, n, 1)?.ok() {
            return Err("write-failed");
        }
    }
    for (i, &(lba, n)) in plan.iter().enumerate() {
        verify(&a, lba, n, 1, i == 3)?;
    }
    let f = a.command(0xea, 0, 0, false, &[], None)?;
    Line::topic("ahci").kv_word("flush", if f.ok() { "ok" } else { "err" }).emit();
    if !f.ok() {
        return Err("flush-failed");
    }
    Ok(())
}

fn case(a: &Ahci, strict: bool, name: &str, r: Result<Done, &'static str>) -> Outcome {
    let mut l = Line::topic("ahci-evil");
    l.kv_word("case", name);
    let d = match r {
        Err("ahci-timeout") => {
            l.kv_word("refused", "hang").emit();
            return a.recover();
        }
        r => r?,
    };
    l.kv_hex("tfd", d.tfd as u64).kv_hex("is", d.is as u64).kv_word("refused", if d.ok() { "0" } else { "1" }).emit();
    a.recover()?;
    if d.ok() && strict {
        return Err("evil-accepted");
    }
    Ok(())
}

pub fn run_evil(ctx: &Ctx) -> Outcome {
    let a = open(ctx)?;
    let strict = ctx.args.number("strict", 0).map_err(|_| "bad-arg")? != 0;
    let cap = a.sectors;
    let buf = DATA.addr();
    case(&a, strict, "cmd-table-outside-ram", a.command_at(0x25, 0, 1, false, &[(buf, 512)], None, OUTSIDE_RAM))?;
    case(&a, strict, "prd-outside-ram", a.command(0x25, 0, 1, false, &[(OUTSIDE_RAM, 512)], None))?;
    case(&a, strict, "prd-too-short", a.command(0x25, 0, 2, false, &[(buf, 512)], None))?;
    case(&a, strict, "past-end", a.command(0x25, cap - 1, 2, false, &[(buf, 1024)], None))?;
    case(&a, strict, "overlong-count", a.command(0x25, 0, 0, false, &[(buf, 512)], None))?;
    case(&a, strict, "unknown-command", a.command(0xfe, 0, 0, false, &[], None))?;
    let empty = (1..6).filter(|&p| !Ahci::present(a.abar, p)).count();
    Line::topic("ahci-evil").kv_word("case", "absent-ports").kv_u("empty", empty as u64).emit();
    if empty == 0 {
        return Err("no-empty-port");
    }
    // Still working.
    if !write(&a, 8, 4, 3)?.ok() {
        return Err("write-failed-after-evil");
    }
    verify(&a, 8, 4, 3, false)
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

pub fn run_cd(ctx: &Ctx) -> Outcome {
    let a = open(ctx)?;
    if !a.atapi {
        return Err("not-atapi");
    }
    let buf = DATA.addr();
    let cap = a.command(0xa0, 0, 0, false, &[(buf, 8)], Some(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]))?;
    if !cap.ok() {
        return Err("read-capacity-failed");
    }
    // SAFETY: the HBA wrote these 8 bytes before completing the command.
    let raw = unsafe { core::slice::from_raw_parts(buf as *const u8, 8) };
    let blocks = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as u64 + 1;
    let bs = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
    let n: u16 = blocks.min(4) as u16;
    let rd = a.command(0xa0, 0, 0, false, &[(buf, n as u32 * 2048)], Some(&[0x28, 0, 0, 0, 0, 0, 0, (n >> 8) as u8, n as u8, 0, 0, 0]))?;
    if !rd.ok() {
        return Err("read10-failed");
    }
    // SAFETY: as above, for the blocks READ(10) transferred.
    let data = unsafe { core::slice::from_raw_parts(buf as *const u8, n as usize * 2048) };
    Line::topic("ahci-cd").kv_u("blocks", blocks).kv_u("block_size", bs as u64).kv_u("read", n as u64).kv_hex("fnv", fnv(data)).emit();
    let past = blocks as u32;
    let p = past.to_be_bytes();
    let bad = a.command(0xa0, 0, 0, false, &[(buf, 2048)], Some(&[0x28, 0, p[0], p[1], p[2], p[3], 0, 0, 1, 0, 0, 0]))?;
    a.recover()?;
    let sense = a.command(0xa0, 0, 0, false, &[(buf, 18)], Some(&[0x03, 0, 0, 0, 18, 0, 0, 0, 0, 0, 0, 0]))?;
    // SAFETY: as above, for REQUEST SENSE's 18 bytes.
    let s = unsafe { core::slice::from_raw_parts(buf as *const u8, 18) };
    Line::topic("ahci-cd")
        .kv_word("past_end", if bad.ok() { "ok" } else { "err" })
        .kv_hex("tfd", bad.tfd as u64)
        .kv_hex("sense_key", (s[2] & 0xf) as u64)
        .kv_hex("asc", s[12] as u64)
        .emit();
    if bad.ok() || !sense.ok() || s[2] & 0xf != 5 || s[12] != 0x21 {
        return Err("past-end-sense-wrong");
    }
    Ok(())
}
