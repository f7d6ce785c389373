//! `probe=fault kind=pf|ud|gp`: takes a deliberate CPU exception at CPL3 so
//! a VMM's tests can check the failure path (exception report, then
//! `done status=fail reason=exception` and power-off).

use super::{Ctx, Outcome};

/// Above the 4 GiB the page tables map: not present.
const UNMAPPED: u64 = 0x1_0000_0000;

pub fn run(ctx: &Ctx) -> Outcome {
    match ctx.args.get("kind").unwrap_or(b"pf") {
        b"pf" => {
            // SAFETY: deliberately faults (#PF); the handler never returns here.
            unsafe { core::ptr::read_volatile(UNMAPPED as *const u8) };
        }
        b"ud" => {
            // SAFETY: deliberately faults (#UD) away from the park address.
            unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
        }
        b"gp" => {
            // SAFETY: deliberately faults (#GP: hlt is privileged at CPL3).
            unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
        }
        _ => return Err("bad-arg"),
    }
    Err("no-fault")
}
