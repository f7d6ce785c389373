//! Intel MultiProcessor table fallback for finding CPUs when there is no
//! ACPI MADT: the "_MP_" floating pointer (EBDA, top of base memory, BIOS
//! area) leads to the "PCMP" configuration table and its processor entries.

use crate::io::{phys_ok, phys_u16, phys_u32, phys_u8};

fn sum_ok(addr: u64, len: u64) -> bool {
    let mut s: u8 = 0;
    for i in 0..len {
        match phys_u8(addr + i) {
            Some(b) => s = s.wrapping_add(b),
            None => return false,
        }
    }
    s == 0
}

fn scan(start: u64, end: u64) -> Option<u64> {
    let mut a = start;
    while a + 16 <= end {
        if phys_u32(a) == Some(u32::from_le_bytes(*b"_MP_")) && phys_u8(a + 8) == Some(1) && sum_ok(a, 16) {
            return Some(a);
        }
        a += 16;
    }
    None
}

fn find_floating() -> Option<u64> {
    let ebda = (phys_u16(0x40e).unwrap_or(0) as u64) << 4;
    if (0x80000..0xa0000).contains(&ebda) {
        if let Some(a) = scan(ebda, ebda + 1024) {
            return Some(a);
        }
    }
    scan(0x9fc00, 0xa0000).or_else(|| scan(0xf0000, 0x100000))
}

/// Enabled processors' LAPIC ids; same return convention as
/// `acpi::madt_apic_ids`.
pub fn apic_ids(out: &mut [u32]) -> Option<usize> {
    let fp = find_floating()?;
    let cfg = phys_u32(fp + 4)? as u64;
    if !phys_ok(cfg, 44) || phys_u32(cfg) != Some(u32::from_le_bytes(*b"PCMP")) {
        return None;
    }
    let len = phys_u16(cfg + 4)? as u64;
    if len < 44 || !phys_ok(cfg, len) || !sum_ok(cfg, len) {
        return None;
    }
    // Walk by table length, not the entry count: qboot leaves the count 0
    // (Linux walks by length too).
    let mut off = 44;
    let mut n = 0;
    while off < len {
        let kind = phys_u8(cfg + off)?;
        let size = if kind == 0 { 20 } else { 8 };
        if off + size > len {
            break;
        }
        if kind == 0 && phys_u8(cfg + off + 3)? & 1 != 0 {
            if n < out.len() {
                out[n] = phys_u8(cfg + off + 1)? as u32;
            }
            n += 1;
        }
        off += size;
    }
    Some(n)
}
