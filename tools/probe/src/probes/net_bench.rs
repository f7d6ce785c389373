//! `probe=net-bench dir=tx|rx|tso size=BYTES ms=MS [n=FRAMES] [index=N]`:
//! frames of `size` bytes (the Ethernet frame, 60..=1514, without the
//! virtio header) through virtio-net device N for `ms` milliseconds (or
//! `n` frames). `tx` sends broadcast frames of EtherType 0x88b5 (local
//! experimental: the host stack drops them) as fast as the transmit ring
//! takes them; `rx` counts the frames the host sends in (tools/netbench
//! floods the tap) from the first one on. Prints `probe: net-bench dir=
//! size= frames= elapsed_us= fps= mbps=`, timed with rdtsc. Use it with
//! `event_idx=1`, as drivers do, or every frame costs a notification.
//! `tso` negotiates CSUM and HOST_TSO4 and sends one TCP/IPv4 frame of
//! `TSO_FRAME` bytes (10.0.2.15 to 10.0.2.2, partial checksum, GSO
//! TCPV4 with a 1448-byte MSS in its virtio header) over and over: the
//! host segments it if it forwards it; `mbps` counts the frame bytes.

use super::{Ctx, Outcome};
use crate::io::rdtsc;
use crate::report::Line;
use crate::tsc;
use crate::virtio::find::{self, VIRTIO_ID_NET};
use crate::virtio::net::{Net, F_CSUM, F_HOST_TSO4};
use crate::virtio::Dma;

const ETH_EXP: u16 = 0x88b5;
/// The TSO frame: Ethernet, IPv4 (total length 65000) and TCP headers and
/// payload, behind the 12-byte virtio header.
const TSO_FRAME: usize = 14 + 65000;
static TSO_MEM: Dma<{ 12 + TSO_FRAME }> = Dma::new();

/// Write the virtio header and the TCP/IPv4 frame into TSO_MEM.
fn build_tso(mac: [u8; 6]) {
    // SAFETY: the probe's own buffer, not yet handed to the device.
    let b = unsafe { core::slice::from_raw_parts_mut(TSO_MEM.addr() as *mut u8, 12 + TSO_FRAME) };
    // virtio_net_hdr_v1: NEEDS_CSUM, GSO_TCPV4, hdr_len, gso_size,
    // csum_start, csum_offset, num_buffers.
    b[0] = 1;
    b[1] = 1;
    b[2..4].copy_from_slice(&54u16.to_le_bytes());
    b[4..6].copy_from_slice(&1448u16.to_le_bytes());
    b[6..8].copy_from_slice(&34u16.to_le_bytes());
    b[8..10].copy_from_slice(&16u16.to_le_bytes());
    b[10..12].fill(0);
    let f = &mut b[12..];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((TSO_FRAME - 14) as u16).to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&[10, 0, 2, 15]);
    ip[16..20].copy_from_slice(&[10, 0, 2, 2]);
    let mut s: u32 = ip.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    ip[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
    let tcp = &mut f[34..54];
    tcp[..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&9u16.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18; // PSH, ACK
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    // A partial checksum holds the pseudo-header's sum, not inverted.
    let len = (TSO_FRAME - 34) as u32;
    let mut s: u32 = 0x0a00 + 0x020f + 0x0a00 + 0x0202 + 6 + len;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    tcp[16..18].copy_from_slice(&(s as u16).to_be_bytes());
    f[54..].fill(0x5a);
}

pub fn run(ctx: &Ctx) -> Outcome {
    let a = &ctx.args;
    let (tx, tso) = match a.get("dir").unwrap_or(b"tx") {
        b"tx" => (true, false),
        b"rx" => (false, false),
        b"tso" => (true, true),
        _ => return Err("bad-arg"),
    };
    let size = a.number("size", 64).map_err(|_| "bad-arg")? as usize;
    let ms = a.number("ms", 2000).map_err(|_| "bad-arg")?;
    let n = a.number("n", u64::MAX).map_err(|_| "bad-arg")?;
    let which = a.number("index", 0).map_err(|_| "bad-arg")? as usize;
    if (!tso && !(60..=1514).contains(&size)) || ms == 0 {
        return Err("bad-arg");
    }
    let (khz, _) = tsc::khz();
    if khz == 0 {
        return Err("no-tsc-freq");
    }
    let (f, access) = find::pick(ctx.boot, a, VIRTIO_ID_NET, which)?;
    let t = find::transport(ctx.boot, a, f, access)?;
    let mut net = Net::open_with(t, !tx, if tso { F_CSUM | F_HOST_TSO4 } else { 0 })?;
    let mac = net.mac;
    if tso && net.features & (F_CSUM | F_HOST_TSO4) != F_CSUM | F_HOST_TSO4 {
        return Err("net-bench-no-tso");
    }
    let size = if tso { TSO_FRAME } else { size };
    if tso {
        build_tso(mac);
    }
    let (mut frames, mut bytes) = (0u64, 0u64);
    let mut t0 = rdtsc();
    let mut end = t0 + tsc::us_to_ticks(ms * 1000);
    let mut started = tx;
    while frames < n && rdtsc() < end {
        if tso {
            if net.send_shared(TSO_MEM.addr(), (12 + TSO_FRAME) as u32).is_ok() {
                frames += 1;
                bytes += size as u64;
            }
        } else if tx {
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
        .kv_word("dir", if tso { "tso" } else if tx { "tx" } else { "rx" })
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
