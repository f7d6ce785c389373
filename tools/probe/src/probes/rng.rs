//! `probe=rng [bytes=N] [index=N]`: reads N random bytes (default 64, at
//! most 4096) in one request from virtio-rng device N (default the first;
//! virtio-mmio ones before virtio-pci) and checks the device returned some
//! and that they are not all equal.

use super::{Ctx, Outcome};
use crate::report::Line;
use crate::virtio::find::{self, bdf_str, VIRTIO_ID_RNG};
use crate::virtio::rng::{Rng, BYTES};
use crate::virtio::Transport;

pub fn run(ctx: &Ctx) -> Outcome {
    let want = ctx.args.number("bytes", 64).map_err(|_| "bad-arg")?;
    if want == 0 {
        return Err("bad-arg");
    }
    let n = (want as usize).min(BYTES.len());
    let which = ctx.args.number("index", 0).map_err(|_| "bad-arg")? as usize;
    let (f, access) = find::pick(ctx.boot, &ctx.args, VIRTIO_ID_RNG, which)?;
    let t = find::transport(ctx.boot, &ctx.args, f, access)?;
    let mut rng = Rng::open(t)?;
    let mut l = Line::topic("rng");
    l.kv_word("transport", rng.t.name());
    match &rng.t {
        Transport::Mmio(m) => l.kv_hex("base", m.base),
        Transport::Pci(p) => l.kv_word("bdf", bdf_str(p.bdf).as_str()).kv_hex("common", p.common),
    };
    l.kv_hex("negotiated", rng.features).kv_u("queue_size", rng.q.size as u64).emit();

    // QEMU's rng-random backend answers at once; a rate-limited backend may
    // take a while: 5 s like a block request.
    let got = rng.fill(n, 5_000_000)?;
    let bytes = rng.bytes(got);
    let mut seen = [false; 256];
    for &b in bytes {
        seen[b as usize] = true;
    }
    let distinct = seen.iter().filter(|&&s| s).count();
    Line::topic("rng")
        .kv_word("transport", rng.t.name())
        .kv_u("bytes", got as u64)
        .kv_u("asked", n as u64)
        .kv_u("distinct", distinct as u64)
        .emit();
    if got == 0 {
        return Err("rng-no-bytes");
    }
    if distinct < 2 && got > 1 {
        return Err("rng-all-equal");
    }
    Ok(())
}
