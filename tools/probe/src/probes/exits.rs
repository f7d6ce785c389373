//! `probe=exits n=N [mmio=ADDR]`: the cost of a VM exit seen from the guest.
//! Times N port writes to 0x80 and N MMIO reads from ADDR (default
//! 0xc0000000, where nothing is mapped), each of which exits to the VMM, with
//! rdtsc at CPL3, and reports the mean per access in nanoseconds.

use super::{Ctx, Outcome};
use crate::io::{mmio_read32, outb, phys_ok, rdtsc};
use crate::report::Line;
use crate::tsc;

const DEFAULT_N: u64 = 1000;
const DEFAULT_MMIO: u64 = 0xc000_0000;

pub fn run(ctx: &Ctx) -> Outcome {
    let n = ctx.args.number("n", DEFAULT_N).map_err(|_| "bad-arg")?;
    let mmio = ctx.args.number("mmio", DEFAULT_MMIO).map_err(|_| "bad-arg")?;
    if n == 0 || !phys_ok(mmio, 4) || mmio % 4 != 0 {
        return Err("bad-arg");
    }
    let (khz, src) = tsc::khz();
    if khz == 0 {
        return Err("no-tsc-freq");
    }

    let t0 = rdtsc();
    for _ in 0..n {
        outb(0x80, 0);
    }
    let t1 = rdtsc();
    for _ in 0..n {
        core::hint::black_box(mmio_read32(mmio));
    }
    let t2 = rdtsc();

    Line::topic("exits")
        .kv_u("n", n)
        .kv_u("pio_ns", ticks_to_ns(t1 - t0, khz) / n)
        .kv_u("mmio_ns", ticks_to_ns(t2 - t1, khz) / n)
        .kv_u("tsc_khz", khz)
        .kv_word("tsc_src", src)
        .emit();
    Ok(())
}

fn ticks_to_ns(ticks: u64, khz: u64) -> u64 {
    // ticks * 1e6 / khz without overflowing for runs up to hours.
    (ticks / khz) * 1_000_000 + (ticks % khz) * 1_000_000 / khz
}
