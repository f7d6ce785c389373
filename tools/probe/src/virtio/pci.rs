//! virtio-pci modern transport: finds the common, notify, ISR and device
//! configuration structures through the vendor capabilities (id 0x09) and
//! maps their BARs, assigning any BAR firmware left at 0. Legacy (I/O BAR)
//! operation is not supported: a transitional device must carry the modern
//! capabilities too.

use super::Notify;
use crate::io::{mmio_read16, mmio_read32, mmio_read8, mmio_write16, mmio_write32, mmio_write8};
use crate::pci::{self, BarAlloc, Bdf, Config};

const CAP_VENDOR: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;

// Common configuration structure offsets.
const DFSELECT: u64 = 0x00;
const DF: u64 = 0x04;
const GFSELECT: u64 = 0x08;
const GF: u64 = 0x0c;
const STATUS: u64 = 0x14;
const Q_SELECT: u64 = 0x16;
const Q_SIZE: u64 = 0x18;
const Q_ENABLE: u64 = 0x1c;
const Q_NOTIFY_OFF: u64 = 0x1e;
const Q_DESC: u64 = 0x20;
const Q_AVAIL: u64 = 0x28;
const Q_USED: u64 = 0x30;

pub struct Pci {
    pub bdf: Bdf,
    /// The BAR holding the common configuration (probe=bar-move moves it).
    pub common_bar: u8,
    pub common: u64,
    notify: u64,
    notify_mul: u32,
    /// Found for the report; polling never reads it.
    pub isr: u64,
    device: u64,
    /// BARs this driver assigned itself (bit per BAR).
    pub assigned: u8,
}

/// Walks the capability list and maps the structures. `force_assign`
/// clears the BARs first so the assignment path can be tested under
/// firmware that already assigned them.
pub fn open(cfg: &Config, bdf: Bdf, alloc: &mut BarAlloc, force_assign: bool) -> Result<Pci, &'static str> {
    if cfg.read16(bdf, 0x06) & 0x10 == 0 {
        return Err("pci-no-caps");
    }
    let mut bars = [0u64; 6];
    let mut assigned = 0u8;
    let mut found = [None::<(u8, u32)>; 5];
    let mut notify_mul = 0;
    let mut ptr = cfg.read8(bdf, 0x34) & 0xfc;
    let mut hops = 0;
    // 48 hops: a capability list cannot hold more in 256 bytes.
    while ptr >= 0x40 && hops < 48 {
        hops += 1;
        let w0 = cfg.read32(bdf, ptr as u16);
        let (id, next, typ) = (w0 as u8, (w0 >> 8) as u8 & 0xfc, (w0 >> 24) as u8);
        if id == CAP_VENDOR && (CFG_COMMON..=CFG_DEVICE).contains(&typ) && found[typ as usize].is_none() {
            let bar = cfg.read8(bdf, ptr as u16 + 4);
            let offset = cfg.read32(bdf, ptr as u16 + 8);
            if bar < 6 {
                found[typ as usize] = Some((bar, offset));
                if typ == CFG_NOTIFY {
                    notify_mul = cfg.read32(bdf, ptr as u16 + 16);
                }
            }
        }
        ptr = next;
    }
    for typ in CFG_COMMON..=CFG_DEVICE {
        let Some((b, _)) = found[typ as usize] else { return Err("pci-missing-cap") };
        if bars[b as usize] != 0 {
            continue;
        }
        let mut bar = pci::bar(cfg, bdf, b).ok_or("pci-bad-bar")?;
        // Unassigned, or above the probe's 4 GiB identity map: place it
        // below 4 GiB ourselves.
        if bar.addr == 0 || bar.addr + bar.size > crate::io::MAPPED_LIMIT || force_assign {
            let a = alloc.alloc(bar.size).ok_or("pci-no-bar-space")?;
            pci::set_bar(cfg, bdf, b, a, bar.is64);
            bar.addr = a;
            assigned |= 1 << b;
        }
        bars[b as usize] = bar.addr;
    }
    pci::enable(cfg, bdf);
    let at = |typ: u8| {
        let (b, off) = found[typ as usize].unwrap();
        bars[b as usize] + off as u64
    };
    Ok(Pci {
        bdf,
        common_bar: found[CFG_COMMON as usize].unwrap().0,
        common: at(CFG_COMMON),
        notify: at(CFG_NOTIFY),
        notify_mul,
        isr: at(CFG_ISR),
        device: at(CFG_DEVICE),
        assigned,
    })
}

impl Pci {
    pub fn status(&self) -> u8 {
        mmio_read8(self.common + STATUS)
    }

    pub fn set_status(&self, s: u8) {
        mmio_write8(self.common + STATUS, s)
    }

    pub fn device_features(&self) -> u64 {
        mmio_write32(self.common + DFSELECT, 0);
        let lo = mmio_read32(self.common + DF) as u64;
        mmio_write32(self.common + DFSELECT, 1);
        let hi = mmio_read32(self.common + DF) as u64;
        lo | hi << 32
    }

    pub fn set_driver_features(&self, f: u64) {
        mmio_write32(self.common + GFSELECT, 0);
        mmio_write32(self.common + GF, f as u32);
        mmio_write32(self.common + GFSELECT, 1);
        mmio_write32(self.common + GF, (f >> 32) as u32);
    }

    pub fn queue_max(&self, q: u16) -> u16 {
        mmio_write16(self.common + Q_SELECT, q);
        mmio_read16(self.common + Q_SIZE)
    }

    pub fn setup_queue(&self, q: u16, size: u16, desc: u64, avail: u64, used: u64) -> Notify {
        mmio_write16(self.common + Q_SELECT, q);
        mmio_write16(self.common + Q_SIZE, size);
        // 64-bit fields written as two 32-bit halves, which the spec allows.
        for (reg, addr) in [(Q_DESC, desc), (Q_AVAIL, avail), (Q_USED, used)] {
            mmio_write32(self.common + reg, addr as u32);
            mmio_write32(self.common + reg + 4, (addr >> 32) as u32);
        }
        let off = mmio_read16(self.common + Q_NOTIFY_OFF) as u64;
        mmio_write16(self.common + Q_ENABLE, 1);
        Notify { addr: self.notify + off * self.notify_mul as u64, value: q, width: 2 }
    }

    pub fn config_read32(&self, off: u64) -> u32 {
        mmio_read32(self.device + off)
    }
}
