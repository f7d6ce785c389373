//! PCI configuration access and bus enumeration. Access goes through ECAM
//! when the ACPI MCFG table gives one (one MMIO exit per access) and falls
//! back to configuration mechanism #1 at 0xCF8/0xCFC (two port exits);
//! `pci=cam|ecam` on the command line forces one. Also a small BAR
//! allocator for BARs that no firmware assigned (direct kernel boot).

use crate::acpi;
use crate::bootinfo::E820;
use crate::io::{inl, mmio_read32, mmio_write16, mmio_write32, outl, outw, phys_ok};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Cam,
    Ecam { base: u64, start_bus: u8, end_bus: u8 },
}

impl Access {
    pub fn name(self) -> &'static str {
        match self {
            Access::Cam => "cam",
            Access::Ecam { .. } => "ecam",
        }
    }
}

/// ECAM window of segment 0 from the MCFG: 36-byte header, 8 reserved
/// bytes, then 16-byte entries (base u64, segment u16, start bus, end bus).
pub fn mcfg() -> Option<Access> {
    let t = acpi::find(b"MCFG")?;
    let mut off = 44;
    while off + 16 <= t.len {
        let base = t.u64(off)?;
        let seg = t.u32(off + 8)? & 0xffff;
        let start_bus = t.u8(off + 10)?;
        let end_bus = t.u8(off + 11)?;
        let span = ((end_bus as u64).saturating_sub(start_bus as u64) + 1) << 20;
        if seg == 0 && end_bus >= start_bus && phys_ok(base, span) {
            return Some(Access::Ecam { base, start_bus, end_bus });
        }
        off += 16;
    }
    None
}

/// Bus/device/function.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Bdf {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

pub struct Config {
    pub access: Access,
}

impl Config {
    fn ecam_addr(&self, b: Bdf, off: u16) -> Option<u64> {
        match self.access {
            Access::Ecam { base, start_bus, end_bus } if (start_bus..=end_bus).contains(&b.bus) => Some(
                base + (((b.bus - start_bus) as u64) << 20 | (b.dev as u64) << 15 | (b.func as u64) << 12)
                    + off as u64,
            ),
            _ => None,
        }
    }

    fn cam_addr(b: Bdf, off: u16) -> u32 {
        1 << 31 | (b.bus as u32) << 16 | (b.dev as u32) << 11 | (b.func as u32) << 8 | (off as u32 & 0xfc)
    }

    pub fn read32(&self, b: Bdf, off: u16) -> u32 {
        match self.access {
            Access::Cam => {
                outl(0xcf8, Self::cam_addr(b, off));
                inl(0xcfc)
            }
            // A bus outside the window reads as absent, as on hardware.
            Access::Ecam { .. } => self.ecam_addr(b, off & !3).map_or(!0, mmio_read32),
        }
    }

    pub fn read16(&self, b: Bdf, off: u16) -> u16 {
        (self.read32(b, off & !3) >> ((off & 2) * 8)) as u16
    }

    pub fn read8(&self, b: Bdf, off: u16) -> u8 {
        (self.read32(b, off & !3) >> ((off & 3) * 8)) as u8
    }

    pub fn write32(&self, b: Bdf, off: u16, v: u32) {
        match self.access {
            Access::Cam => {
                outl(0xcf8, Self::cam_addr(b, off));
                outl(0xcfc, v);
            }
            Access::Ecam { .. } => {
                if let Some(a) = self.ecam_addr(b, off & !3) {
                    mmio_write32(a, v)
                }
            }
        }
    }

    /// A true 16-bit write: a 32-bit read-modify-write of the command
    /// register would write back the status register's write-1-to-clear bits.
    pub fn write16(&self, b: Bdf, off: u16, v: u16) {
        match self.access {
            Access::Cam => {
                outl(0xcf8, Self::cam_addr(b, off));
                outw(0xcfc + (off & 2), v);
            }
            Access::Ecam { .. } => {
                if let Some(a) = self.ecam_addr(b, off & !1) {
                    mmio_write16(a, v)
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
pub struct Function {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
}

pub const MAX_FUNCS: usize = 64;

/// Enumerates from bus 0, following PCI-to-PCI bridges to their secondary
/// bus (only bridges: a blind scan of 256 buses would cost thousands of
/// exits). Returns the number of functions found (may exceed `out.len()`).
pub fn enumerate(cfg: &Config, out: &mut [Function]) -> usize {
    let mut n = 0;
    let mut buses = [0u8; 32];
    let mut nbus = 1;
    let mut i = 0;
    while i < nbus {
        let bus = buses[i];
        i += 1;
        for dev in 0..32u8 {
            let f0 = Bdf { bus, dev, func: 0 };
            if cfg.read16(f0, 0) == 0xffff {
                continue;
            }
            let multi = cfg.read8(f0, 0x0e) & 0x80 != 0;
            for func in 0..if multi { 8 } else { 1 } {
                let bdf = Bdf { bus, dev, func };
                let id = cfg.read32(bdf, 0);
                if id & 0xffff == 0xffff {
                    continue;
                }
                if n < out.len() {
                    out[n] = Function { bdf, vendor: id as u16, device: (id >> 16) as u16 };
                }
                n += 1;
                // Header type 1 with class 06/04: PCI-to-PCI bridge.
                if cfg.read8(bdf, 0x0e) & 0x7f == 1 && cfg.read16(bdf, 0x0a) == 0x0604 {
                    let sec = cfg.read8(bdf, 0x19);
                    if sec != 0 && nbus < buses.len() && !buses[..nbus].contains(&sec) {
                        buses[nbus] = sec;
                        nbus += 1;
                    }
                }
            }
        }
    }
    n
}

/// A memory BAR: its address (0 if unassigned), size, and whether it is 64-bit.
#[derive(Clone, Copy)]
pub struct Bar {
    pub addr: u64,
    pub size: u64,
    pub is64: bool,
}

/// Reads memory BAR `i` and sizes it (all-ones probe, decoding briefly off
/// so the device does not answer at a half-written address). None for an
/// I/O BAR, the upper half of a 64-bit BAR, or an unimplemented one.
pub fn bar(cfg: &Config, b: Bdf, i: u8) -> Option<Bar> {
    let off = 0x10 + 4 * i as u16;
    let lo = cfg.read32(b, off);
    if lo & 1 != 0 {
        return None;
    }
    let is64 = (lo >> 1) & 3 == 2;
    if is64 && i >= 5 {
        return None;
    }
    let hi = if is64 { cfg.read32(b, off + 4) } else { 0 };
    let cmd = cfg.read16(b, 4);
    cfg.write16(b, 4, cmd & !2);
    cfg.write32(b, off, !0);
    let mut mask = (cfg.read32(b, off) & !0xf) as u64;
    cfg.write32(b, off, lo);
    if is64 {
        cfg.write32(b, off + 4, !0);
        mask |= (cfg.read32(b, off + 4) as u64) << 32;
        cfg.write32(b, off + 4, hi);
    } else {
        mask |= 0xffff_ffff_0000_0000;
    }
    cfg.write16(b, 4, cmd);
    if mask & 0xffff_ffff == 0 {
        return None;
    }
    let size = (!mask).wrapping_add(1);
    Some(Bar { addr: (lo & !0xf) as u64 | (hi as u64) << 32, size, is64 })
}

pub fn set_bar(cfg: &Config, b: Bdf, i: u8, addr: u64, is64: bool) {
    let off = 0x10 + 4 * i as u16;
    let lo = cfg.read32(b, off) & 0xf;
    cfg.write32(b, off, addr as u32 | lo);
    if is64 {
        cfg.write32(b, off + 4, (addr >> 32) as u32);
    }
}

/// Sets memory decoding and bus mastering (the device DMAs the rings).
pub fn enable(cfg: &Config, b: Bdf) {
    let cmd = cfg.read16(b, 4);
    cfg.write16(b, 4, cmd | 0x6);
}

/// Bump allocator for unassigned BARs, in windows that avoid RAM: first
/// the 256 MiB just below the ECAM window when there is one, then
/// 0xe0000000..0xfe000000 (under the IOAPIC/LAPIC/BIOS area). Each window
/// starts above any e820 range (RAM or reserved) that reaches into it.
pub struct BarAlloc {
    windows: [(u64, u64); 2],
}

impl BarAlloc {
    pub fn new(access: Access, e820: &[E820]) -> BarAlloc {
        let below_ecam = match access {
            Access::Ecam { base, .. } if base >= 0x9000_0000 => (base - 0x1000_0000, base),
            _ => (0, 0),
        };
        let mut windows = [below_ecam, (0xe000_0000, 0xfe00_0000)];
        for (start, end) in windows.iter_mut() {
            for e in e820 {
                if e.addr < *end && e.addr + e.size > *start {
                    *start = (e.addr + e.size).min(*end);
                }
            }
        }
        BarAlloc { windows }
    }

    /// A naturally aligned range of `size` (BARs need that), or None.
    pub fn alloc(&mut self, size: u64) -> Option<u64> {
        let size = size.max(4096);
        for (next, end) in self.windows.iter_mut() {
            let a = next.div_ceil(size) * size;
            if a + size <= *end {
                *next = a + size;
                return Some(a);
            }
        }
        None
    }
}
