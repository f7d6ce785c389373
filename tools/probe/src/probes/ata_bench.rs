//! `probe=ata-bench path=ide-pio|ide-dma|ahci mode=seqread|seqwrite|
//! randread|randwrite bs=4096 n=OPS|ms=MS`: one request at a time (IDE
//! has no queue, and the AHCI port offers no NCQ) through the emulated
//! path, timed with rdtsc, reported in `probe=blk-bench`'s line format
//! (`blk-bench path=... qd=1 ...`) so one parser reads every path. Writes
//! destroy the disk's content.

use super::{Ctx, Outcome};
use crate::ahci::Ahci;
use crate::ata::{prd, set_prds, Ide};
use crate::io::rdtsc;
use crate::report::{Line, TextBuf};
use crate::tsc;
use crate::virtio::blk::{DATA, SECTOR};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Pio,
    Dma,
    Ahci,
}

pub fn run(ctx: &Ctx) -> Outcome {
    let a = &ctx.args;
    let path = match a.get("path").unwrap_or(b"ide-dma") {
        b"ide-pio" => Path::Pio,
        b"ide-dma" => Path::Dma,
        b"ahci" => Path::Ahci,
        _ => return Err("bad-arg"),
    };
    let (write, random, name) = match a.get("mode").unwrap_or(b"randread") {
        b"seqread" => (false, false, "seqread"),
        b"seqwrite" => (true, false, "seqwrite"),
        b"randread" => (false, true, "randread"),
        b"randwrite" => (true, true, "randwrite"),
        _ => return Err("bad-arg"),
    };
    let bs = a.number("bs", 4096).map_err(|_| "bad-arg")?;
    let ms = a.number("ms", 0).map_err(|_| "bad-arg")?;
    let n = a.number("n", if ms > 0 { u64::MAX } else { 1000 }).map_err(|_| "bad-arg")?;
    // One PRD entry holds 64 KiB; the bench uses one per request.
    if bs == 0 || bs % SECTOR != 0 || bs > 64 << 10 {
        return Err("bad-arg");
    }
    let (khz, _) = tsc::khz();
    if khz == 0 {
        return Err("no-tsc-freq");
    }
    let buf = DATA.addr();
    let mut ide = None;
    let mut ahci = None;
    let capacity = match path {
        Path::Ahci => {
            let h = Ahci::open(Ahci::find()?, 0, buf)?;
            let c = h.sectors;
            ahci = Some(h);
            c
        }
        _ => {
            let mut d = Ide::open(0, 0, buf)?;
            if path == Path::Dma {
                d.find_bm(0)?;
            }
            let c = d.sectors;
            ide = Some(d);
            c
        }
    };
    let span = bs / SECTOR;
    let blocks = capacity / span;
    if blocks == 0 {
        return Err("disk-too-small");
    }
    let table = set_prds(&[prd(buf, bs as u32, true)]);
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let (mut done, mut errors, mut next) = (0u64, 0u64, 0u64);
    let deadline = if ms > 0 { Some(tsc::us_to_ticks(ms * 1000)) } else { None };
    let mut hist = super::blk_bench::Hist::new();
    let t0 = rdtsc();
    while done < n && !deadline.is_some_and(|d| rdtsc() - t0 >= d) {
        let blk = if random {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % blocks
        } else {
            let x = next;
            next = (next + 1) % blocks;
            x
        };
        let lba = blk * span;
        let started = rdtsc();
        let ok = match (path, &ide, &ahci) {
            (Path::Pio, Some(d), _) => d.pio(write, lba, span, buf, span > 1)?.ok(),
            (Path::Dma, Some(d), _) => d.dma(write, lba, span as u16, table)?.0.ok(),
            (Path::Ahci, _, Some(h)) => {
                let op = if write { 0x35 } else { 0x25 };
                h.command(op, lba, span as u16, write, &[(buf, bs as u32)], None)?.ok()
            }
            _ => return Err("no-device"),
        };
        hist.record(rdtsc() - started);
        errors += u64::from(!ok);
        done += 1;
    }
    let ticks = rdtsc() - t0;
    let ns = ticks_to_ns(ticks, khz).max(1);
    let iops = done as u128 * 1_000_000_000 / ns as u128;
    let mib_x100 = (done as u128 * bs as u128 * 100_000_000_000 / ns as u128) >> 20;
    let lat_ns_x10 = if done > 0 { ns as u128 * 10 / 1000 / done as u128 } else { 0 };
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
        .kv_word("path", match path {
            Path::Pio => "ide-pio",
            Path::Dma => "ide-dma",
            Path::Ahci => "ahci",
        })
        .kv_word("mode", name)
        .kv_u("bs", bs)
        .kv_u("qd", 1)
        .kv_u("ops", done)
        .kv_u("iops", iops as u64)
        .kv_str("mib_s", mib.as_bytes())
        .kv_str("mean_lat_us", lat.as_bytes())
        .kv_str("p99_lat_us", p99.as_bytes())
        .kv_u("elapsed_us", ns / 1000)
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
