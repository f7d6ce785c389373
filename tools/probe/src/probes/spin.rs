//! `probe=spin ms=N [mark=ADDR]`: keeps the guest alive for N ms (CPL3 busy
//! loop on rdtsc) so a test can inspect the running VMM. With `mark=ADDR`
//! it first writes the 16 bytes `casemate-mark-ok` at guest physical ADDR,
//! for tests that read guest RAM from another process.

use super::{Ctx, Outcome};
use crate::io::{phys_ok, phys_write_bytes};
use crate::report::Line;
use crate::tsc;

pub const MARK: &[u8; 16] = b"casemate-mark-ok";

pub fn run(ctx: &Ctx) -> Outcome {
    let ms = ctx.args.number("ms", 1000).map_err(|_| "bad-arg")?;
    let mark = ctx.args.number("mark", 0).map_err(|_| "bad-arg")?;
    let mut l = Line::topic("spin");
    l.kv_u("ms", ms);
    if mark != 0 {
        if !phys_ok(mark, MARK.len() as u64) {
            return Err("bad-arg");
        }
        phys_write_bytes(mark, MARK);
        l.kv_hex("mark", mark);
    }
    // The line goes out after the mark is written: a test reading it knows
    // guest RAM holds the mark.
    l.emit();
    tsc::delay_us(ms.saturating_mul(1000));
    Ok(())
}
