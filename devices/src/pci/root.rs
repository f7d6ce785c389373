//! The root complex of bus 0: 32 slots of up to 8 functions each, and the
//! two ways into their configuration space: mechanism #1 (`ConfigIo`,
//! with the 0xCF9 reset register) and ECAM (`Ecam`).
//!
//! Owns the function table. It does not route BAR accesses: each decoding
//! BAR is its own range on the MMIO or port bus, pointing straight at its
//! function (see `bus`). A configuration write that changes which ranges a
//! function decodes returns `PlatformRequest::BarsMoved`, and the VMM's
//! control thread re-places that function's ranges. It does not allocate
//! addresses (the VMM does) and does not model bridges: other buses are
//! absent and read all-ones. Runs on vCPU threads.

use std::sync::{Arc, Mutex, MutexGuard};

use super::config::CONFIG_SPACE_SIZE;
use super::{Bdf, PciDevice};
use crate::bus::{BusAction, BusDevice, PlatformRequest, Range, Target};

/// Slots on bus 0.
pub const SLOTS: u8 = 32;
/// Functions per slot.
pub const FUNCTIONS: u8 = 8;

pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    #[error("PCI slot {slot} does not exist (bus 0 has slots 0 to 31)")]
    NoSuchSlot { slot: u8 },
    #[error("PCI function {slot:02x}.{func} does not exist (functions 0 to 7)")]
    NoSuchFunction { slot: u8, func: u8 },
    #[error("PCI function {slot:02x}.{func} already holds {existing}")]
    SlotTaken {
        slot: u8,
        func: u8,
        existing: String,
    },
}

/// The bus ranges function `bdf` decodes now, memory BARs then I/O BARs,
/// each pointing straight at the function (what the VMM places on its
/// MMIO and port buses, and moves on `BarsMoved`).
pub fn bar_ranges(bdf: Bdf, dev: &SharedPciDevice) -> (Vec<Range>, Vec<Range>) {
    let (mut mem, mut io) = (Vec::new(), Vec::new());
    for b in lock(dev).active_bars() {
        let r = Range {
            base: b.addr,
            len: b.size,
            name: format!("{bdf} BAR{}", b.index),
            owner: Some(bdf),
            target: Target::Bar {
                dev: dev.clone(),
                bar: b.index,
            },
        };
        if b.kind.is_io() {
            io.push(r);
        } else {
            mem.push(r);
        }
    }
    (mem, io)
}

/// See the module doc.
pub struct PciRoot {
    functions: Vec<Option<SharedPciDevice>>,
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

/// A device whose lock was poisoned by a panic on another vCPU is still a
/// register model in a usable state; keep the VM running (as `bus` does).
pub fn lock(dev: &SharedPciDevice) -> MutexGuard<'_, dyn PciDevice + 'static> {
    dev.lock().unwrap_or_else(|p| p.into_inner())
}

impl PciRoot {
    pub fn new() -> Self {
        Self {
            functions: vec![None; usize::from(SLOTS) * usize::from(FUNCTIONS)],
        }
    }

    /// Plug `dev` in as function 0 of `slot`.
    pub fn add(&mut self, slot: u8, dev: SharedPciDevice) -> Result<(), PciError> {
        self.add_function(slot, 0, dev)
    }

    /// Plug `dev` in as function `func` of `slot`. A function other than 0
    /// is found by guests only when function 0 says it is multi-function.
    pub fn add_function(
        &mut self,
        slot: u8,
        func: u8,
        dev: SharedPciDevice,
    ) -> Result<(), PciError> {
        if slot >= SLOTS {
            return Err(PciError::NoSuchSlot { slot });
        }
        if func >= FUNCTIONS {
            return Err(PciError::NoSuchFunction { slot, func });
        }
        let entry = &mut self.functions[usize::from(slot) * 8 + usize::from(func)];
        if let Some(existing) = entry {
            let existing = lock(existing).name().to_string();
            return Err(PciError::SlotTaken {
                slot,
                func,
                existing,
            });
        }
        *entry = Some(dev);
        Ok(())
    }

    /// The function at `bdf`, if one is plugged in.
    pub fn function(&self, bdf: Bdf) -> Option<&SharedPciDevice> {
        if bdf.bus != 0 || bdf.dev >= SLOTS || bdf.func >= FUNCTIONS {
            return None;
        }
        self.functions[usize::from(bdf.dev) * 8 + usize::from(bdf.func)].as_ref()
    }

    /// Every function plugged in, in BDF order.
    pub fn functions(&self) -> Vec<(Bdf, SharedPciDevice)> {
        self.functions
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let bdf = Bdf {
                    bus: 0,
                    dev: (i / 8) as u8,
                    func: (i % 8) as u8,
                };
                Some((bdf, f.clone()?))
            })
            .collect()
    }

    /// Whether `[offset, offset + len)` lies inside one function's space.
    fn in_space(offset: u16, len: usize) -> bool {
        len > 0 && usize::from(offset) + len <= CONFIG_SPACE_SIZE
    }

    /// A configuration read; absent functions read all-ones.
    pub fn config_read(&self, bdf: Bdf, offset: u16, data: &mut [u8]) {
        match self.function(bdf) {
            Some(dev) if Self::in_space(offset, data.len()) => lock(dev).config_read(offset, data),
            _ => data.fill(0xff),
        }
    }

    /// A configuration write. When it changed the BAR ranges the function
    /// decodes, the answer asks the platform to move them.
    pub fn config_write(&self, bdf: Bdf, offset: u16, data: &[u8]) -> BusAction {
        let Some(dev) = self.function(bdf) else {
            return BusAction::None;
        };
        if !Self::in_space(offset, data.len()) {
            return BusAction::None;
        }
        let mut d = lock(dev);
        let before = d.active_bars();
        let action = d.config_write(offset, data);
        if d.active_bars() != before {
            return BusAction::Platform(PlatformRequest::BarsMoved { bdf });
        }
        action
    }
}

/// Ports 0xCF8..0xD00: CONFIG_ADDRESS (dword at 0xCF8), CONFIG_DATA
/// (0xCFC..0xD00, any lane) and, as on PIIX/ICH, the reset control
/// register at byte 0xCF9.
pub struct ConfigIo {
    root: Arc<PciRoot>,
    address: u32,
    reset_control: u8,
}

/// Bytes of ECAM space per bus (32 devices x 8 functions x 4 KiB).
pub const ECAM_BUS_LEN: u64 = 1 << 20;
/// Port range length of `ConfigIo` (0xCF8..0xD00).
pub const CONFIG_IO_LEN: u64 = 8;
/// Bits of CONFIG_ADDRESS that exist: enable, bus, device, function and a
/// dword-aligned register. Bits 30:24 (extended registers on some
/// chipsets) and 1:0 read as zero.
const ADDRESS_MASK: u32 = 0x80ff_fffc;
const ADDRESS_ENABLE: u32 = 1 << 31;
/// Reset control register: "reset CPU" starts the reset.
const RST_CPU: u8 = 1 << 2;

impl ConfigIo {
    pub fn new(root: Arc<PciRoot>) -> Self {
        Self {
            root,
            address: 0,
            reset_control: 0,
        }
    }

    /// The function and register CONFIG_DATA at `lane` reaches, if the
    /// enable bit is set and the access stays inside the dword.
    fn target(&self, lane: u64, len: usize) -> Option<(Bdf, u16)> {
        if self.address & ADDRESS_ENABLE == 0 || lane + len as u64 > 4 {
            return None;
        }
        let a = self.address;
        let bdf = Bdf {
            bus: (a >> 16) as u8,
            dev: ((a >> 11) & 0x1f) as u8,
            func: ((a >> 8) & 0x7) as u8,
        };
        Some((bdf, (a & 0xfc) as u16 + lane as u16))
    }
}

impl BusDevice for ConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (0, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
            (1, 1) => data[0] = self.reset_control,
            (4..=7, len) => match self.target(offset - 4, len) {
                Some((bdf, reg)) => self.root.config_read(bdf, reg, data),
                None => data.fill(0xff),
            },
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        match (offset, data) {
            (0, &[a, b, c, d]) => self.address = u32::from_le_bytes([a, b, c, d]) & ADDRESS_MASK,
            (1, &[v]) => {
                self.reset_control = v;
                if v & RST_CPU != 0 {
                    return BusAction::Reset;
                }
            }
            (4..=7, _) => {
                if let Some((bdf, reg)) = self.target(offset - 4, data.len()) {
                    return self.root.config_write(bdf, reg, data);
                }
            }
            _ => {}
        }
        BusAction::None
    }
}

/// PCIe enhanced configuration access: offset = bus << 20 | dev << 15 |
/// func << 12 | register, over up to 256 buses.
pub struct Ecam {
    root: Arc<PciRoot>,
}

impl Ecam {
    pub fn new(root: Arc<PciRoot>) -> Self {
        Self { root }
    }

    fn decode(offset: u64, len: usize) -> Option<(Bdf, u16)> {
        if offset >> 28 != 0 {
            return None;
        }
        let reg = (offset & 0xfff) as u16;
        let bdf = Bdf {
            bus: (offset >> 20) as u8,
            dev: ((offset >> 15) & 0x1f) as u8,
            func: ((offset >> 12) & 0x7) as u8,
        };
        PciRoot::in_space(reg, len).then_some((bdf, reg))
    }
}

impl BusDevice for Ecam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match Self::decode(offset, data.len()) {
            Some((bdf, reg)) => self.root.config_read(bdf, reg, data),
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        match Self::decode(offset, data.len()) {
            Some((bdf, reg)) => self.root.config_write(bdf, reg, data),
            None => BusAction::None,
        }
    }
}

#[cfg(test)]
mod tests;
