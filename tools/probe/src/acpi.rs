//! ACPI table discovery and the few tables the probe reads: MADT (CPU list)
//! and FADT + DSDT `\_S5_` (power-off). Every table is checksummed and its
//! length bounded before use: a bad VMM table must yield a clean failure,
//! never a read past the mapped 4 GiB.

use crate::io::{phys_ok, phys_u16, phys_u32, phys_u64, phys_u8};
use crate::once::Once;

const HEADER_LEN: u32 = 36;
/// No table the probe reads is anywhere near this; a bigger length means a
/// corrupt header, and summing it through unassigned MMIO would take ages.
const TABLE_MAX: u32 = 1 << 20;
const ROOT_MAX_ENTRIES: u32 = 256;

#[derive(Clone, Copy)]
pub struct Table {
    pub addr: u64,
    pub len: u32,
}

impl Table {
    pub fn u8(&self, off: u32) -> Option<u8> {
        if off < self.len { phys_u8(self.addr + off as u64) } else { None }
    }
    pub fn u32(&self, off: u32) -> Option<u32> {
        if off + 4 <= self.len { phys_u32(self.addr + off as u64) } else { None }
    }
    pub fn u64(&self, off: u32) -> Option<u64> {
        if off + 8 <= self.len { phys_u64(self.addr + off as u64) } else { None }
    }
}

/// Where the root table is: XSDT (8-byte entries) preferred over RSDT.
#[derive(Clone, Copy)]
struct Root {
    table: Table,
    entry_size: u32,
}

static ROOT: Once<Option<Root>> = Once::new();

fn checksum_ok(addr: u64, len: u32) -> bool {
    let mut sum: u8 = 0;
    for i in 0..len as u64 {
        match phys_u8(addr + i) {
            Some(b) => sum = sum.wrapping_add(b),
            None => return false,
        }
    }
    sum == 0
}

/// Validates a table header at `addr` (optionally with a signature).
pub fn table_at(addr: u64, sig: Option<&[u8; 4]>) -> Option<Table> {
    if !phys_ok(addr, HEADER_LEN as u64) {
        return None;
    }
    if let Some(sig) = sig {
        if phys_u32(addr)? != u32::from_le_bytes(*sig) {
            return None;
        }
    }
    let len = phys_u32(addr + 4)?;
    if len < HEADER_LEN || len > TABLE_MAX || !phys_ok(addr, len as u64) {
        return None;
    }
    if !checksum_ok(addr, len) {
        return None;
    }
    Some(Table { addr, len })
}

fn rsdp_valid(addr: u64) -> bool {
    if !phys_ok(addr, 36) || phys_u64(addr) != Some(u64::from_le_bytes(*b"RSD PTR ")) {
        return false;
    }
    if !checksum_ok(addr, 20) {
        return false;
    }
    // ACPI 2.0+ RSDPs also carry an extended checksum over `length` bytes.
    if phys_u8(addr + 15).unwrap_or(0) >= 2 {
        let len = phys_u32(addr + 20).unwrap_or(0);
        if !(36..=4096).contains(&len) || !checksum_ok(addr, len) {
            return false;
        }
    }
    true
}

fn scan_rsdp(start: u64, end: u64) -> Option<u64> {
    let mut a = start;
    while a + 36 <= end {
        if rsdp_valid(a) {
            return Some(a);
        }
        a += 16;
    }
    None
}

/// Finds the RSDP: the loader's hint, else the EBDA's first KiB, else the
/// BIOS area 0xE0000..0xFFFFF.
pub fn find_rsdp(hint: u64) -> Option<u64> {
    if hint != 0 && rsdp_valid(hint) {
        return Some(hint);
    }
    let ebda = (phys_u16(0x40e).unwrap_or(0) as u64) << 4;
    if (0x80000..0xa0000).contains(&ebda) {
        if let Some(a) = scan_rsdp(ebda, ebda + 1024) {
            return Some(a);
        }
    }
    scan_rsdp(0xe0000, 0x100000)
}

/// Locates the root table once; later lookups go through it.
pub fn init(rsdp_hint: u64) {
    ROOT.set(find_root(rsdp_hint));
}

fn find_root(rsdp_hint: u64) -> Option<Root> {
    let rsdp = find_rsdp(rsdp_hint)?;
    if phys_u8(rsdp + 15)? >= 2 {
        let x = phys_u64(rsdp + 24)?;
        if let Some(t) = table_at(x, Some(b"XSDT")) {
            return Some(Root { table: t, entry_size: 8 });
        }
    }
    let r = phys_u32(rsdp + 16)? as u64;
    table_at(r, Some(b"RSDT")).map(|t| Root { table: t, entry_size: 4 })
}

pub fn present() -> bool {
    matches!(ROOT.get(), Some(Some(_)))
}

/// Finds the first valid table with this signature.
pub fn find(sig: &[u8; 4]) -> Option<Table> {
    let root = (*ROOT.get()?)?;
    let n = ((root.table.len - HEADER_LEN) / root.entry_size).min(ROOT_MAX_ENTRIES);
    for i in 0..n {
        let off = HEADER_LEN + i * root.entry_size;
        let addr = if root.entry_size == 8 {
            root.table.u64(off)?
        } else {
            root.table.u32(off)? as u64
        };
        if let Some(t) = table_at(addr, Some(sig)) {
            return Some(t);
        }
    }
    None
}

/// The DSDT named by the FADT (X_DSDT preferred over DSDT).
pub fn dsdt() -> Option<Table> {
    let fadt = find(b"FACP")?;
    let addr = match fadt.u64(140) {
        Some(x) if x != 0 => x,
        _ => fadt.u32(40)? as u64,
    };
    table_at(addr, Some(b"DSDT"))
}

/// Enabled LAPIC ids from the MADT (types 0 and 9), in table order.
/// Returns the number written; ids beyond `out.len()` are counted too, so a
/// caller can tell the list was cut.
pub fn madt_apic_ids(out: &mut [u32]) -> Option<usize> {
    let madt = find(b"APIC")?;
    let mut n = 0;
    let mut off = 44;
    while off + 2 <= madt.len {
        let kind = madt.u8(off)?;
        let len = madt.u8(off + 1)? as u32;
        if len < 2 || off + len > madt.len {
            break;
        }
        // flags bit 0: enabled. (Online-capable-but-disabled CPUs are not
        // started: the VMM did not ask for them to run.)
        let id = match kind {
            0 if len >= 8 && madt.u32(off + 4)? & 1 != 0 => Some(madt.u8(off + 3)? as u32),
            9 if len >= 16 && madt.u32(off + 8)? & 1 != 0 => Some(madt.u32(off + 4)?),
            _ => None,
        };
        if let Some(id) = id {
            if n < out.len() {
                out[n] = id;
            }
            n += 1;
        }
        off += len;
    }
    Some(n)
}

/// SLP_TYPa and SLP_TYPb of `\_S5_` in the DSDT: `NameOp "_S5_" PackageOp
/// PkgLength NumElements elem elem ...`, each element a ZeroOp, OneOp,
/// BytePrefix+byte (or, leniently, a raw small byte).
pub fn s5_sleep_type(dsdt: &Table) -> Option<(u8, u8)> {
    let s5 = u32::from_le_bytes(*b"_S5_");
    let mut off = HEADER_LEN;
    while off + 4 < dsdt.len {
        if dsdt.u32(off)? == s5 {
            let prev = dsdt.u8(off - 1)?;
            let named = prev == 0x08 || (prev == b'\\' && dsdt.u8(off - 2)? == 0x08);
            if named && dsdt.u8(off + 4)? == 0x12 {
                let lead = dsdt.u8(off + 5)?;
                let mut p = off + 5 + 1 + (lead >> 6) as u32 + 1;
                let a = aml_small_int(dsdt, &mut p)?;
                let b = aml_small_int(dsdt, &mut p).unwrap_or(0);
                return Some((a, b));
            }
        }
        off += 1;
    }
    None
}

fn aml_small_int(t: &Table, p: &mut u32) -> Option<u8> {
    let op = t.u8(*p)?;
    let (v, used) = match op {
        0x00 => (0, 1),
        0x01 => (1, 1),
        0x0a => (t.u8(*p + 1)?, 2),
        0x02..=0x09 => (op, 1),
        _ => return None,
    };
    *p += used;
    Some(v)
}
