//! The root complex of bus 0: 32 slots, function 0 each, and the three
//! ways in: configuration mechanism #1 (`ConfigIo`, with the 0xCF9 reset
//! register), ECAM (`Ecam`), and the PCI address windows (`PciWindow`)
//! that route BAR accesses.
//!
//! Owns the slot table and the BAR routes. The routes are rebuilt from a
//! device's `active_bars()` after each configuration write to it, so a
//! guest that moves a BAR or turns decoding off is followed at once. It
//! does not allocate addresses (the VMM does) and does not model bridges:
//! anything on another bus, or any function other than 0, is absent and
//! reads all-ones. Runs on vCPU threads.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::config::CONFIG_SPACE_SIZE;
use super::{Bdf, IoSpace, PciDevice};
use crate::bus::{BusAction, BusDevice};

/// Slots on bus 0.
pub const SLOTS: u8 = 32;

pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    #[error("PCI slot {slot} does not exist (bus 0 has slots 0 to 31)")]
    NoSuchSlot { slot: u8 },
    #[error("PCI slot {slot} already holds {existing}")]
    SlotTaken { slot: u8, existing: String },
}

/// One decoding BAR: which device and BAR answers `[base, base + size)`.
#[derive(Debug, Clone, Copy)]
struct Route {
    space: IoSpace,
    base: u64,
    size: u64,
    slot: u8,
    bar: u8,
}

/// See the module doc.
pub struct PciRoot {
    slots: Vec<Option<SharedPciDevice>>,
    routes: RwLock<Vec<Route>>,
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

/// A device whose lock was poisoned by a panic on another vCPU is still a
/// register model in a usable state; keep the VM running (as `bus` does).
fn lock(dev: &SharedPciDevice) -> MutexGuard<'_, dyn PciDevice + 'static> {
    dev.lock().unwrap_or_else(|p| p.into_inner())
}

impl PciRoot {
    pub fn new() -> Self {
        Self {
            slots: vec![None; SLOTS.into()],
            routes: RwLock::new(Vec::new()),
        }
    }

    /// Plug `dev` in as function 0 of `slot`; its BARs route at once.
    pub fn add(&mut self, slot: u8, dev: SharedPciDevice) -> Result<(), PciError> {
        let entry = self
            .slots
            .get_mut(usize::from(slot))
            .ok_or(PciError::NoSuchSlot { slot })?;
        if let Some(existing) = entry {
            let existing = lock(existing).name().to_string();
            return Err(PciError::SlotTaken { slot, existing });
        }
        *entry = Some(dev.clone());
        self.refresh_routes(slot, &*lock(&dev));
        Ok(())
    }

    fn device(&self, bdf: Bdf) -> Option<&SharedPciDevice> {
        if bdf.bus != 0 || bdf.func != 0 {
            return None;
        }
        self.slots.get(usize::from(bdf.dev))?.as_ref()
    }

    /// Whether `[offset, offset + len)` lies inside one function's space.
    fn in_space(offset: u16, len: usize) -> bool {
        len > 0 && usize::from(offset) + len <= CONFIG_SPACE_SIZE
    }

    /// A configuration read; absent functions read all-ones.
    pub fn config_read(&self, bdf: Bdf, offset: u16, data: &mut [u8]) {
        match self.device(bdf) {
            Some(dev) if Self::in_space(offset, data.len()) => lock(dev).config_read(offset, data),
            _ => data.fill(0xff),
        }
    }

    /// A configuration write, then the device's BAR routes are refreshed.
    pub fn config_write(&self, bdf: Bdf, offset: u16, data: &[u8]) {
        let Some(dev) = self.device(bdf) else {
            return;
        };
        if !Self::in_space(offset, data.len()) {
            return;
        }
        let mut d = lock(dev);
        d.config_write(offset, data);
        self.refresh_routes(bdf.dev, &*d);
    }

    fn refresh_routes(&self, slot: u8, dev: &dyn PciDevice) {
        let fresh = dev.active_bars().into_iter().map(|b| Route {
            space: if b.kind.is_io() {
                IoSpace::Pio
            } else {
                IoSpace::Mmio
            },
            base: b.addr,
            size: b.size,
            slot,
            bar: b.index,
        });
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.retain(|r| r.slot != slot);
        routes.extend(fresh);
    }

    /// The device, BAR and offset answering an access of `len` bytes at
    /// `addr`; the whole access must fit inside one BAR.
    fn route(&self, space: IoSpace, addr: u64, len: usize) -> Option<(SharedPciDevice, u8, u64)> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let r = routes.iter().find(|r| {
            r.space == space
                && addr >= r.base
                && (addr - r.base)
                    .checked_add(len as u64)
                    .is_some_and(|end| end <= r.size)
        })?;
        let dev = self.slots.get(usize::from(r.slot))?.clone()?;
        Some((dev, r.bar, addr - r.base))
    }

    /// A BAR read at absolute `addr`; false when no BAR claims it.
    pub fn bar_read(&self, space: IoSpace, addr: u64, data: &mut [u8]) -> bool {
        // The route lock is dropped before the device lock is taken, so a
        // configuration write (device lock, then route lock) cannot deadlock
        // against this path.
        let Some((dev, bar, off)) = self.route(space, addr, data.len()) else {
            return false;
        };
        lock(&dev).bar_read(bar, off, data);
        true
    }

    /// A BAR write at absolute `addr`; false when no BAR claims it.
    pub fn bar_write(&self, space: IoSpace, addr: u64, data: &[u8]) -> bool {
        let Some((dev, bar, off)) = self.route(space, addr, data.len()) else {
            return false;
        };
        lock(&dev).bar_write(bar, off, data);
        true
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
                    self.root.config_write(bdf, reg, data);
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
        if let Some((bdf, reg)) = Self::decode(offset, data.len()) {
            self.root.config_write(bdf, reg, data);
        }
        BusAction::None
    }
}

/// A whole PCI address window (32-bit MMIO, 64-bit MMIO or I/O) mapped at
/// `base`: accesses go to whichever active BAR holds the address.
pub struct PciWindow {
    root: Arc<PciRoot>,
    space: IoSpace,
    base: u64,
}

impl PciWindow {
    pub fn new(root: Arc<PciRoot>, space: IoSpace, base: u64) -> Self {
        Self { root, space, base }
    }
}

impl BusDevice for PciWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let hit = self
            .base
            .checked_add(offset)
            .is_some_and(|addr| self.root.bar_read(self.space, addr, data));
        if !hit {
            // Master abort: nothing claimed the cycle.
            data.fill(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        if let Some(addr) = self.base.checked_add(offset) {
            self.root.bar_write(self.space, addr, data);
        }
        BusAction::None
    }
}

#[cfg(test)]
mod tests;
