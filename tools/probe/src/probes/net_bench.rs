//! `probe=net-bench dir=tx|rx size=BYTES ms=MS [n=FRAMES] [index=N]`:
//! frames of `size` bytes (the Ethernet frame, 60..=1514, without the
//! virtio header) through virtio-net device N for `ms` milliseconds (or
//! `n` frames). `tx` sends broadcast frames of EtherType 0x88b5 (local
//! experimental: the host stack drops them) as fast as the transmit ring
//! takes them; `rx` counts the frames the host sends in (tools/netbench
//! floods the tap) from the first one on. Prints `probe: net-bench dir=
//! size= frames= elapsed_us= fps= mbps=`, timed with rdtsc. Use it with
//! `event_idx=1`, as drivers do, or every frame costs a notification.

use super::{Ctx, Outcome};
use crate::io::rdtsc;
use crate::report::Line;
use crate::tsc;
use crate::virtio::find::{self, VIRTIO_ID_NET};
use crate::virtio::net::Net;

const ETH_EXP: u16 = 0x88b5;

pub fn run(ctx: &Ctx) -> Outcome {
    let a = &ctx.args;
    let tx = match a.get("dir").unwrap_or(b"tx") {
        b"tx" => true,
        b"rx" => false,
        _ => return Err("bad-arg"),
    };
    let size = a.number("size", 64).map_err(|_| "bad-arg")? as usize;
    let ms = a.number("ms", 2000).map_err(|_| "bad-arg")?;
    let n = a.number("n", u64::MAX).map_err(|_| "bad-arg")?;
    let which = a.number("index", 0).map_err(|_| "bad-arg")? as usize;
    if !(60..=1514).contains(&size) || ms == 0 {
        return Err("bad-arg");
    }
    let (khz, _) = tsc::khz();
    if khz == 0 {
        return Err("no-tsc-freq");
    }
    let (f, access) = find::pick(ctx.boot, a, VIRTIO_ID_NET, which)?;
    let t = find::transport(ctx.boot, a, f, access)?;
    let mut net = Net::open(t, !tx)?;
    let mac = net.mac;
    let (mut frames, mut bytes) = (0u64, 0u64);
    let mut t0 = rdtsc();
    let mut end = t0 + tsc::us_to_ticks(ms * 1000);
    let mut started = tx;
    while frames < n && rdtsc() < end {
        if tx {
            let sent = net.send(&mut |b| {
                b[..6].fill(0xff);
                b[6..12].copy_from_slice(&mac);
                b[12..14].copy_from_slice(&ETH_EXP.to_be_bytes());
                b[14..size].fill(0x5a);
                size
            });
            if sent.is_ok() {
                frames += 1;
                bytes += size as u64;
            }
        } else {
            let mut got = 0usize;
            if !net.recv(&mut |f| got = f.len()) {
                core::hint::spin_loop();
                continue;
            }
            if !started {
                // The clock starts at the first frame: the host's sender
                // may begin after the probe is ready.
                started = true;
                t0 = rdtsc();
                end = t0 + tsc::us_to_ticks(ms * 1000);
                continue;
            }
            if got > 0 {
                frames += 1;
                bytes += got as u64;
            }
        }
    }
    let ticks = rdtsc() - t0;
    let ns = (ticks as u128 * 1_000_000 / khz as u128).max(1) as u64;
    let fps = frames as u128 * 1_000_000_000 / ns as u128;
    let mbps = bytes as u128 * 8 * 1000 / ns as u128;
    Line::topic("net-bench")
        .kv_word("dir", if tx { "tx" } else { "rx" })
        .kv_u("size", size as u64)
        .kv_u("frames", frames)
        .kv_u("elapsed_us", ns / 1000)
        .kv_u("fps", fps as u64)
        .kv_u("mbps", mbps as u64)
        .kv_u("notifies", net.tx.notifies + net.rx.notifies)
        .emit();
    if frames == 0 {
        return Err("net-bench-no-frames");
    }
    Ok(())
}
