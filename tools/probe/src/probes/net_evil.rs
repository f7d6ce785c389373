//! `probe=net-evil [ip=..] [peer=..] [port=7] [ms=N]`: malformed
//! descriptor chains on both virtio-net queues (outside RAM, the wrong
//! direction, shorter than the 12-byte header, a loop), each of which the
//! device must return (or at least survive); then the `net` exchange, which
//! must still work. Reports each case; only a dead device fails it.

use super::Outcome;
use crate::io::rdtsc;
use crate::report::Line;
use crate::tsc;
use crate::virtio::net::Net;
use crate::virtio::queue::{Queue, RawDesc, DESC_F_WRITE};
use crate::virtio::{Dma, STATUS_NEEDS_RESET};

static SCRATCH: Dma<4096> = Dma::new();
const FAR: u64 = 1 << 46;

fn one(addr: u64, len: u32, flags: u16) -> [RawDesc; 1] {
    [RawDesc { addr, len, flags, next: None }]
}

/// Queues `descs`, notifies, and waits up to 300 ms for that head.
fn try_case(q: &mut Queue, descs: &[RawDesc]) -> Option<u32> {
    let head = q.submit_raw(descs)?;
    q.kick();
    let end = rdtsc() + tsc::us_to_ticks(300_000);
    while rdtsc() < end {
        if let Some(c) = q.poll() {
            if c.head == head {
                return Some(c.len);
            }
        }
        core::hint::spin_loop();
    }
    None
}

pub fn cases(net: &mut Net) -> Outcome {
    let s = SCRATCH.addr();
    let lp = |flags| {
        [
            RawDesc { addr: s, len: 12, flags, next: Some(1) },
            RawDesc { addr: s + 64, len: 60, flags, next: Some(0) },
        ]
    };
    let (tx_loop, rx_loop) = (lp(0), lp(DESC_F_WRITE));
    let tx: [(&str, &[RawDesc]); 4] = [
        ("tx-bad-addr", &one(FAR, 64, 0)),
        ("tx-writable", &one(s, 64, DESC_F_WRITE)),
        ("tx-short", &one(s, 4, 0)),
        ("tx-loop", &tx_loop),
    ];
    let rx: [(&str, &[RawDesc]); 4] = [
        ("rx-bad-addr", &one(FAR, 2048, DESC_F_WRITE)),
        ("rx-readable", &one(s, 2048, 0)),
        ("rx-short", &one(s, 4, DESC_F_WRITE)),
        ("rx-loop", &rx_loop),
    ];
    let mut returned = 0;
    for (i, (name, descs)) in tx.iter().chain(rx.iter()).enumerate() {
        let q = if i < tx.len() { &mut net.tx } else { &mut net.rx };
        let got = try_case(q, descs);
        let mut l = Line::topic("net-evil");
        l.kv_word("case", name);
        match got {
            Some(len) => {
                returned += 1;
                l.kv_word("result", "returned").kv_u("len", len as u64)
            }
            None => l.kv_word("result", "no-completion"),
        };
        if net.t.status() & STATUS_NEEDS_RESET != 0 {
            l.kv_word("needs_reset", "1");
            l.emit();
            return Err("net-evil-needs-reset");
        }
        l.emit();
    }
    Line::topic("net-evil").kv_u("returned", returned).kv_u("cases", 8).emit();
    Ok(())
}
