//! Virtio for the probe: two transports (mmio.rs, pci.rs) behind one
//! `Transport`, the device-independent start-up handshake, the split
//! virtqueue (queue.rs), the block and entropy devices on top (blk.rs,
//! rng.rs), and discovery of devices by type (find.rs). All of it runs at
//! CPL3 and polls; no interrupts.

pub mod blk;
pub mod find;
pub mod gpu;
pub mod mmio;
pub mod net;
pub mod pci;
pub mod queue;
pub mod rng;

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

pub const STATUS_ACK: u8 = 1;
pub const STATUS_DRIVER: u8 = 2;
pub const STATUS_DRIVER_OK: u8 = 4;
pub const STATUS_FEATURES_OK: u8 = 8;
pub const STATUS_NEEDS_RESET: u8 = 0x40;
pub const STATUS_FAILED: u8 = 0x80;

pub const F_INDIRECT_DESC: u64 = 1 << 28;
pub const F_VERSION_1: u64 = 1 << 32;
/// VIRTIO_RING_F_EVENT_IDX: notifications and interrupts suppressed
/// through `avail_event`/`used_event` instead of the ring flags.
pub const F_EVENT_IDX: u64 = 1 << 29;

/// `event_idx=1` on the command line: every device start asks for
/// EVENT_IDX, so both suppression schemes get exercised.
static WANT_EVENT_IDX: AtomicBool = AtomicBool::new(false);
/// Whether the last feature handshake accepted EVENT_IDX; the queues set
/// up right after it (before DRIVER_OK) use it. Devices are opened one at
/// a time on one CPU.
static EVENT_IDX_ON: AtomicBool = AtomicBool::new(false);

pub fn want_event_idx(on: bool) {
    WANT_EVENT_IDX.store(on, Ordering::Relaxed);
}

pub fn event_idx_on() -> bool {
    EVENT_IDX_ON.load(Ordering::Relaxed)
}

/// Where a queue notification goes: one plain store of `value` (the queue
/// index), which the VMM can bind to an ioeventfd.
#[derive(Clone, Copy)]
pub struct Notify {
    pub addr: u64,
    pub value: u16,
    /// Store width in bytes: 4 on virtio-mmio, 2 on virtio-pci.
    pub width: u8,
}

pub enum Transport {
    Mmio(mmio::Mmio),
    Pci(pci::Pci),
}

impl Transport {
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Mmio(_) => "mmio",
            Transport::Pci(_) => "pci",
        }
    }

    pub fn status(&self) -> u8 {
        match self {
            Transport::Mmio(t) => t.status(),
            Transport::Pci(t) => t.status(),
        }
    }

    pub fn set_status(&self, s: u8) {
        match self {
            Transport::Mmio(t) => t.set_status(s),
            Transport::Pci(t) => t.set_status(s),
        }
    }

    fn device_features(&self) -> u64 {
        match self {
            Transport::Mmio(t) => t.device_features(),
            Transport::Pci(t) => t.device_features(),
        }
    }

    fn set_driver_features(&self, f: u64) {
        match self {
            Transport::Mmio(t) => t.set_driver_features(f),
            Transport::Pci(t) => t.set_driver_features(f),
        }
    }

    pub fn queue_max(&self, q: u16) -> u16 {
        match self {
            Transport::Mmio(t) => t.queue_max(q),
            Transport::Pci(t) => t.queue_max(q),
        }
    }

    pub fn setup_queue(&self, q: u16, size: u16, desc: u64, avail: u64, used: u64) -> Notify {
        match self {
            Transport::Mmio(t) => t.setup_queue(q, size, desc, avail, used),
            Transport::Pci(t) => t.setup_queue(q, size, desc, avail, used),
        }
    }

    /// Device-specific configuration, 32-bit aligned reads (both transports
    /// accept them; narrower fields are cut out by the caller).
    pub fn config_read32(&self, off: u64) -> u32 {
        match self {
            Transport::Mmio(t) => t.config_read32(off),
            Transport::Pci(t) => t.config_read32(off),
        }
    }

    /// Reset, then ACKNOWLEDGE, DRIVER and the feature handshake. Returns
    /// (offered, negotiated). VIRTIO_F_VERSION_1 is required: the probe has
    /// no legacy (pre-1.0) path.
    pub fn start(&self, wanted: u64) -> Result<(u64, u64), &'static str> {
        self.reset()?;
        self.set_status(STATUS_ACK);
        self.set_status(STATUS_ACK | STATUS_DRIVER);
        let offered = self.device_features();
        if offered & F_VERSION_1 == 0 {
            self.set_status(STATUS_FAILED);
            return Err("virtio-no-version1");
        }
        let wanted = if WANT_EVENT_IDX.load(Ordering::Relaxed) { wanted | F_EVENT_IDX } else { wanted };
        let negotiated = offered & (wanted | F_VERSION_1);
        EVENT_IDX_ON.store(negotiated & F_EVENT_IDX != 0, Ordering::Relaxed);
        self.set_driver_features(negotiated);
        self.set_status(STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK);
        if self.status() & STATUS_FEATURES_OK == 0 {
            self.set_status(STATUS_FAILED);
            return Err("virtio-features-rejected");
        }
        Ok((offered, negotiated))
    }

    pub fn driver_ok(&self) {
        self.set_status(STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK);
    }

    /// Writes 0 and waits until the device reads back 0 (the spec lets a
    /// device take time; QEMU resets synchronously, so one read suffices).
    pub fn reset(&self) -> Result<(), &'static str> {
        self.set_status(0);
        for _ in 0..1000 {
            if self.status() == 0 {
                return Ok(());
            }
            crate::tsc::delay_us(100);
        }
        Err("virtio-reset-timeout")
    }
}

/// Page-aligned memory the device reads and writes (rings, request headers,
/// data). Lives in the probe's BSS: identity-mapped RAM below 4 GiB, so its
/// virtual address is the guest-physical address the device is given.
#[repr(C, align(4096))]
pub struct Dma<const N: usize>(UnsafeCell<[u8; N]>);

// SAFETY: the probe drives devices from the BSP only; the device's accesses
// are synchronised through the rings with volatile accesses and fences.
unsafe impl<const N: usize> Sync for Dma<N> {}

impl<const N: usize> Dma<N> {
    pub const fn new() -> Self {
        Dma(UnsafeCell::new([0; N]))
    }

    pub fn addr(&self) -> u64 {
        self.0.get() as u64
    }

    pub const fn len(&self) -> usize {
        N
    }
}
