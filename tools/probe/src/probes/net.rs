//! `probe=net [ip=10.0.2.15] [peer=IP] [port=7] [ms=3000] [index=N]`: a
//! tiny IPv4 host on virtio-net device N. For `ms` milliseconds it answers
//! ARP requests for `ip`, ICMP echo requests to it, and echoes UDP
//! datagrams sent to `port` back to their sender. With `peer=`, it first
//! sends an ARP request for the peer (so the host learns the guest's MAC).
//! Then it reports its counters; it fails (`net-nothing-received`) when
//! no frame arrived at all. `rx=0` posts no receive buffers at all (the
//! host's flood test): the probe then only waits and cannot fail so.
//! `event_idx=1` (read by every virtio probe) negotiates EVENT_IDX.

use super::{Ctx, Outcome};
use crate::io::rdtsc;
use crate::report::Line;
use crate::tsc;
use crate::virtio::find::{self, bdf_str, VIRTIO_ID_NET};
use crate::virtio::net::Net;
use crate::virtio::Transport;

const ETH_ARP: u16 = 0x0806;
const ETH_IP: u16 = 0x0800;
const MAX_FRAME: usize = 1600;

#[derive(Default)]
struct Counts {
    rx: u64,
    tx: u64,
    arp: u64,
    icmp: u64,
    udp: u64,
    ignored: u64,
}

/// `a.b.c.d`.
fn parse_ip(s: &[u8]) -> Option<[u8; 4]> {
    let mut ip = [0u8; 4];
    let mut parts = s.split(|&c| c == b'.');
    for b in &mut ip {
        let v = crate::cmdline::parse_u64(parts.next()?)?;
        *b = u8::try_from(v).ok()?;
    }
    parts.next().is_none().then_some(ip)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The Internet checksum (RFC 1071) of `b`.
fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

pub struct Host {
    mac: [u8; 6],
    ip: [u8; 4],
    port: u16,
}

impl Host {
    /// The reply to `f` written into `out`; its length (0: none) and which
    /// counter it is for.
    fn answer(&self, f: &[u8], out: &mut [u8; MAX_FRAME], c: &mut Counts) -> usize {
        if f.len() < 14 || f.len() > MAX_FRAME {
            return 0;
        }
        let to_us = f[..6] == self.mac || f[..6] == [0xff; 6];
        if !to_us {
            return 0;
        }
        match be16(f, 12) {
            ETH_ARP => self.arp(f, out, c),
            ETH_IP => self.ipv4(f, out, c),
            _ => 0,
        }
    }

    fn arp(&self, f: &[u8], out: &mut [u8; MAX_FRAME], c: &mut Counts) -> usize {
        let a = &f[14..];
        if a.len() < 28 || be16(a, 0) != 1 || be16(a, 2) != ETH_IP || be16(a, 6) != 1 || a[24..28] != self.ip {
            return 0;
        }
        out[..6].copy_from_slice(&a[8..14]);
        out[6..12].copy_from_slice(&self.mac);
        out[12..14].copy_from_slice(&ETH_ARP.to_be_bytes());
        let r = &mut out[14..42];
        r[..6].copy_from_slice(&a[..6]); // htype, ptype, hlen, plen
        r[6..8].copy_from_slice(&2u16.to_be_bytes());
        r[8..14].copy_from_slice(&self.mac);
        r[14..18].copy_from_slice(&self.ip);
        r[18..28].copy_from_slice(&a[8..18]); // the asker's MAC and IP
        c.arp += 1;
        42
    }

    fn ipv4(&self, f: &[u8], out: &mut [u8; MAX_FRAME], c: &mut Counts) -> usize {
        let ip = &f[14..];
        if ip.len() < 20 || ip[0] >> 4 != 4 {
            return 0;
        }
        let ihl = usize::from(ip[0] & 0xf) * 4;
        let total = usize::from(be16(ip, 2));
        if ihl < 20 || total < ihl || total > ip.len() || ip[16..20] != self.ip {
            return 0;
        }
        // Fragments are not reassembled.
        if be16(ip, 6) & 0x3fff != 0 {
            return 0;
        }
        let n = 14 + total;
        out[..n].copy_from_slice(&f[..n]);
        let payload = 14 + ihl;
        match ip[9] {
            1 if total >= ihl + 8 && ip[ihl] == 8 => {
                let icmp = &mut out[payload..n];
                icmp[0] = 0;
                icmp[2..4].fill(0);
                let s = csum(icmp);
                icmp[2..4].copy_from_slice(&s.to_be_bytes());
                c.icmp += 1;
            }
            17 if total >= ihl + 8 && be16(ip, ihl + 2) == self.port => {
                let udp = &mut out[payload..n];
                let (sp, dp) = ([udp[0], udp[1]], [udp[2], udp[3]]);
                udp[..2].copy_from_slice(&dp);
                udp[2..4].copy_from_slice(&sp);
                // No UDP checksum (allowed over IPv4).
                udp[6..8].fill(0);
                c.udp += 1;
            }
            _ => return 0,
        }
        // Back to the sender: swap addresses, fresh TTL and checksum.
        let (src_mac, dst_ip) = ([f[6], f[7], f[8], f[9], f[10], f[11]], [ip[12], ip[13], ip[14], ip[15]]);
        out[..6].copy_from_slice(&src_mac);
        out[6..12].copy_from_slice(&self.mac);
        let h = &mut out[14..14 + ihl];
        h[8] = 64;
        h[12..16].copy_from_slice(&self.ip);
        h[16..20].copy_from_slice(&dst_ip);
        h[10..12].fill(0);
        let s = csum(h);
        h[10..12].copy_from_slice(&s.to_be_bytes());
        n
    }
}

/// Who-has `peer`, tell `ip`.
fn arp_request(mac: [u8; 6], ip: [u8; 4], peer: [u8; 4], out: &mut [u8]) -> usize {
    out[..6].fill(0xff);
    out[6..12].copy_from_slice(&mac);
    out[12..14].copy_from_slice(&ETH_ARP.to_be_bytes());
    let a = &mut out[14..42];
    a[..8].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    a[8..14].copy_from_slice(&mac);
    a[14..18].copy_from_slice(&ip);
    a[18..24].fill(0);
    a[24..28].copy_from_slice(&peer);
    42
}

/// Answers for `ms` milliseconds (after an ARP request for `peer`).
fn serve(net: &mut Net, host: &Host, peer: Option<[u8; 4]>, ms: u64) -> Result<Counts, &'static str> {
    let mut c = Counts::default();
    if let Some(p) = peer {
        net.send(&mut |b| arp_request(host.mac, host.ip, p, b))?;
        c.tx += 1;
    }
    let end = rdtsc() + tsc::us_to_ticks(ms * 1000);
    let mut out = [0u8; MAX_FRAME];
    while rdtsc() < end {
        let mut n = 0;
        let got = net.recv(&mut |f| {
            c.rx += 1;
            n = host.answer(f, &mut out, &mut c);
            if n == 0 {
                c.ignored += 1;
            }
        });
        if n > 0 {
            // A full transmit ring drops the reply, as a NIC would.
            if net
                .send(&mut |b| {
                    b[..n].copy_from_slice(&out[..n]);
                    n
                })
                .is_ok()
            {
                c.tx += 1;
            }
        }
        if !got {
            core::hint::spin_loop();
        }
    }
    Ok(c)
}

/// The counters line; Err when nothing arrived though buffers were posted.
fn report(c: &Counts, post_rx: bool) -> Outcome {
    Line::topic("net")
        .kv_u("rx", c.rx)
        .kv_u("tx", c.tx)
        .kv_u("arp", c.arp)
        .kv_u("icmp", c.icmp)
        .kv_u("udp", c.udp)
        .kv_u("ignored", c.ignored)
        .emit();
    if c.rx == 0 && post_rx {
        return Err("net-nothing-received");
    }
    Ok(())
}

/// `ip=`, `peer=`, `port=`, `ms=` and the device, opened.
struct Setup {
    net: Net,
    host: Host,
    peer: Option<[u8; 4]>,
    ms: u64,
}

fn setup(ctx: &Ctx, post_rx: bool) -> Result<Setup, &'static str> {
    let ip = match ctx.args.get("ip") {
        None => [10, 0, 2, 15],
        Some(v) => parse_ip(v).ok_or("bad-arg")?,
    };
    let peer = ctx.args.get("peer").map(|v| parse_ip(v).ok_or("bad-arg")).transpose()?;
    let port = u16::try_from(ctx.args.number("port", 7).map_err(|_| "bad-arg")?).map_err(|_| "bad-arg")?;
    let ms = ctx.args.number("ms", 3000).map_err(|_| "bad-arg")?;
    let which = ctx.args.number("index", 0).map_err(|_| "bad-arg")? as usize;
    let (f, access) = find::pick(ctx.boot, &ctx.args, VIRTIO_ID_NET, which)?;
    let t = find::transport(ctx.boot, &ctx.args, f, access)?;
    let net = Net::open(t, post_rx)?;
    let mut l = Line::topic("net");
    l.kv_word("transport", net.t.name());
    match &net.t {
        Transport::Mmio(m) => l.kv_hex("base", m.base),
        Transport::Pci(p) => l.kv_word("bdf", bdf_str(p.bdf).as_str()).kv_hex("common", p.common),
    };
    let mut mac_text = [0u8; 17];
    for (i, b) in net.mac.iter().enumerate() {
        let hex = b"0123456789abcdef";
        mac_text[3 * i] = hex[usize::from(b >> 4)];
        mac_text[3 * i + 1] = hex[usize::from(b & 0xf)];
        if i < 5 {
            mac_text[3 * i + 2] = b':';
        }
    }
    l.kv_str("mac", &mac_text)
        .kv_hex("negotiated", net.features)
        .kv_u("event_idx", u64::from(net.features & crate::virtio::F_EVENT_IDX != 0))
        .kv_u("mtu", u64::from(net.mtu))
        .kv_u("queue_size", net.rx.size as u64)
        .kv_u("ms", ms)
        .kv_u("rx_posted", u64::from(post_rx))
        .emit();

    let host = Host { mac: net.mac, ip, port };
    Ok(Setup { net, host, peer, ms })
}

pub fn run(ctx: &Ctx) -> Outcome {
    let post_rx = ctx.args.number("rx", 1).map_err(|_| "bad-arg")? != 0;
    let mut s = setup(ctx, post_rx)?;
    let c = serve(&mut s.net, &s.host, s.peer, s.ms)?;
    report(&c, post_rx)
}

/// `probe=net-evil`: malformed chains on both queues first (each must
/// come back, with nothing written), then the `net` exchange.
pub fn run_evil(ctx: &Ctx) -> Outcome {
    let mut s = setup(ctx, false)?;
    super::net_evil::cases(&mut s.net)?;
    s.net.post_all_rx()?;
    let c = serve(&mut s.net, &s.host, s.peer, s.ms)?;
    report(&c, true)
}
