//! `probe=kbd [count=N] [wait=MS]`: the i8042 keyboard at CPL3. Drains
//! what the controller holds, reports `probe: kbd-ready`, then polls the
//! status port (0x64) for a full output buffer and reads the data port
//! (0x60) until N bytes (default 2, at most 32) arrived or `wait` ms
//! (default 30000) passed, and reports them in decimal: `probe: kbd
//! bytes=30,158` is the `a` key pressed and released (scancode set 1).

use super::{Ctx, Outcome};
use crate::io::{inb, rdtsc};
use crate::report::Line;
use crate::tsc;

const DATA: u16 = 0x60;
const STATUS: u16 = 0x64;
const OBF: u8 = 1;
const AUX: u8 = 1 << 5;

pub fn run(ctx: &Ctx) -> Outcome {
    let want = ctx.args.number("count", 2).map_err(|_| "bad-arg")? as usize;
    let wait = ctx.args.number("wait", 30_000).map_err(|_| "bad-arg")?;
    if want == 0 || want > 32 {
        return Err("bad-arg");
    }
    // Whatever boot left behind (at most the controller's buffer).
    for _ in 0..64 {
        if inb(STATUS) & OBF == 0 {
            break;
        }
        inb(DATA);
    }
    Line::topic("kbd-ready").kv_u("count", want as u64).emit();
    let mut got = [0u32; 32];
    let mut n = 0;
    let end = rdtsc() + tsc::us_to_ticks(wait.saturating_mul(1000));
    while n < want && rdtsc() < end {
        let s = inb(STATUS);
        if s & OBF != 0 {
            let b = inb(DATA);
            if s & AUX == 0 {
                got[n] = b as u32;
                n += 1;
            }
        } else {
            // Each poll is an exit; a short pause keeps them few.
            tsc::delay_us(200);
        }
    }
    Line::topic("kbd").kv_list("bytes", &got[..n]).emit();
    if n < want {
        return Err("kbd-timeout");
    }
    Ok(())
}
