//! VFIO device assignment: one PCI function model (`function`) over a
//! device reached through the `VfioDeviceIo` seam, with DMA through
//! `DmaMapper`.
//!
//! ```text
//!  guest config/BAR access ─▶ VfioPciFunction ─▶ VfioDeviceIo (kernel, vfio-user, fake)
//!                               │ emulates: BARs, ROM, cap list, MSI, MSI-X table/PBA
//!                               ├─▶ MsiIrqfds / IntxIrqfds (irqfds the device signals)
//!                               ├─▶ MemSlots (mappable BAR areas as guest memory)
//!                               └─▶ DmaMapper (all guest RAM, IOVA = GPA)
//! ```
//! This module owns the model and the seams; the backends that drive real
//! devices and the VMM's KVM implementations of the seams live elsewhere.
//! Like the rest of this crate it never calls KVM.

pub mod bars;
pub mod caps;
pub mod dma;
#[cfg(any(test, feature = "test-utils"))]
pub mod fake;
pub mod function;
pub mod io;
pub mod kernel;
pub mod msi;
pub mod msix;
pub mod seams;
pub mod user;

use std::io as stdio;

pub use dma::{DmaMapper, DmaRegion};
pub use function::{VfioPciFunction, VfioPciParams};
pub use io::{DeviceInfo, IrqInfo, MmapArea, RegionInfo, VfioDeviceIo};
pub use seams::{IntxIrqfds, MemSlots, MsiAllocator, MsiIrqfds};

/// Why an assigned device could not be set up or driven. Guest accesses
/// never produce these: a failing access is logged (rate-limited) and the
/// guest reads all-ones.
#[derive(Debug, thiserror::Error)]
pub enum VfioError {
    #[error("VFIO device {device}: {op} failed")]
    Backend {
        device: String,
        op: &'static str,
        #[source]
        source: stdio::Error,
    },
    #[error("VFIO device {device} is not a PCI device (flags {flags:#x})")]
    NotPci { device: String, flags: u32 },
    #[error("VFIO device {device} has {count} regions; a PCI device has at least {min}")]
    TooFewRegions {
        device: String,
        count: u32,
        min: u32,
    },
    #[error("VFIO device {device}: configuration space region is {size} bytes, below 256")]
    ConfigTooSmall { device: String, size: u64 },
    #[error("VFIO device {device}: BAR {index} of {size:#x} bytes cannot be given to a guest")]
    BarSize {
        device: String,
        index: u8,
        size: u64,
    },
    #[error("VFIO device {device}: BAR {index} cannot be declared")]
    BarDecl {
        device: String,
        index: u8,
        #[source]
        source: crate::pci::PciConfigError,
    },
    #[error(
        "VFIO device {device}: its MSI-X {what} lies in BAR {bar} at {offset:#x}, outside the BAR"
    )]
    MsixOutside {
        device: String,
        what: &'static str,
        bar: u8,
        offset: u64,
    },
    #[error("VFIO device {device}: no BAR {index} to place")]
    NoSuchBar { device: String, index: u8 },
    #[error("VFIO device {device}: DMA map of guest RAM {iova:#x}+{size:#x} failed")]
    DmaMap {
        device: String,
        iova: u64,
        size: u64,
        #[source]
        source: stdio::Error,
    },
    #[error("VFIO device {device}: BAR {bar} area at guest {gpa:#x}: memory slot failed")]
    Slot {
        device: String,
        bar: u8,
        gpa: u64,
        #[source]
        source: stdio::Error,
    },
}

impl VfioError {
    fn backend(device: &str, op: &'static str, source: stdio::Error) -> Self {
        Self::Backend {
            device: device.to_string(),
            op,
            source,
        }
    }
}

/// Guest-caused warnings logged per device at most this many times.
const MAX_WARNINGS: u32 = 8;

/// A counter that lets the first `MAX_WARNINGS` warnings through.
#[derive(Debug, Default)]
struct WarnLimit(u32);

impl WarnLimit {
    fn allow(&mut self) -> bool {
        let ok = self.0 < MAX_WARNINGS;
        self.0 = self.0.saturating_add(1);
        ok
    }
}

#[cfg(test)]
mod tests;
