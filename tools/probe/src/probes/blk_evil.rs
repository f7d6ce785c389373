//! `probe=blk-evil [disk=N] [strict=1]`: malformed requests a guest may
//! send. Each must end with an error status, no completion, or the device
//! in NEEDS_RESET, and never hang the probe (timeouts everywhere). After
//! each, a valid read must still work (re-initialising the device first if
//! it asked for a reset). Ends with a valid write + read round trip.

use super::blk::{read, status_word, write};
use super::{Ctx, Outcome};
use crate::report::Line;
use crate::virtio::blk::{self, Blk, Wait, DATA, SECTOR};
use crate::virtio::find;
use crate::virtio::queue::{RawDesc, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, QMAX};
use crate::virtio::F_INDIRECT_DESC;

const TIMEOUT_US: u64 = 300_000;
/// Far above any RAM a test VM has, and not MMIO either.
const OUTSIDE_RAM: u64 = 1 << 46;

const CASES: [&str; 7] = ["bad-addr", "past-end", "loop", "hdr-len0", "status-ro", "wrong-dir", "too-long"];

/// Descriptors for one case; header/status addresses come from the head
/// the chain will get.
fn build(case: &str, b: &Blk, head: u16, out: &mut [RawDesc; 4]) -> usize {
    let hdr = Blk::header_addr(head);
    let st = Blk::status_addr(head);
    let data = DATA.addr();
    let d = |addr, len, flags, next| RawDesc { addr, len, flags, next };
    let (typ, sector) = match case {
        "past-end" => (blk::T_IN, b.capacity),
        _ => (blk::T_IN, 0),
    };
    Blk::prepare(head, typ, sector);
    let descs: &[RawDesc] = match case {
        "bad-addr" => &[d(hdr, 16, 0, Some(1)), d(OUTSIDE_RAM, 512, DESC_F_WRITE, Some(2)), d(st, 1, DESC_F_WRITE, None)],
        "past-end" => &[d(hdr, 16, 0, Some(1)), d(data, 512, DESC_F_WRITE, Some(2)), d(st, 1, DESC_F_WRITE, None)],
        // header -> data -> header -> ...: no end, no status.
        "loop" => &[d(hdr, 16, 0, Some(1)), d(data, 512, DESC_F_WRITE, Some(0))],
        "hdr-len0" => &[d(hdr, 0, 0, Some(1)), d(data, 512, DESC_F_WRITE, Some(2)), d(st, 1, DESC_F_WRITE, None)],
        "status-ro" => &[d(hdr, 16, 0, Some(1)), d(data, 512, DESC_F_WRITE, Some(2)), d(st, 1, 0, None)],
        // A read whose data buffer the device may only read.
        "wrong-dir" => &[d(hdr, 16, 0, Some(1)), d(data, 512, 0, Some(2)), d(st, 1, DESC_F_WRITE, None)],
        _ => &[],
    };
    out[..descs.len()].copy_from_slice(descs);
    descs.len()
}

/// A chain of queue size + 1 descriptors: through an indirect table when
/// negotiated (a real over-long chain), else every ring descriptor linked
/// in a circle (the only way a direct chain can exceed the ring).
fn submit_too_long(b: &mut Blk) -> Option<(u16, &'static str)> {
    let head = b.q.peek_head()?;
    Blk::prepare(head, blk::T_IN, 0);
    let n = b.q.size as usize + 1;
    if b.has(F_INDIRECT_DESC) {
        // Table at the end of DATA, data sectors at its start.
        let table = DATA.addr() + DATA.len() as u64 - 16 * (QMAX as u64 + 2);
        for i in 0..n {
            let (addr, len, flags) = match i {
                0 => (Blk::header_addr(head), 16, 0),
                _ if i + 1 == n => (Blk::status_addr(head), 1, DESC_F_WRITE),
                _ => (DATA.addr() + (i as u64 - 1) * SECTOR, SECTOR as u32, DESC_F_WRITE),
            };
            let (more, next) = if i + 1 == n { (0, 0) } else { (DESC_F_NEXT, i as u16 + 1) };
            let e = table + 16 * i as u64;
            // SAFETY: inside DATA, which no in-flight request uses.
            unsafe {
                core::ptr::write_volatile(e as *mut u64, addr);
                core::ptr::write_volatile((e + 8) as *mut u32, len);
                core::ptr::write_volatile((e + 12) as *mut u16, flags | more);
                core::ptr::write_volatile((e + 14) as *mut u16, next);
            }
        }
        let raw = [RawDesc { addr: table, len: 16 * n as u32, flags: DESC_F_INDIRECT, next: None }];
        return Some((b.q.submit_raw(&raw)?, "indirect"));
    }
    let k = b.q.free_descs();
    let mut raw = [RawDesc { addr: 0, len: 0, flags: 0, next: None }; QMAX];
    for (i, r) in raw.iter_mut().enumerate().take(k) {
        *r = RawDesc { addr: DATA.addr(), len: SECTOR as u32, flags: DESC_F_WRITE, next: Some((i + 1) % k) };
    }
    raw[0] = RawDesc { addr: Blk::header_addr(head), len: 16, flags: 0, next: Some(1 % k) };
    Some((b.q.submit_raw(&raw[..k])?, "direct-circle"))
}

pub fn run(ctx: &Ctx) -> Outcome {
    let mut b = find::open_disk(ctx.boot, &ctx.args, 256)?;
    let strict = ctx.args.number("strict", 0).map_err(|_| "bad-arg")? != 0;
    let mut accepted = 0;
    for case in CASES {
        let mut via = "direct";
        let head = if case == "too-long" {
            let (h, v) = submit_too_long(&mut b).ok_or("blk-queue-full")?;
            via = v;
            h
        } else {
            let head = b.q.peek_head().ok_or("blk-queue-full")?;
            let mut descs = [RawDesc { addr: 0, len: 0, flags: 0, next: None }; 4];
            let n = build(case, &b, head, &mut descs);
            b.q.submit_raw(&descs[..n]).ok_or("blk-queue-full")?
        };
        let w = b.wait(head, TIMEOUT_US);
        let result = if b.needs_reset() {
            "needs-reset"
        } else {
            match w {
                Wait::Done(blk::S_OK) => "ok",
                Wait::Done(s) => status_word(s),
                Wait::NoStatus => "no-status",
                Wait::Timeout => "no-completion",
            }
        };
        if result == "ok" || result == "no-status" {
            accepted += 1;
        }
        let mut l = Line::topic("evil");
        l.kv_word("case", case).kv_word("result", result);
        if case == "too-long" {
            l.kv_word("via", via).kv_u("descs", b.q.size as u64 + 1);
        }
        l.emit();
        if result == "needs-reset" {
            b = b.reopen()?;
            Line::topic("evil").kv_word("case", case).kv_word("recovered", "reset").emit();
        } else if b.q.free_descs() < 4 {
            // Chains the device never completed still own their
            // descriptors; only a reset gets them back.
            b = b.reopen()?;
            Line::topic("evil").kv_word("case", case).kv_word("recovered", "reset-leaked").emit();
        }
        // The device must still serve a valid request.
        let s = match read(&mut b, 0, 1, 1) {
            Ok(s) => s,
            Err(_) if b.needs_reset() => {
                b = b.reopen()?;
                Line::topic("evil").kv_word("case", case).kv_word("recovered", "late-reset").emit();
                read(&mut b, 0, 1, 1)?
            }
            Err(e) => return Err(e),
        };
        if s != blk::S_OK {
            Line::topic("evil").kv_word("case", case).kv_word("after", status_word(s)).emit();
            return Err("valid-read-failed");
        }
    }
    // Final round trip.
    let lba = 1;
    if write(&mut b, lba, 1, 9, 1)? != blk::S_OK {
        return Err("write-failed");
    }
    if read(&mut b, lba, 1, 1)? != blk::S_OK || super::blk::check(DATA.addr(), lba, 1, Some(9)).is_some() {
        return Err("verify-failed");
    }
    Line::topic("evil").kv_u("round_trip", 1).kv_u("accepted", accepted).emit();
    if strict && accepted > 0 {
        return Err("evil-accepted");
    }
    Ok(())
}
