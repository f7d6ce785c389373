//! `probe=hello`: proves boot works end to end. Reports the entry used, the
//! command line, memory from the e820 map, and brings up every CPU listed in
//! the MADT (or MP table) and reports their APIC ids.

use super::{Ctx, Outcome};
use crate::boot::MAX_CPUS;
use crate::bootinfo::E820_RAM;
use crate::report::Line;
use crate::{acpi, mptable, power, smp};

const AP_TIMEOUT_US: u64 = 2_000_000;

pub fn run(ctx: &Ctx) -> Outcome {
    let boot = ctx.boot;
    Line::topic("hello").kv_word("entry", boot.entry.name()).emit();

    let mut l = Line::new();
    l.kv_str("cmdline", boot.cmdline());
    if boot.cmdline_truncated {
        l.kv_word("cmdline_truncated", "1");
    }
    l.emit();

    let usable: u64 = boot
        .e820()
        .iter()
        .filter(|e| e.kind == E820_RAM)
        .fold(0u64, |acc, e| acc.saturating_add(e.size));
    Line::new()
        .kv_u("mem_mib", usable.div_ceil(1 << 20))
        .kv_u("e820_usable_bytes", usable)
        .kv_u("e820_entries", boot.e820().len() as u64)
        .emit();

    let mut l = Line::new();
    l.kv_word("acpi", if acpi::present() { "1" } else { "0" })
        .kv_word("poweroff", power::method_name());
    if let Some(t) = power::slp_typ() {
        l.kv_u("slp_typ", t as u64);
    }
    l.emit();

    cpus()
}

fn cpus() -> Outcome {
    let mut listed = [0u32; MAX_CPUS];
    let (n, src) = match acpi::madt_apic_ids(&mut listed) {
        Some(n) if n > 0 => (n, "madt"),
        _ => match mptable::apic_ids(&mut listed) {
            Some(n) if n > 0 => (n, "mptable"),
            _ => (0, "none"),
        },
    };
    if n > MAX_CPUS {
        Line::new().kv_u("cpus_listed", n as u64).kv_u("cpus_max", MAX_CPUS as u64).emit();
        return Err("too-many-cpus");
    }
    let bsp = smp::apic_id();
    let listed = &listed[..n];
    // Start-up IPIs go through the xAPIC ICR, whose destination is 8 bits.
    if listed.iter().any(|&id| id > 0xfe) {
        Line::new().kv_list("apic_ids_listed", listed).emit();
        return Err("x2apic-id");
    }
    let mut ids = [0u32; MAX_CPUS];
    ids[0] = bsp;
    let started = smp::start_aps(listed, bsp, AP_TIMEOUT_US, &mut ids[1..]);
    let total = 1 + started;
    let ids = &mut ids[..total];
    ids.sort_unstable();
    let expected = if listed.contains(&bsp) { n } else { n + 1 }.max(1);
    Line::new()
        .kv_u("cpus", total as u64)
        .kv_list("apic_ids", ids)
        .kv_u("bsp_apic_id", bsp as u64)
        .kv_word("cpus_src", src)
        .emit();
    if total < expected {
        return Err("ap-timeout");
    }
    Ok(())
}
