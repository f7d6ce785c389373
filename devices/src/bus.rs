//! Address-range dispatch from a guest access to the device that owns it:
//! hop two of the exit path (vCPU -> bus -> transport -> device).
//!
//! A `Bus` holds an immutable, sorted snapshot of ranges behind an
//! `ArcSwap`: a vCPU's lookup takes no lock, and the control thread swaps
//! in a new snapshot when the platform changes (a guest moving a PCI BAR).
//! Each range points either at a `BusDevice` or straight at one BAR of a
//! PCI function, so a BAR access takes exactly one lock, the function's.
//! Platform changes a write causes come back as a `BusAction` value for
//! the caller to act on; devices never reach into VM state.

use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::pci::{Bdf, SharedPciDevice};
use crate::virtio::common::StatusChange;

/// The registry's name for a device, handed to devices that report
/// lifecycle requests so the control thread can find them again.
pub type DeviceKey = u32;

/// Work a write asks of the control thread; the vCPU that made the write
/// hands it over and waits for it before running the guest again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformRequest {
    /// A virtio status write: start the device's worker (DRIVER_OK) or
    /// stop it and finish the reset.
    Virtio {
        device: DeviceKey,
        change: StatusChange,
    },
    /// PCI function `bdf` decodes other BAR ranges now (moved, enabled or
    /// disabled): re-place its ranges on the buses.
    BarsMoved { bdf: Bdf },
}

/// What a device write asks the platform to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusAction {
    /// Nothing beyond the write itself.
    None,
    /// The guest asked for a system reset (i8042 pulse, ACPI reset).
    Reset,
    /// The guest entered ACPI S5.
    PowerOff,
    /// See `PlatformRequest`.
    Platform(PlatformRequest),
}

/// A device that answers reads and writes at offsets within its range.
pub trait BusDevice: Send {
    /// Fill `data` for a read at `offset` into the device's range.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Accept a write at `offset`; returns what the platform must do.
    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction;
}

/// A shared, individually locked device.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// What a range leads to.
#[derive(Clone)]
pub enum Target {
    Device(SharedDevice),
    /// BAR `bar` of a PCI function; offsets are relative to the BAR.
    Bar {
        dev: SharedPciDevice,
        bar: u8,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("bus range {base:#x}+{len:#x} for {name} is empty or wraps around")]
    BadRange { name: String, base: u64, len: u64 },
    #[error("bus range {base:#x}+{len:#x} for {name} overlaps {other}")]
    Overlap {
        name: String,
        other: String,
        base: u64,
        len: u64,
    },
}

/// A range to place: `owner` groups the ranges one `set_owned` call
/// replaces (a PCI function's BARs), `name` is for messages.
#[derive(Clone)]
pub struct Range {
    pub base: u64,
    pub len: u64,
    pub name: String,
    pub owner: Option<Bdf>,
    pub target: Target,
}

/// See the module doc.
#[derive(Default)]
pub struct Bus {
    snap: ArcSwap<Vec<Range>>,
    /// Serialises editors (setup, control thread); readers never take it.
    edit: Mutex<()>,
}

fn check(list: &[Range], r: &Range) -> Result<usize, BusError> {
    if r.len == 0 || r.base.checked_add(r.len).is_none() {
        return Err(BusError::BadRange {
            name: r.name.clone(),
            base: r.base,
            len: r.len,
        });
    }
    let pos = list.partition_point(|e| e.base < r.base);
    let clash = |e: &Range| r.base < e.base + e.len && e.base < r.base + r.len;
    let neighbours = [pos.checked_sub(1), Some(pos)];
    for e in neighbours.into_iter().flatten().filter_map(|i| list.get(i)) {
        if clash(e) {
            return Err(BusError::Overlap {
                name: r.name.clone(),
                other: e.name.clone(),
                base: r.base,
                len: r.len,
            });
        }
    }
    Ok(pos)
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    fn editing(&self) -> MutexGuard<'_, ()> {
        self.edit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Map `dev` at `[base, base + len)`.
    pub fn insert(
        &self,
        name: &str,
        base: u64,
        len: u64,
        dev: SharedDevice,
    ) -> Result<(), BusError> {
        self.insert_range(Range {
            base,
            len,
            name: name.into(),
            owner: None,
            target: Target::Device(dev),
        })
    }

    /// Map one range (a device or a BAR).
    pub fn insert_range(&self, r: Range) -> Result<(), BusError> {
        let _g = self.editing();
        let mut list = Vec::clone(&self.snap.load());
        let pos = check(&list, &r)?;
        list.insert(pos, r);
        self.snap.store(Arc::new(list));
        Ok(())
    }

    /// Replace every range `owner` holds by `ranges`, in one snapshot swap.
    /// A range that would overlap another is left out and reported; the
    /// others are placed (a guest that moves a BAR onto another device
    /// gets a BAR that does not answer, not a broken bus).
    pub fn set_owned(&self, owner: Bdf, ranges: Vec<Range>) -> Vec<BusError> {
        let _g = self.editing();
        let mut list: Vec<Range> = self
            .snap
            .load()
            .iter()
            .filter(|e| e.owner != Some(owner))
            .cloned()
            .collect();
        let mut errors = Vec::new();
        for r in ranges {
            match check(&list, &r) {
                Ok(pos) => list.insert(
                    pos,
                    Range {
                        owner: Some(owner),
                        ..r
                    },
                ),
                Err(e) => errors.push(e),
            }
        }
        self.snap.store(Arc::new(list));
        errors
    }

    /// The ranges mapped now, for tests and debug logs: (name, base, len).
    pub fn ranges(&self) -> Vec<(String, u64, u64)> {
        self.snap
            .load()
            .iter()
            .map(|e| (e.name.clone(), e.base, e.len))
            .collect()
    }

    /// Dispatch a read; returns false when no device covers `addr` (the
    /// caller decides what an unassigned read returns).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        let snap = self.snap.load();
        let Some((e, off)) = find(&snap, addr) else {
            return false;
        };
        match &e.target {
            Target::Device(d) => lock(d).read(off, data),
            Target::Bar { dev, bar } => crate::pci::root::lock(dev).bar_read(*bar, off, data),
        }
        true
    }

    /// Dispatch a write; `None` when no device covers `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Option<BusAction> {
        let snap = self.snap.load();
        let (e, off) = find(&snap, addr)?;
        Some(match &e.target {
            Target::Device(d) => lock(d).write(off, data),
            Target::Bar { dev, bar } => crate::pci::root::lock(dev).bar_write(*bar, off, data),
        })
    }
}

/// The range covering `addr` and the offset of `addr` inside it.
fn find(list: &[Range], addr: u64) -> Option<(&Range, u64)> {
    let pos = list.partition_point(|e| e.base <= addr);
    let e = list.get(pos.checked_sub(1)?)?;
    let off = addr - e.base;
    (off < e.len).then_some((e, off))
}

/// A device whose mutex was poisoned by a panic in another vCPU thread is
/// still in a consistent-enough state for a register model; taking the
/// guard keeps the VM running instead of cascading the panic.
fn lock(dev: &SharedDevice) -> MutexGuard<'_, dyn BusDevice + 'static> {
    dev.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(u8);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0.wrapping_add(offset as u8));
        }
        fn write(&mut self, _offset: u64, data: &[u8]) -> BusAction {
            self.0 = data[0];
            if self.0 == 0xfe {
                BusAction::Reset
            } else {
                BusAction::None
            }
        }
    }

    fn dev(v: u8) -> SharedDevice {
        Arc::new(Mutex::new(Echo(v)))
    }

    fn owned(base: u64, len: u64, v: u8) -> Range {
        Range {
            base,
            len,
            name: format!("r{base:#x}"),
            owner: None,
            target: Target::Device(dev(v)),
        }
    }

    #[test]
    fn dispatches_by_range_with_offsets() {
        let bus = Bus::new();
        bus.insert("a", 0x10, 0x8, dev(1)).unwrap();
        bus.insert("b", 0x20, 0x2, dev(100)).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x13, &mut b));
        assert_eq!(b[0], 4);
        assert!(bus.read(0x21, &mut b));
        assert_eq!(b[0], 101);
        assert!(!bus.read(0x18, &mut b), "just past a");
        assert!(!bus.read(0x0f, &mut b), "just before a");
        assert!(!bus.read(0x22, &mut b));
        assert_eq!(bus.write(0x20, &[0xfe]), Some(BusAction::Reset));
        assert_eq!(bus.write(0x30, &[0]), None);
    }

    #[test]
    fn rejects_overlaps_and_bad_ranges() {
        let bus = Bus::new();
        bus.insert("a", 0x10, 0x10, dev(0)).unwrap();
        for (base, len) in [(0x8, 0x9), (0x1f, 1), (0x12, 2), (0x0, 0x100)] {
            assert!(matches!(
                bus.insert("x", base, len, dev(0)),
                Err(BusError::Overlap { .. })
            ));
        }
        bus.insert("below", 0x8, 0x8, dev(0)).unwrap();
        bus.insert("above", 0x20, 0x1, dev(0)).unwrap();
        assert!(matches!(
            bus.insert("z", 0x40, 0, dev(0)),
            Err(BusError::BadRange { .. })
        ));
        assert!(matches!(
            bus.insert("w", u64::MAX, 2, dev(0)),
            Err(BusError::BadRange { .. })
        ));
    }

    #[test]
    fn owned_ranges_move_in_one_swap_and_old_ones_stop_answering() {
        let bus = Bus::new();
        bus.insert("fixed", 0x100, 0x10, dev(7)).unwrap();
        let f = Bdf {
            bus: 0,
            dev: 2,
            func: 0,
        };
        assert!(bus.set_owned(f, vec![owned(0x1000, 0x100, 1)]).is_empty());
        let before = bus.snap.load_full();
        let mut b = [0u8; 1];
        assert!(bus.read(0x1000, &mut b));
        // Move it: the old range is gone, the new one answers, and a
        // reader still holding the old snapshot is unaffected.
        assert!(bus.set_owned(f, vec![owned(0x2000, 0x100, 1)]).is_empty());
        assert!(!bus.read(0x1000, &mut b));
        assert!(bus.read(0x2000, &mut b));
        assert!(find(&before, 0x1000).is_some());
        // A move onto another device is refused and reported; the
        // function then has no range at all.
        let errs = bus.set_owned(f, vec![owned(0x108, 0x10, 1)]);
        assert!(matches!(errs.as_slice(), [BusError::Overlap { other, .. }] if other == "fixed"));
        assert!(!bus.read(0x2000, &mut b));
        assert_eq!(bus.ranges().len(), 1);
    }
}
