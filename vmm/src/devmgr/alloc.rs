//! The platform's allocators, all in the device manager: PCI memory
//! windows and virtio-mmio windows (vm-allocator's `AddressAllocator`),
//! PCI slots and the IOAPIC pins of virtio-mmio devices (free lists: the
//! pins a machine leaves free are not one contiguous range, which is what
//! vm-allocator's `IdAllocator` manages). MSI GSIs are allocated by
//! `vstate::gsi`, which owns KVM's routing table. Exhaustion is an error
//! naming the resource and the device that asked.

use vm_allocator::{AddressAllocator, AllocPolicy};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("device {device}: no {resource} left (the machine has room for {capacity})")]
    Exhausted {
        device: String,
        resource: &'static str,
        capacity: String,
    },
}

/// Addresses of one window.
pub struct Window {
    what: &'static str,
    size: u64,
    alloc: Option<AddressAllocator>,
}

impl Window {
    /// `[base, base + size)`; an empty window allocates nothing.
    pub fn new(what: &'static str, base: u64, size: u64) -> Self {
        Self {
            what,
            size,
            alloc: AddressAllocator::new(base, size).ok(),
        }
    }

    /// `size` bytes aligned to `align` (both powers of two).
    pub fn take(&mut self, device: &str, size: u64, align: u64) -> Result<u64, AllocError> {
        self.alloc
            .as_mut()
            .and_then(|a| a.allocate(size, align, AllocPolicy::FirstMatch).ok())
            .map(|r| r.start())
            .ok_or_else(|| AllocError::Exhausted {
                device: device.into(),
                resource: self.what,
                capacity: format!("{:#x} bytes", self.size),
            })
    }
}

/// Numbered things (PCI slots, IOAPIC pins) handed out in a fixed order.
pub struct FreeList<T: Copy> {
    what: &'static str,
    total: usize,
    free: std::collections::VecDeque<T>,
}

impl<T: Copy> FreeList<T> {
    pub fn new(what: &'static str, items: impl IntoIterator<Item = T>) -> Self {
        let free: std::collections::VecDeque<T> = items.into_iter().collect();
        Self {
            what,
            total: free.len(),
            free,
        }
    }

    pub fn take(&mut self, device: &str) -> Result<T, AllocError> {
        self.free.pop_front().ok_or_else(|| AllocError::Exhausted {
            device: device.into(),
            resource: self.what,
            capacity: self.total.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_align_never_overlap_and_say_what_ran_out() {
        let mut w = Window::new("32-bit PCI memory", 0xc000_0000, 0x10000);
        let a = w.take("blk0", 0x4000, 0x4000).unwrap();
        let b = w.take("blk1", 0x4000, 0x4000).unwrap();
        assert_eq!(a % 0x4000, 0);
        assert!(b >= a + 0x4000 || a >= b + 0x4000, "{a:#x} {b:#x}");
        w.take("blk2", 0x8000, 0x8000).unwrap();
        let e = w.take("rng0", 0x1000, 0x1000).unwrap_err();
        assert_eq!(
            e.to_string(),
            "device rng0: no 32-bit PCI memory left (the machine has room for 0x10000 bytes)"
        );
    }

    #[test]
    fn free_lists_hand_out_in_order_then_fail_naming_the_resource() {
        let mut l = FreeList::new("PCI slot", [2u8, 3]);
        assert_eq!(l.take("a").unwrap(), 2);
        assert_eq!(l.take("b").unwrap(), 3);
        let e = l.take("c").unwrap_err().to_string();
        assert!(
            e.contains("device c") && e.contains("PCI slot") && e.contains('2'),
            "{e}"
        );
    }
}
