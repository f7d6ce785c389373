//! A type-0 PCI function's configuration space: identity registers, the
//! command/status pair, BARs with the sizing protocol, interrupt line/pin
//! and a capability list builder.
//!
//! Owns the bytes and their write masks only; what a write *means* (MSI-X
//! enable, a virtio access window) is for the device owning this value to
//! act on after `write` returns. Runs on vCPU threads, under the device lock.
//! The space is 4 KiB so ECAM sees an extended space; everything past the
//! legacy 256 bytes reads as zero (no extended capabilities) and ignores
//! writes.

use super::{BarKind, BarRange};

/// Bytes of configuration space per function (ECAM).
pub const CONFIG_SPACE_SIZE: usize = 4096;
/// Bytes reachable through configuration mechanism #1.
const LEGACY_SIZE: usize = 256;
/// First byte after the standard type-0 header, where capabilities go.
const FIRST_CAP: u16 = 0x40;

pub const COMMAND: u16 = 0x04;
pub const STATUS: u16 = 0x06;
pub const BAR0: u16 = 0x10;
pub const CAPABILITIES_POINTER: u16 = 0x34;
pub const INTERRUPT_LINE: u16 = 0x3c;

/// COMMAND register bits.
pub const CMD_IO: u16 = 1 << 0;
pub const CMD_MEMORY: u16 = 1 << 1;
pub const CMD_BUS_MASTER: u16 = 1 << 2;
pub const CMD_INTX_DISABLE: u16 = 1 << 10;
/// The COMMAND bits a type-0 function implements: I/O, memory, bus master,
/// parity error response, SERR#, INTx disable.
const CMD_WRITABLE: u16 = CMD_IO | CMD_MEMORY | CMD_BUS_MASTER | (1 << 6) | (1 << 8) | (1 << 10);

/// STATUS register bits.
pub const STATUS_INTERRUPT: u16 = 1 << 3;
pub const STATUS_CAP_LIST: u16 = 1 << 4;
/// Error bits software clears by writing 1: master data parity error,
/// signalled/received target abort, received master abort, signalled
/// system error, detected parity error.
const STATUS_W1C: u16 = (1 << 8) | (0b1_1111 << 11);

/// A function's identity as its header presents it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PciIds {
    pub vendor: u16,
    pub device: u16,
    pub revision: u8,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub subsys_vendor: u16,
    pub subsys_id: u16,
}

/// Mistakes in how the VMM or a device model declares a function; never
/// caused by the guest.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciConfigError {
    #[error("BAR {index}: no such BAR register (or no room for a 64-bit pair)")]
    BarIndex { index: u8 },
    #[error("BAR {index}: already declared")]
    BarTaken { index: u8 },
    #[error("BAR {index}: size {size:#x} is not a power of two in the range its kind allows")]
    BarSize { index: u8, size: u64 },
    #[error(
        "BAR {index}: address {addr:#x} is not aligned to its size or out of its kind's range"
    )]
    BarAddr { index: u8, addr: u64 },
    #[error("capability {id:#x}: {len} bytes do not fit in the legacy configuration space")]
    NoRoom { id: u8, len: usize },
    #[error("capability {id:#x}: write mask has {mask} bytes for a {body}-byte body")]
    MaskLength { id: u8, body: usize, mask: usize },
}

#[derive(Debug, Clone, Copy)]
struct BarDecl {
    kind: BarKind,
    size: u64,
}

/// See the module doc.
pub struct PciConfig {
    regs: Vec<u8>,
    wmask: Vec<u8>,
    w1c: Vec<u8>,
    bars: [Option<BarDecl>; 6],
    next_cap: u16,
    last_cap: Option<u16>,
}

/// Whether the access `[offset, offset + len)` touches `[start, start + size)`.
pub fn overlaps(offset: u16, len: usize, start: u16, size: usize) -> bool {
    let (a, b) = (usize::from(offset), usize::from(start));
    a < b + size && b < a + len
}

impl PciConfig {
    pub fn new(ids: &PciIds) -> Self {
        let mut c = Self {
            regs: vec![0; CONFIG_SPACE_SIZE],
            wmask: vec![0; LEGACY_SIZE],
            w1c: vec![0; LEGACY_SIZE],
            bars: [None; 6],
            next_cap: FIRST_CAP,
            last_cap: None,
        };
        c.set_u16(0x00, ids.vendor);
        c.set_u16(0x02, ids.device);
        c.set_u8(0x08, ids.revision);
        c.set_u8(0x09, ids.prog_if);
        c.set_u8(0x0a, ids.subclass);
        c.set_u8(0x0b, ids.class);
        c.set_u16(0x2c, ids.subsys_vendor);
        c.set_u16(0x2e, ids.subsys_id);
        c.set_mask(COMMAND, &CMD_WRITABLE.to_le_bytes());
        c.set_w1c(STATUS, &STATUS_W1C.to_le_bytes());
        // Cache line size is a plain scratch register firmware writes.
        c.set_mask(0x0c, &[0xff]);
        c.set_mask(INTERRUPT_LINE, &[0xff]);
        c
    }

    fn set_mask(&mut self, off: u16, mask: &[u8]) {
        let at = usize::from(off);
        if let Some(m) = self.wmask.get_mut(at..at + mask.len()) {
            m.copy_from_slice(mask);
        }
    }

    fn set_w1c(&mut self, off: u16, mask: &[u8]) {
        let at = usize::from(off);
        if let Some(m) = self.w1c.get_mut(at..at + mask.len()) {
            m.copy_from_slice(mask);
        }
    }

    /// Device-side store that bypasses the write masks (read-only fields,
    /// values the device computes). Out-of-range bytes are dropped.
    pub fn set_bytes(&mut self, off: u16, bytes: &[u8]) {
        let at = usize::from(off);
        if let Some(r) = self.regs.get_mut(at..at + bytes.len()) {
            r.copy_from_slice(bytes);
        }
    }

    pub fn set_u8(&mut self, off: u16, v: u8) {
        self.set_bytes(off, &[v]);
    }

    pub fn set_u16(&mut self, off: u16, v: u16) {
        self.set_bytes(off, &v.to_le_bytes());
    }

    pub fn set_u32(&mut self, off: u16, v: u32) {
        self.set_bytes(off, &v.to_le_bytes());
    }

    pub fn u8_at(&self, off: u16) -> u8 {
        self.regs.get(usize::from(off)).copied().unwrap_or(0)
    }

    pub fn u16_at(&self, off: u16) -> u16 {
        u16::from_le_bytes([self.u8_at(off), self.u8_at(off.saturating_add(1))])
    }

    pub fn u32_at(&self, off: u16) -> u32 {
        let lo = u32::from(self.u16_at(off));
        lo | (u32::from(self.u16_at(off.saturating_add(2))) << 16)
    }

    pub fn command(&self) -> u16 {
        self.u16_at(COMMAND)
    }

    /// Set COMMAND as firmware leaves it (decode and bus master enables).
    pub fn set_command(&mut self, v: u16) {
        self.set_u16(COMMAND, v & CMD_WRITABLE);
    }

    /// Reflect the device's INTx state in STATUS bit 3 (read-only to the
    /// guest).
    pub fn set_interrupt_status(&mut self, asserted: bool) {
        let s = self.u16_at(STATUS) & !STATUS_INTERRUPT;
        self.set_u16(STATUS, s | if asserted { STATUS_INTERRUPT } else { 0 });
    }

    /// Interrupt Line (the GSI, writable scratch for the OS) and Pin
    /// (1 = INTA#, 0 = none; read-only).
    pub fn set_interrupt(&mut self, line: u8, pin: u8) {
        self.set_u8(INTERRUPT_LINE, line);
        self.set_u8(INTERRUPT_LINE + 1, pin);
    }

    /// A guest read; bytes past the space read as all-ones.
    pub fn read(&self, offset: u16, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::from(offset)
                .checked_add(i)
                .and_then(|at| self.regs.get(at))
                .copied()
                .unwrap_or(0xff);
        }
    }

    /// A guest write, byte by byte through the write masks: read-only bits
    /// keep their value, RW1C bits clear where the guest wrote 1, bytes
    /// past the legacy space are dropped.
    pub fn write(&mut self, offset: u16, data: &[u8]) {
        for (i, &v) in data.iter().enumerate() {
            let Some(at) = usize::from(offset).checked_add(i) else {
                return;
            };
            let (Some(&m), Some(&c)) = (self.wmask.get(at), self.w1c.get(at)) else {
                continue;
            };
            if let Some(r) = self.regs.get_mut(at) {
                *r = ((*r & !m) | (v & m)) & !(v & c);
            }
        }
    }

    /// Declare BAR `index` of `kind` and `size` bytes (a power of two, at
    /// least 16; I/O at most 64 KiB; 32-bit memory at most 2 GiB). A 64-bit
    /// BAR also takes register `index + 1`.
    pub fn declare_bar(
        &mut self,
        index: u8,
        kind: BarKind,
        size: u64,
    ) -> Result<(), PciConfigError> {
        let slots = if matches!(kind, BarKind::Mem64 { .. }) {
            2
        } else {
            1
        };
        let i = usize::from(index);
        if i + slots > self.bars.len() {
            return Err(PciConfigError::BarIndex { index });
        }
        if (i..i + slots).any(|j| self.bars[j].is_some() || self.is_upper_half(j)) {
            return Err(PciConfigError::BarTaken { index });
        }
        let max = match kind {
            BarKind::Io => 1 << 16,
            BarKind::Mem32 => 1 << 31,
            BarKind::Mem64 { .. } => 1 << 63,
        };
        if !size.is_power_of_two() || !(16..=max).contains(&size) {
            return Err(PciConfigError::BarSize { index, size });
        }
        self.bars[i] = Some(BarDecl { kind, size });
        let reg = BAR0 + 4 * u16::from(index);
        let addr_mask = !(size - 1);
        let (type_bits, low_mask) = match kind {
            BarKind::Io => (0x1u32, 0x3u32),
            BarKind::Mem32 => (0x0, 0xf),
            BarKind::Mem64 { prefetchable } => (0x4 | (u32::from(prefetchable) << 3), 0xf),
        };
        self.set_u32(reg, type_bits);
        self.set_mask(reg, &((addr_mask as u32) & !low_mask).to_le_bytes());
        if slots == 2 {
            self.set_mask(reg + 4, &((addr_mask >> 32) as u32).to_le_bytes());
        }
        Ok(())
    }

    /// Whether register `j` is the upper half of a 64-bit BAR below it.
    fn is_upper_half(&self, j: usize) -> bool {
        j.checked_sub(1)
            .and_then(|k| self.bars.get(k).copied().flatten())
            .is_some_and(|b| matches!(b.kind, BarKind::Mem64 { .. }))
    }

    /// Give a declared BAR its initial address, as firmware would.
    pub fn set_bar_addr(&mut self, index: u8, addr: u64) -> Result<(), PciConfigError> {
        let bad = PciConfigError::BarAddr { index, addr };
        let d = self
            .bars
            .get(usize::from(index))
            .copied()
            .flatten()
            .ok_or(PciConfigError::BarIndex { index })?;
        let limit = match d.kind {
            BarKind::Io | BarKind::Mem32 => 1u64 << 32,
            BarKind::Mem64 { .. } => u64::MAX,
        };
        if addr & (d.size - 1) != 0 || addr.checked_add(d.size).is_none_or(|end| end > limit) {
            return Err(bad);
        }
        let reg = BAR0 + 4 * u16::from(index);
        let low_bits = self.u32_at(reg) & if d.kind.is_io() { 0x3 } else { 0xf };
        self.set_u32(reg, addr as u32 | low_bits);
        if matches!(d.kind, BarKind::Mem64 { .. }) {
            self.set_u32(reg + 4, (addr >> 32) as u32);
        }
        Ok(())
    }

    /// The address BAR `index` holds now (whether or not it decodes).
    pub fn bar_addr(&self, index: u8) -> Option<u64> {
        let d = self.bars.get(usize::from(index)).copied().flatten()?;
        let reg = BAR0 + 4 * u16::from(index);
        let lo = self.u32_at(reg) & if d.kind.is_io() { !0x3 } else { !0xf };
        let hi = match d.kind {
            BarKind::Mem64 { .. } => u64::from(self.u32_at(reg + 4)) << 32,
            _ => 0,
        };
        Some(hi | u64::from(lo))
    }

    /// BARs whose space the COMMAND register enables. An address of 0 is
    /// taken as unassigned (the firmware convention; RAM sits there).
    pub fn active_bars(&self) -> Vec<BarRange> {
        let cmd = self.command();
        (0u8..6)
            .filter_map(|index| {
                let d = self.bars.get(usize::from(index)).copied().flatten()?;
                let enable = if d.kind.is_io() { CMD_IO } else { CMD_MEMORY };
                let addr = self.bar_addr(index)?;
                let decodes = cmd & enable != 0 && addr != 0 && addr.checked_add(d.size).is_some();
                decodes.then_some(BarRange {
                    index,
                    kind: d.kind,
                    addr,
                    size: d.size,
                })
            })
            .collect()
    }

    /// Append a capability: `id`, the chain's next pointer (filled in by
    /// the following append), then `body`; `wmask` gives the guest-writable
    /// bits of each body byte. Returns the capability's offset.
    pub fn add_capability(
        &mut self,
        id: u8,
        body: &[u8],
        wmask: &[u8],
    ) -> Result<u16, PciConfigError> {
        if wmask.len() != body.len() {
            return Err(PciConfigError::MaskLength {
                id,
                body: body.len(),
                mask: wmask.len(),
            });
        }
        let off = self.next_cap;
        let len = body.len() + 2;
        if usize::from(off) + len > LEGACY_SIZE {
            return Err(PciConfigError::NoRoom { id, len });
        }
        self.set_bytes(off, &[id, 0]);
        self.set_bytes(off + 2, body);
        self.set_mask(off + 2, wmask);
        match self.last_cap {
            Some(prev) => self.set_u8(prev + 1, off as u8),
            None => {
                self.set_u8(CAPABILITIES_POINTER, off as u8);
                let s = self.u16_at(STATUS);
                self.set_u16(STATUS, s | STATUS_CAP_LIST);
            }
        }
        self.last_cap = Some(off);
        // `len` <= 256 here, so this cannot overflow; keep dword alignment.
        self.next_cap = (off + len as u16).next_multiple_of(4);
        Ok(off)
    }
}

#[cfg(test)]
mod tests;
