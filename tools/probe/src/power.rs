//! Ending the VM: optional isa-debug-exit write (`exit=debug`), then ACPI S5
//! through the FADT (hardware-reduced sleep control register, else PM1a/b
//! control blocks), then an i8042 reset, then parking the CPU. The method is
//! worked out once at boot so the exception path has nothing to parse.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::acpi::{self, Table};
use crate::io::{mmio_write16, mmio_write8, outb, outl, outw};
use crate::once::Once;

const DEBUG_EXIT_PORT: u16 = 0xf4;
const I8042_CMD: u16 = 0x64;
const I8042_RESET: u8 = 0xfe;
const FADT_HW_REDUCED: u32 = 1 << 20;
const SLP_EN_HW_REDUCED: u8 = 1 << 5;
const SLP_EN_PM1: u16 = 1 << 13;

/// A Generic Address Structure reduced to what the probe can write.
#[derive(Clone, Copy)]
struct Gas {
    io: bool,
    addr: u64,
}

#[derive(Clone, Copy)]
enum Method {
    /// HW-reduced ACPI: `(SLP_TYP << 2) | SLP_EN`, 8 bits.
    SleepControl { reg: Gas, typ: u8 },
    /// `(SLP_TYP << 10) | SLP_EN`, 16 bits, to PM1a (and PM1b if present).
    Pm1 { a: Gas, b: Option<Gas>, typ_a: u8, typ_b: u8 },
}

static METHOD: Once<Option<Method>> = Once::new();
static EXIT_DEBUG: AtomicBool = AtomicBool::new(false);

pub fn set_exit_debug(on: bool) {
    EXIT_DEBUG.store(on, Ordering::Relaxed);
}

fn gas(t: &Table, off: u32) -> Option<Gas> {
    let space = t.u8(off)?;
    let addr = t.u64(off + 4)?;
    match space {
        0 if addr != 0 => Some(Gas { io: false, addr }),
        1 if addr != 0 && addr <= 0xffff => Some(Gas { io: true, addr }),
        _ => None,
    }
}

fn find_method() -> Option<Method> {
    let fadt = acpi::find(b"FACP")?;
    let dsdt = acpi::dsdt()?;
    let (typ_a, typ_b) = acpi::s5_sleep_type(&dsdt)?;
    let flags = fadt.u32(112).unwrap_or(0);
    if flags & FADT_HW_REDUCED != 0 {
        let reg = gas(&fadt, 244)?;
        return Some(Method::SleepControl { reg, typ: typ_a });
    }
    let port = |legacy_off: u32, gas_off: u32| -> Option<Gas> {
        gas(&fadt, gas_off).or_else(|| match fadt.u32(legacy_off) {
            Some(p) if p != 0 && p <= 0xffff => Some(Gas { io: true, addr: p as u64 }),
            _ => None,
        })
    };
    let a = port(64, 172)?;
    let b = port(68, 184);
    Some(Method::Pm1 { a, b, typ_a, typ_b })
}

/// Works out the ACPI power-off method (call after `acpi::init`).
pub fn prepare() {
    METHOD.set(find_method());
}

/// Word for reports: how the probe will try to power off.
pub fn method_name() -> &'static str {
    match METHOD.get() {
        Some(Some(Method::SleepControl { .. })) => "acpi-sleep-control",
        Some(Some(Method::Pm1 { .. })) => "acpi-pm1",
        _ => "i8042",
    }
}

/// SLP_TYP in use (S5 value from the DSDT), if ACPI power-off is possible.
pub fn slp_typ() -> Option<u8> {
    match METHOD.get() {
        Some(Some(Method::SleepControl { typ, .. })) => Some(*typ),
        Some(Some(Method::Pm1 { typ_a, .. })) => Some(*typ_a),
        _ => None,
    }
}

fn write8(g: Gas, v: u8) {
    if g.io { outb(g.addr as u16, v) } else { mmio_write8(g.addr, v) }
}

fn write16(g: Gas, v: u16) {
    if g.io { outw(g.addr as u16, v) } else { mmio_write16(g.addr, v) }
}

/// Ends the VM; never returns. Safe to call at CPL0 (exception path) too.
pub fn off(ok: bool) -> ! {
    if EXIT_DEBUG.load(Ordering::Relaxed) {
        // QEMU exits with (value << 1) | 1: 1 for ok, 3 for fail.
        outl(DEBUG_EXIT_PORT, if ok { 0 } else { 1 });
    }
    match METHOD.get() {
        Some(Some(Method::SleepControl { reg, typ })) => {
            write8(*reg, ((typ & 7) << 2) | SLP_EN_HW_REDUCED);
        }
        Some(Some(Method::Pm1 { a, b, typ_a, typ_b })) => {
            write16(*a, ((*typ_a as u16 & 7) << 10) | SLP_EN_PM1);
            if let Some(b) = b {
                write16(*b, ((*typ_b as u16 & 7) << 10) | SLP_EN_PM1);
            }
        }
        _ => {}
    }
    // A VMM may act on S5 asynchronously; give it time before asking for a
    // reset, which without -no-reboot would restart the guest instead.
    crate::tsc::delay_us(100_000);
    outb(I8042_CMD, I8042_RESET);
    crate::tsc::delay_us(100_000);
    crate::boot::park()
}
