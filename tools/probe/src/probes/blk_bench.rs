//! `probe=blk-bench mode=seqread|seqwrite|randread|randwrite bs=4096 qd=32
//! n=OPS|ms=MS [disk=N]`: keeps `qd` requests in flight (one 3-descriptor
//! chain each), refills the ring from completions and notifies once per
//! batch, timing everything with rdtsc. Writes destroy the disk's content.

use super::{Ctx, Outcome};
use crate::io::rdtsc;
use crate::report::{Line, TextBuf};
use crate::tsc;
use crate::virtio::blk::{self, DATA, SECTOR};
use crate::virtio::find;
use crate::virtio::queue::{Buf, QMAX};

pub fn run(ctx: &Ctx) -> Outcome {
    let a = &ctx.args;
    let mode = a.get("mode").unwrap_or(b"seqread");
    let (write, random, name) = match mode {
        b"seqread" => (false, false, "seqread"),
        b"seqwrite" => (true, false, "seqwrite"),
        b"randread" => (false, true, "randread"),
        b"randwrite" => (true, true, "randwrite"),
        _ => return Err("bad-arg"),
    };
    let bs = a.number("bs", 4096).map_err(|_| "bad-arg")?;
    let qd = a.number("qd", 32).map_err(|_| "bad-arg")? as usize;
    let ms = a.number("ms", 0).map_err(|_| "bad-arg")?;
    let n = a.number("n", if ms > 0 { u64::MAX } else { 10_000 }).map_err(|_| "bad-arg")?;
    if bs == 0 || bs % SECTOR != 0 || bs > 1 << 20 || qd == 0 || qd > QMAX / 3 || qd as u64 * bs > DATA.len() as u64
    {
        return Err("bad-arg");
    }
    let (khz, _) = tsc::khz();
    if khz == 0 {
        return Err("no-tsc-freq");
    }
    let mut b = find::open_disk(ctx.boot, a, 256)?;
    if b.q.size as usize / 3 < qd {
        return Err("qd-exceeds-queue");
    }
    if write && b.offered & blk::F_RO != 0 {
        return Err("read-only");
    }
    let span = bs / SECTOR;
    let blocks = b.capacity / span;
    if blocks == 0 {
        return Err("disk-too-small");
    }

    // Data buffer slots: head -> slot, and a stack of free slots.
    let mut slot_of = [0u16; QMAX];
    let mut start = [0u64; QMAX];
    let mut free_slots = [0u16; QMAX];
    for (i, s) in free_slots.iter_mut().enumerate().take(qd) {
        *s = i as u16;
    }
    let mut nfree = qd;
    let typ = if write { blk::T_OUT } else { blk::T_IN };
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next_block = 0u64;
    let (mut submitted, mut done, mut errors) = (0u64, 0u64, 0u64);
    let mut lat_ticks: u64 = 0;
    let mut hist = Hist::new();
    let deadline = if ms > 0 { Some(tsc::us_to_ticks(ms * 1000)) } else { None };

    let t0 = rdtsc();
    loop {
        let now = rdtsc();
        let stop = submitted >= n || deadline.is_some_and(|d| now - t0 >= d);
        // Fill every free slot, then one notification for the whole batch.
        while !stop && nfree > 0 && submitted < n {
            let blk_no = if random {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % blocks
            } else {
                let x = next_block;
                next_block = (next_block + 1) % blocks;
                x
            };
            let slot = free_slots[nfree - 1];
            let buf = Buf { addr: DATA.addr() + slot as u64 * bs, len: bs as u32, write: !write };
            let Some(head) = b.submit(typ, blk_no * span, &[buf]) else { break };
            nfree -= 1;
            slot_of[head as usize] = slot;
            start[head as usize] = now;
            submitted += 1;
        }
        b.q.kick();
        if stop && nfree == qd {
            break;
        }
        // Reap everything that is there (spinning at CPL3 costs no exits).
        let mut reaped = false;
        while let Some(c) = b.q.poll() {
            if !c.known {
                continue;
            }
            let t = rdtsc();
            lat_ticks += t - start[c.head as usize];
            hist.record(t - start[c.head as usize]);
            if blk::Blk::status_of(c.head) != blk::S_OK {
                errors += 1;
            }
            free_slots[nfree] = slot_of[c.head as usize];
            nfree += 1;
            done += 1;
            reaped = true;
        }
        if !reaped {
            core::hint::spin_loop();
        }
    }
    let ticks = rdtsc() - t0;

    let ns = ticks_to_ns(ticks, khz).max(1);
    let iops = done as u128 * 1_000_000_000 / ns as u128;
    // MiB/s with two decimals: bytes * 1e9 * 100 / ns / 2^20.
    let mib_x100 = (done as u128 * bs as u128 * 100_000_000_000 / ns as u128) >> 20;
    let lat_ns_x10 = if done > 0 { ticks_to_ns(lat_ticks, khz) as u128 * 10 / 1000 / done as u128 } else { 0 };
    let p99_ns_x10 = ticks_to_ns(hist.percentile(99), khz) as u128 / 100;
    let mut mib = TextBuf::new();
    let mut lat = TextBuf::new();
    let mut p99 = TextBuf::new();
    {
        use core::fmt::Write;
        let _ = write!(mib, "{}.{:02}", mib_x100 / 100, mib_x100 % 100);
        let _ = write!(lat, "{}.{}", lat_ns_x10 / 10, lat_ns_x10 % 10);
        let _ = write!(p99, "{}.{}", p99_ns_x10 / 10, p99_ns_x10 % 10);
    }
    Line::topic("blk-bench")
        .kv_word("mode", name)
        .kv_u("bs", bs)
        .kv_u("qd", qd as u64)
        .kv_u("ops", done)
        .kv_u("iops", iops as u64)
        .kv_str("mib_s", mib.as_bytes())
        .kv_str("mean_lat_us", lat.as_bytes())
        .kv_str("p99_lat_us", p99.as_bytes())
        .kv_u("elapsed_us", ns / 1000)
        .kv_u("notifies", b.q.notifies)
        .kv_u("errors", errors)
        .emit();
    if errors > 0 {
        return Err("io-error");
    }
    Ok(())
}

fn ticks_to_ns(ticks: u64, khz: u64) -> u64 {
    (ticks / khz) * 1_000_000 + (ticks % khz) * 1_000_000 / khz
}

/// Request latencies in rdtsc ticks, HDR-style: 16 linear sub-buckets
/// per power of two (within 1/16 of the value), 4 KiB on the stack, no
/// allocation; enough for a p99 a benchmark can quote.
pub(super) struct Hist {
    counts: [u32; 976],
    total: u64,
}

impl Hist {
    pub(super) fn new() -> Self {
        Hist { counts: [0; 976], total: 0 }
    }

    fn index(v: u64) -> usize {
        if v < 16 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros() as usize;
        (e - 3) * 16 + ((v >> (e - 4)) & 15) as usize
    }

    pub(super) fn record(&mut self, ticks: u64) {
        let i = Self::index(ticks);
        self.counts[i] = self.counts[i].saturating_add(1);
        self.total += 1;
    }

    /// The middle of the bucket holding the `pct`th percentile; 0 when
    /// nothing was recorded.
    pub(super) fn percentile(&self, pct: u64) -> u64 {
        let want = (self.total * pct).div_ceil(100).max(1);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c as u64;
            if c > 0 && seen >= want {
                if i < 16 {
                    return i as u64;
                }
                let (e, sub) = (i / 16 + 3, (i % 16) as u64);
                return ((16 + sub) << (e - 4)) + ((1u64 << (e - 4)) >> 1);
            }
        }
        0
    }
}
