//! Address-range dispatch from a guest access to the device that owns it.
//!
//! A `Bus` is an immutable, sorted list of ranges built before the vCPUs run
//! and shared read-only between vCPU threads, so a lookup takes no lock; each
//! device sits behind its own mutex. Platform changes a write causes (reset,
//! power-off) come back as a `BusAction` for the caller to act on; devices
//! never reach into VM state.

use std::sync::{Arc, Mutex};

/// What a device write asks the platform to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BusAction {
    /// Nothing beyond the write itself.
    None,
    /// The guest asked for a system reset (i8042 pulse, ACPI reset).
    Reset,
    /// The guest entered ACPI S5.
    PowerOff,
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

struct Entry {
    base: u64,
    len: u64,
    name: String,
    dev: SharedDevice,
}

/// Sorted, non-overlapping ranges; see the module doc.
#[derive(Default)]
pub struct Bus {
    entries: Vec<Entry>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Map `dev` at `[base, base + len)`.
    pub fn insert(
        &mut self,
        name: &str,
        base: u64,
        len: u64,
        dev: SharedDevice,
    ) -> Result<(), BusError> {
        if len == 0 || base.checked_add(len).is_none() {
            return Err(BusError::BadRange {
                name: name.into(),
                base,
                len,
            });
        }
        let pos = self.entries.partition_point(|e| e.base < base);
        let clash = |e: &Entry| base < e.base + e.len && e.base < base + len;
        let neighbours = [pos.checked_sub(1), Some(pos)];
        for e in neighbours
            .into_iter()
            .flatten()
            .filter_map(|i| self.entries.get(i))
        {
            if clash(e) {
                return Err(BusError::Overlap {
                    name: name.into(),
                    other: e.name.clone(),
                    base,
                    len,
                });
            }
        }
        self.entries.insert(
            pos,
            Entry {
                base,
                len,
                name: name.into(),
                dev,
            },
        );
        Ok(())
    }

    /// The device covering `addr` and the offset of `addr` inside it.
    fn find(&self, addr: u64) -> Option<(&Entry, u64)> {
        let pos = self.entries.partition_point(|e| e.base <= addr);
        let e = self.entries.get(pos.checked_sub(1)?)?;
        let off = addr - e.base;
        (off < e.len).then_some((e, off))
    }

    /// Dispatch a read; returns false when no device covers `addr` (the
    /// caller decides what an unassigned read returns).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((e, off)) => {
                lock(&e.dev).read(off, data);
                true
            }
            None => false,
        }
    }

    /// Dispatch a write; `None` when no device covers `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Option<BusAction> {
        let (e, off) = self.find(addr)?;
        let action = lock(&e.dev).write(off, data);
        Some(action)
    }
}

/// A device whose mutex was poisoned by a panic in another vCPU thread is
/// still in a consistent-enough state for a legacy register model; taking
/// the guard keeps the VM running instead of cascading the panic.
fn lock(dev: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
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

    #[test]
    fn dispatches_by_range_with_offsets() {
        let mut bus = Bus::new();
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
        let mut bus = Bus::new();
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
}
