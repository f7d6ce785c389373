//! The device's BARs and expansion ROM as the guest sees them: which BARs
//! exist (from the region sizes and the type bits in the device's own BAR
//! registers), their kinds and sizes, and the ROM base register.
//!
//! The six BAR registers are emulated through `PciConfig` (the sizing
//! protocol, 64-bit pairs, relocation); the ROM register here. Neither is
//! written to the device: the device's addresses do not matter to VFIO,
//! accesses reach it by region offset.

use super::io::{MmapArea, VfioDeviceIo, ROM_REGION};
use super::VfioError;
use crate::pci::BarKind;

/// The ROM is BAR index 6 on the buses (see `BarRange`).
pub const ROM_BAR: u8 = 6;
const ROM_REG_ENABLE: u32 = 1;
/// Address bits 31:11 of the expansion ROM base register.
const ROM_ADDR_BITS: u32 = 0xffff_f800;
const MIN_ROM_SIZE: u64 = 2048;
const MIN_BAR_SIZE: u64 = 16;

/// One BAR of the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BarSpec {
    pub index: u8,
    pub kind: BarKind,
    /// What the guest sizes: the region size rounded up to a power of two.
    pub size: u64,
    /// The device region's own size: accesses past it are dropped.
    pub region_size: u64,
    /// Areas the backend can mmap, relative to the BAR.
    pub areas: Vec<MmapArea>,
}

fn bar_kind(reg: u32) -> BarKind {
    if reg & 0x1 != 0 {
        BarKind::Io
    } else if reg & 0x6 == 0x4 {
        BarKind::Mem64 {
            prefetchable: reg & 0x8 != 0,
        }
    } else {
        BarKind::Mem32
    }
}

fn guest_size(region: u64, min: u64) -> Option<u64> {
    region.max(min).checked_next_power_of_two()
}

/// The BARs of the device whose configuration space starts with `cfg`.
pub fn discover(io: &dyn VfioDeviceIo, name: &str, cfg: &[u8]) -> Result<Vec<BarSpec>, VfioError> {
    let mut bars = Vec::new();
    let mut index = 0u8;
    while index < 6 {
        let i = u32::from(index);
        let info = io
            .region_info(i)
            .map_err(|source| VfioError::backend(name, "region info", source))?;
        let at = 0x10 + 4 * usize::from(index);
        let reg = cfg
            .get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let kind = bar_kind(reg);
        let step = if matches!(kind, BarKind::Mem64 { .. }) {
            2
        } else {
            1
        };
        if info.size != 0 {
            let size = guest_size(info.size, MIN_BAR_SIZE).ok_or(VfioError::BarSize {
                device: name.to_string(),
                index,
                size: info.size,
            })?;
            bars.push(BarSpec {
                index,
                kind,
                size,
                region_size: info.size,
                areas: info.mappable(),
            });
        }
        index += step;
    }
    Ok(bars)
}

/// The expansion ROM's base register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rom {
    pub size: u64,
    pub region_size: u64,
    reg: u32,
}

impl Rom {
    /// The ROM of the device, if its ROM region is not empty.
    pub fn discover(io: &dyn VfioDeviceIo, name: &str) -> Result<Option<Self>, VfioError> {
        let info = io
            .region_info(ROM_REGION)
            .map_err(|source| VfioError::backend(name, "ROM region info", source))?;
        if info.size == 0 {
            return Ok(None);
        }
        // A ROM BAR holds 32 address bits; anything bigger than 2 GiB is
        // not a ROM a guest can map.
        let size = guest_size(info.size, MIN_ROM_SIZE)
            .filter(|&s| s <= 1 << 31)
            .ok_or(VfioError::BarSize {
                device: name.to_string(),
                index: ROM_BAR,
                size: info.size,
            })?;
        Ok(Some(Self {
            size,
            region_size: info.size,
            reg: 0,
        }))
    }

    pub fn reg(&self) -> u32 {
        self.reg
    }

    /// A guest write of the whole register (the caller merges narrower
    /// writes into the current value first).
    pub fn write(&mut self, v: u32) {
        let mask = ROM_ADDR_BITS & !((self.size - 1) as u32);
        self.reg = (v & mask) | (v & ROM_REG_ENABLE);
    }

    /// Give the ROM an address, enabled, as firmware would.
    pub fn place(&mut self, addr: u32) {
        self.write(addr | ROM_REG_ENABLE);
    }

    /// Where it decodes, if enabled (memory decoding is the caller's part).
    pub fn decodes_at(&self) -> Option<u64> {
        let addr = u64::from(self.reg & ROM_ADDR_BITS);
        (self.reg & ROM_REG_ENABLE != 0 && addr != 0).then_some(addr)
    }
}
