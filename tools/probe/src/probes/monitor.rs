//! Probes for the monitor tests (QMP/HMP).
//!
//! `probe=powerbtn [ms=N]`: arms the ACPI fixed power button (PWRBTN_EN in
//! the PM1a enable register the FADT names), prints `state=armed`, then
//! polls PM1a status at CPL3 until PWRBTN_STS is set (a host's
//! `system_powerdown`), clears it, prints `state=pressed` and returns, so
//! the probe powers off. On a hardware-reduced machine (microvm) whose
//! DSDT has a Generic Event Device (`ACPI0013`), it polls the GED's event
//! selector at QEMU's microvm address instead (reading clears it). Fails
//! with `no-press` after N ms (default 60 s), `no-power-button` without
//! either.
//!
//! `probe=count [lines=N] [period=MS]`: prints `count n=1..N`, one line
//! every MS ms (default 20), so a test sees whether the guest runs.
//!
//! `probe=echo [ms=N]`: prints `echo state=ready`, then reads COM1 (polling
//! the line status register at CPL3) and prints each line it receives as
//! `echo line=...`; the line `quit` ends the probe. Fails with `no-input`
//! after N ms (default 60 s) without a byte.

use super::{Ctx, Outcome};
use crate::acpi;
use crate::io::{inb, inw, mmio_read32, outw, phys_u8};
use crate::report::Line;
use crate::tsc;

const PWRBTN: u16 = 1 << 8;
const FADT_HW_REDUCED: u32 = 1 << 20;
const POLL_US: u64 = 1000;

/// QEMU microvm's GED register (`GED_MMIO_BASE`) and power-down bit.
const GED_BASE: u64 = 0xfea0_0000;
const GED_PWR_DOWN: u32 = 1 << 1;

/// Where the power button is.
enum Button {
    Pm1 { sts: u16, en: u16 },
    Ged,
}

fn dsdt_has(needle: &[u8]) -> bool {
    let Some(d) = acpi::dsdt() else { return false };
    let len = d.len as u64;
    (0..len.saturating_sub(needle.len() as u64)).any(|i| {
        needle
            .iter()
            .enumerate()
            .all(|(j, &b)| phys_u8(d.addr + i + j as u64) == Some(b))
    })
}

fn button() -> Result<Button, &'static str> {
    let fadt = acpi::find(b"FACP").ok_or("no-fadt")?;
    if fadt.u32(112).unwrap_or(0) & FADT_HW_REDUCED != 0 {
        return if dsdt_has(b"ACPI0013") { Ok(Button::Ged) } else { Err("no-power-button") };
    }
    let (sts, len) = pm1a_evt(&fadt)?;
    Ok(Button::Pm1 { sts, en: sts + len / 2 })
}

/// The PM1a event block's port and length (status, then enable).
fn pm1a_evt(fadt: &acpi::Table) -> Result<(u16, u16), &'static str> {
    // X_PM1a_EVT_BLK (a GAS in I/O space) when given, else PM1a_EVT_BLK.
    let x = match (fadt.u8(148), fadt.u64(152)) {
        (Some(1), Some(a)) if a != 0 && a <= 0xffff => Some(a as u16),
        _ => None,
    };
    let port = match x {
        Some(p) => p,
        None => match fadt.u32(56) {
            Some(p) if p != 0 && p <= 0xffff => p as u16,
            _ => return Err("no-pm1a-evt"),
        },
    };
    let len = u16::from(fadt.u8(88).unwrap_or(4));
    if len < 4 {
        return Err("bad-pm1-evt-len");
    }
    Ok((port, len))
}

pub fn powerbtn(ctx: &Ctx) -> Outcome {
    let ms = ctx.args.number("ms", 60_000).map_err(|_| "bad-arg")?;
    let b = button()?;
    let mut l = Line::topic("powerbtn");
    l.kv_word("state", "armed");
    match b {
        Button::Pm1 { sts, en } => {
            // Clear a stale event, then enable the button.
            outw(sts, PWRBTN);
            outw(en, inw(en) | PWRBTN);
            l.kv_hex("pm1a_evt", sts as u64);
        }
        Button::Ged => {
            mmio_read32(GED_BASE);
            l.kv_hex("ged", GED_BASE);
        }
    }
    l.emit();
    let pressed = || match b {
        Button::Pm1 { sts, .. } => inw(sts) & PWRBTN != 0,
        Button::Ged => mmio_read32(GED_BASE) & GED_PWR_DOWN != 0,
    };
    let mut waited = 0;
    while !pressed() {
        if waited >= ms * 1000 {
            return Err("no-press");
        }
        tsc::delay_us(POLL_US);
        waited += POLL_US;
    }
    if let Button::Pm1 { sts, .. } = b {
        outw(sts, PWRBTN);
    }
    Line::topic("powerbtn").kv_word("state", "pressed").emit();
    Ok(())
}

pub fn count(ctx: &Ctx) -> Outcome {
    let lines = ctx.args.number("lines", 100).map_err(|_| "bad-arg")?;
    let period = ctx.args.number("period", 20).map_err(|_| "bad-arg")?;
    for n in 1..=lines {
        tsc::delay_us(period * 1000);
        Line::topic("count").kv_u("n", n).emit();
    }
    Ok(())
}

const COM1: u16 = 0x3f8;
const LSR_DATA_READY: u8 = 1;

pub fn echo(ctx: &Ctx) -> Outcome {
    let ms = ctx.args.number("ms", 60_000).map_err(|_| "bad-arg")?;
    Line::topic("echo").kv_word("state", "ready").emit();
    let mut line = [0u8; 256];
    let mut len = 0;
    let mut idle_us = 0;
    loop {
        if inb(COM1 + 5) & LSR_DATA_READY == 0 {
            if idle_us >= ms * 1000 {
                return Err("no-input");
            }
            tsc::delay_us(100);
            idle_us += 100;
            continue;
        }
        idle_us = 0;
        match inb(COM1) {
            b'\r' | b'\n' if len == 0 => {}
            b'\r' | b'\n' => {
                Line::topic("echo").kv_str("line", &line[..len]).emit();
                if &line[..len] == b"quit" {
                    return Ok(());
                }
                len = 0;
            }
            b if len < line.len() => {
                line[len] = b;
                len += 1;
            }
            _ => {}
        }
    }
}
