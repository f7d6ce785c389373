//! PCI: configuration space, BARs, capability lists, MSI-X, INTx and the
//! root complex that routes configuration cycles and BAR accesses.
//!
//! ```text
//!  0xCF8/0xCFC ─▶ ConfigIo ─┐
//!  ECAM window ─▶ Ecam ─────┴─▶ PciRoot ──▶ PciDevice::config_read/write
//!                                 (BarsMoved when decoding ranges change)
//!  BAR range on the MMIO/port bus ───────▶ PciDevice::bar_read/write
//! ```
//! The VMM pre-assigns every BAR (as firmware would), so a guest booted
//! without firmware finds its devices ready; a guest may still move BARs,
//! and routing follows. Devices reach the hypervisor only through the seams
//! below (`MsiVectors`, `IntxLine`, `IoEvents`), so every part of this
//! module is tested with fakes on any host.
//!
//! Written here rather than taken from a crate: no maintained crate on
//! crates.io models a PCI function's configuration space for a VMM (Cloud
//! Hypervisor's and crosvm's PCI code is not published for reuse).

pub mod bridge;
pub mod config;
pub mod msix;
pub mod root;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;

use std::io;

use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusAction;

pub use bridge::PlainFunction;
pub use config::{PciConfig, PciConfigError, PciIds};
pub use msix::{MsixCap, MsixDelivery, MsixLayout, MsixState};
pub use root::{ConfigIo, Ecam, PciError, PciRoot, SharedPciDevice, CONFIG_IO_LEN, ECAM_BUS_LEN};

/// Bus, device and function numbers on segment 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    pub bus: u8,
    pub dev: u8,
    pub func: u8,
}

impl std::fmt::Display for Bdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }
}

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    Io,
    Mem32,
    Mem64 { prefetchable: bool },
}

impl BarKind {
    pub fn is_io(self) -> bool {
        self == BarKind::Io
    }
}

/// A BAR that currently decodes: the guest (or the VMM at build time) gave
/// it an address and the command register enables its space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarRange {
    pub index: u8,
    pub kind: BarKind,
    pub addr: u64,
    pub size: u64,
}

/// One PCI function as the root complex sees it. Offsets are relative to
/// the function's configuration space (0..4096) or to a BAR's start;
/// `data` is 1, 2 or 4 bytes (8 for some BAR accesses).
pub trait PciDevice: Send {
    /// A short name for logs, e.g. `virtio-blk-pci0`.
    fn name(&self) -> &str;
    fn config_read(&mut self, offset: u16, data: &mut [u8]);
    /// A configuration write; the answer carries what the platform must do
    /// (a virtio status write through the PCI_CFG window can start a
    /// device). The root adds `BarsMoved` itself when decoding changed.
    fn config_write(&mut self, offset: u16, data: &[u8]) -> BusAction;
    /// The BARs that decode right now; the root rebuilds its routes from
    /// this after every configuration write.
    fn active_bars(&self) -> Vec<BarRange>;
    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]);
    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) -> BusAction;
}

/// An MSI message: the address/data pair a vector's table entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiMessage {
    pub addr: u64,
    pub data: u32,
}

/// A device's MSI-X vectors as the hypervisor delivers them. The VMM gives
/// every vector its own GSI with an MSI route and one irqfd; masking and
/// the pending bits stay in the device model (`msix`), which calls `route`
/// when the guest reprograms an entry and `trigger` only for unmasked ones.
pub trait MsiVectors: Send + Sync {
    fn count(&self) -> u16;
    /// Point vector `v` at `msg`, or stop routing it (`None`).
    fn route(&self, v: u16, msg: Option<MsiMessage>) -> io::Result<()>;
    /// Deliver vector `v`.
    fn trigger(&self, v: u16) -> io::Result<()>;
}

/// A level-triggered INTx pin. The VMM implements it with an irqfd and a
/// resample eventfd: the line stays raised until the guest's EOI and is
/// raised again afterwards while the device still holds it asserted.
pub trait IntxLine: Send + Sync {
    fn assert(&self) -> io::Result<()>;
    fn deassert(&self);
}

/// Which address space an ioeventfd watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoSpace {
    Pio,
    Mmio,
}

/// Registration of ioeventfds, so a device can move its notification
/// addresses when the guest moves its BAR. The VMM implements it over
/// KVM_IOEVENTFD (any access length, no data match).
pub trait IoEvents: Send + Sync {
    fn register(&self, evt: &EventFd, space: IoSpace, addr: u64) -> io::Result<()>;
    /// Like `register`, but only 32-bit writes of `data` signal `evt`
    /// (virtio-mmio's one QueueNotify register for every queue).
    fn register_datamatch(
        &self,
        evt: &EventFd,
        space: IoSpace,
        addr: u64,
        data: u32,
    ) -> io::Result<()>;
    fn unregister(&self, evt: &EventFd, space: IoSpace, addr: u64) -> io::Result<()>;
}

/// MMIO ranges whose writes KVM may queue in its coalesced ring instead
/// of exiting; the vCPUs apply the queued writes, in guest order, before
/// they dispatch any exit. Only for registers whose writes no other
/// thread's action may overtake (the device's own state changes that
/// could race with a delayed write need an exit from the guest first).
/// The VMM implements it over KVM_(UN)REGISTER_COALESCED_MMIO.
pub trait CoalescedZones: Send + Sync {
    fn register(&self, addr: u64, len: u32) -> io::Result<()>;
    fn unregister(&self, addr: u64, len: u32) -> io::Result<()>;
}
