//! `probe=blk [disk=N] [ro=1] [wait_after_write=1]`: a virtio-blk round
//! trip. Writes the CONTRACT.md pattern at sector 0, the middle, the last
//! sector and a multi-sector request split over >= 3 data descriptors,
//! reads it all back, then FLUSH, DISCARD and WRITE_ZEROES where offered.
//! Every write is announced (`blk wrote ...`) so the host can check the file.

use super::{Ctx, Outcome};
use crate::cmdline::Args;
use crate::io::phys_ok;
use crate::report::Line;
use crate::virtio::blk::{self, Blk, F_DISCARD, F_FLUSH, F_RO, F_WRITE_ZEROES, DATA, SECTOR};
use crate::virtio::find;
use crate::virtio::queue::Buf;

/// Sectors in the multi-descriptor request.
const MULTI: u64 = 8;
/// Sectors zeroed / discarded.
const RANGE: u64 = 8;

/// The pattern (CONTRACT.md): byte i of the sector at LBA `lba` written in
/// pass `pass` is (lba*7 + pass + i) & 0xff.
pub fn fill(addr: u64, lba: u64, sectors: u64, pass: u64) {
    assert!(phys_ok(addr, sectors * SECTOR));
    for s in 0..sectors {
        let base = ((lba + s) * 7 + pass) as u8;
        for i in 0..SECTOR {
            // SAFETY: inside the probe's DATA buffer (asserted mapped; the
            // device does not own it: no request on it is in flight).
            unsafe { *((addr + s * SECTOR + i) as *mut u8) = base.wrapping_add(i as u8) };
        }
    }
}

/// First mismatching byte offset, if any.
pub fn check(addr: u64, lba: u64, sectors: u64, pass: Option<u64>) -> Option<u64> {
    for s in 0..sectors {
        let base = pass.map_or(0, |p| ((lba + s) * 7 + p) as u8);
        for i in 0..SECTOR {
            let want = if pass.is_some() { base.wrapping_add(i as u8) } else { 0 };
            // SAFETY: inside DATA, after the read that filled it completed.
            let got = unsafe { core::ptr::read_volatile((addr + s * SECTOR + i) as *const u8) };
            if got != want {
                return Some(s * SECTOR + i);
            }
        }
    }
    None
}

pub fn status_word(s: u8) -> &'static str {
    match s {
        blk::S_OK => "ok",
        blk::S_IOERR => "ioerr",
        blk::S_UNSUPP => "unsupp",
        _ => "bad",
    }
}

/// Splits `sectors` at `addr` into `parts` descriptors of unequal sizes
/// (1 sector, 2 sectors, ..., the rest), so a device that assumes equal
/// segments is caught.
fn split(addr: u64, sectors: u64, parts: usize, write: bool, out: &mut [Buf; 16]) -> usize {
    let mut off = 0;
    let mut n = 0;
    while off < sectors && n < parts.min(16) {
        let take = if n + 1 == parts { sectors - off } else { (n as u64 + 1).min(sectors - off) };
        out[n] = Buf { addr: addr + off * SECTOR, len: (take * SECTOR) as u32, write };
        off += take;
        n += 1;
    }
    n
}

pub fn write(b: &mut Blk, lba: u64, sectors: u64, pass: u64, parts: usize) -> Result<u8, &'static str> {
    let addr = DATA.addr();
    fill(addr, lba, sectors, pass);
    let mut bufs = [Buf { addr: 0, len: 0, write: false }; 16];
    let n = split(addr, sectors, parts, false, &mut bufs);
    let s = b.rw(blk::T_OUT, lba, &bufs[..n])?;
    if s == blk::S_OK {
        Line::topic("blk wrote").kv_u("lba", lba).kv_u("sectors", sectors).kv_u("pass", pass).emit();
    }
    Ok(s)
}

/// Reads into DATA (pre-poisoned with 0xa5 so a read that transfers
/// nothing cannot pass) and returns the status.
pub fn read(b: &mut Blk, lba: u64, sectors: u64, parts: usize) -> Result<u8, &'static str> {
    let addr = DATA.addr();
    // SAFETY: DATA is the probe's buffer and no request on it is in flight.
    unsafe { core::ptr::write_bytes(addr as *mut u8, 0xa5, (sectors * SECTOR) as usize) };
    let mut bufs = [Buf { addr: 0, len: 0, write: false }; 16];
    let n = split(addr, sectors, parts, true, &mut bufs);
    b.rw(blk::T_IN, lba, &bufs[..n])
}

fn verify(b: &mut Blk, lba: u64, sectors: u64, pass: Option<u64>, parts: usize) -> Outcome {
    let s = read(b, lba, sectors, parts)?;
    let bad = if s == blk::S_OK { check(DATA.addr(), lba, sectors, pass) } else { None };
    let mut l = Line::topic("blk");
    l.kv_word("read", status_word(s)).kv_u("lba", lba).kv_u("sectors", sectors);
    match bad {
        Some(off) => l.kv_u("mismatch_at", off).emit(),
        None => l.kv_word("verified", if s == blk::S_OK { "1" } else { "0" }).emit(),
    }
    if s != blk::S_OK {
        return Err("read-failed");
    }
    if bad.is_some() {
        return Err("verify-failed");
    }
    Ok(())
}

fn spin_forever() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

pub fn run(ctx: &Ctx) -> Outcome {
    let mut b = find::open_disk(ctx.boot, &ctx.args, 256)?;
    exercise(&mut b, &ctx.args)
}

/// Everything `probe=blk` does once the disk is open (probe=bar-move runs
/// it again after moving the device).
pub fn exercise(b: &mut Blk, args: &Args) -> Outcome {
    let cap = b.capacity;
    if cap < 64 {
        return Err("disk-too-small");
    }
    let want_ro = args.number("ro", 0).map_err(|_| "bad-arg")? != 0;
    let wait_after = args.number("wait_after_write", 0).map_err(|_| "bad-arg")? != 0;

    if b.offered & F_RO != 0 {
        // A read-only device: the driver must not write at all.
        Line::topic("blk").kv_u("ro", 1).kv_word("ro_src", "feature").emit();
        let s = read(b, 0, 1, 1)?;
        Line::topic("blk").kv_word("read", status_word(s)).kv_u("lba", 0).kv_u("sectors", 1).emit();
        return if s == blk::S_OK { Ok(()) } else { Err("read-failed") };
    }
    if want_ro {
        let s = write(b, 0, 1, 1, 1)?;
        Line::topic("blk").kv_u("ro", 1).kv_word("ro_src", "cmdline").kv_word("write_status", status_word(s)).emit();
        return if s == blk::S_IOERR { Ok(()) } else { Err("ro-write-not-refused") };
    }

    // Pass 1: four writes; the first may park the probe for a host test.
    let multi_parts = if b.seg_max != 0 { (b.seg_max as usize).min(3) } else { 3 };
    let multi_lba = cap / 4;
    let plan = [(0, 1, 1), (cap / 2, 1, 1), (cap - 1, 1, 1), (multi_lba, MULTI, multi_parts)];
    for (i, &(lba, n, parts)) in plan.iter().enumerate() {
        let s = write(b, lba, n, 1, parts)?;
        if s != blk::S_OK {
            Line::topic("blk").kv_word("write", status_word(s)).kv_u("lba", lba).emit();
            return Err("write-failed");
        }
        if i == 0 && wait_after {
            Line::topic("blk write_done").kv_u("lba", lba).emit();
            spin_forever();
        }
    }
    Line::topic("blk").kv_u("multi_descs", multi_parts as u64).emit();
    for &(lba, n, parts) in &plan {
        verify(b, lba, n, Some(1), parts)?;
    }

    if b.has(F_FLUSH) {
        let s = b.rw(blk::T_FLUSH, 0, &[])?;
        Line::topic("blk").kv_word("flush", status_word(s)).emit();
        if s != blk::S_OK {
            return Err("flush-failed");
        }
    }

    // Write zeroes over a freshly patterned range, then read zeroes back.
    let z = cap * 3 / 4;
    if b.has(F_WRITE_ZEROES) && b.max_write_zeroes_sectors as u64 >= RANGE {
        if write(b, z, RANGE, 2, 1)? != blk::S_OK {
            return Err("write-failed");
        }
        let head = b.submit_range(blk::T_WRITE_ZEROES, z, RANGE as u32, false).ok_or("blk-queue-full")?;
        let s = match b.wait(head, 5_000_000) {
            blk::Wait::Done(s) => s,
            _ => return Err("blk-timeout"),
        };
        Line::topic("blk").kv_word("write_zeroes", status_word(s)).kv_u("lba", z).kv_u("sectors", RANGE).emit();
        if s != blk::S_OK {
            return Err("write-zeroes-failed");
        }
        Line::topic("blk zeroed").kv_u("lba", z).kv_u("sectors", RANGE).emit();
        verify(b, z, RANGE, None, 1)?;
    }
    if b.has(F_DISCARD) && b.max_discard_sectors as u64 >= RANGE {
        let d = z + 2 * RANGE;
        // Announced before it is sent: from here the range's content is
        // unspecified, whatever the device answers.
        Line::topic("blk discarding").kv_u("lba", d).kv_u("sectors", RANGE).emit();
        let head = b.submit_range(blk::T_DISCARD, d, RANGE as u32, false).ok_or("blk-queue-full")?;
        let s = match b.wait(head, 5_000_000) {
            blk::Wait::Done(s) => s,
            _ => return Err("blk-timeout"),
        };
        Line::topic("blk").kv_word("discard", status_word(s)).kv_u("lba", d).kv_u("sectors", RANGE).emit();
        if s != blk::S_OK {
            return Err("discard-failed");
        }
    }
    Line::topic("blk").kv_u("notifies", b.q.notifies).emit();
    Ok(())
}
