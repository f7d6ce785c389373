//! virtio-mmio transport, version 2 (modern) only: the register block the
//! VMM announces on the command line (`virtio_mmio.device=`) or in the DSDT.
//! Every register access is one exit to the VMM, so the driver touches them
//! only while setting the device up; notifications are single stores.

use super::Notify;
use crate::io::{mmio_read32, mmio_write32};

const MAGIC: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const QUEUE_NOTIFY: u64 = 0x050;
const STATUS: u64 = 0x070;
const QUEUE_DESC: u64 = 0x080;
const QUEUE_DRIVER: u64 = 0x090;
const QUEUE_DEVICE: u64 = 0x0a0;
const CONFIG: u64 = 0x100;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"

pub struct Mmio {
    pub base: u64,
}

/// What sits at a virtio-mmio window: (version, device id), or None when
/// the magic is wrong.
pub fn identify(base: u64) -> Option<(u32, u32)> {
    if mmio_read32(base + MAGIC) != MAGIC_VALUE {
        return None;
    }
    Some((mmio_read32(base + VERSION), mmio_read32(base + DEVICE_ID)))
}

impl Mmio {
    pub fn status(&self) -> u8 {
        mmio_read32(self.base + STATUS) as u8
    }

    pub fn set_status(&self, s: u8) {
        mmio_write32(self.base + STATUS, s as u32)
    }

    pub fn device_features(&self) -> u64 {
        mmio_write32(self.base + DEVICE_FEATURES_SEL, 0);
        let lo = mmio_read32(self.base + DEVICE_FEATURES) as u64;
        mmio_write32(self.base + DEVICE_FEATURES_SEL, 1);
        let hi = mmio_read32(self.base + DEVICE_FEATURES) as u64;
        lo | hi << 32
    }

    pub fn set_driver_features(&self, f: u64) {
        mmio_write32(self.base + DRIVER_FEATURES_SEL, 0);
        mmio_write32(self.base + DRIVER_FEATURES, f as u32);
        mmio_write32(self.base + DRIVER_FEATURES_SEL, 1);
        mmio_write32(self.base + DRIVER_FEATURES, (f >> 32) as u32);
    }

    pub fn queue_max(&self, q: u16) -> u16 {
        mmio_write32(self.base + QUEUE_SEL, q as u32);
        mmio_read32(self.base + QUEUE_NUM_MAX).min(0x8000) as u16
    }

    /// Programs queue `q` (already selected by `queue_max`) and enables it.
    pub fn setup_queue(&self, q: u16, size: u16, desc: u64, avail: u64, used: u64) -> Notify {
        mmio_write32(self.base + QUEUE_SEL, q as u32);
        mmio_write32(self.base + QUEUE_NUM, size as u32);
        for (reg, addr) in [(QUEUE_DESC, desc), (QUEUE_DRIVER, avail), (QUEUE_DEVICE, used)] {
            mmio_write32(self.base + reg, addr as u32);
            mmio_write32(self.base + reg + 4, (addr >> 32) as u32);
        }
        mmio_write32(self.base + QUEUE_READY, 1);
        Notify { addr: self.base + QUEUE_NOTIFY, value: q, width: 4 }
    }

    pub fn config_read32(&self, off: u64) -> u32 {
        mmio_read32(self.base + CONFIG + off)
    }
}
