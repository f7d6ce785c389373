//! The virtio 1.x PCI capabilities (virtio 1.x, 4.1.4): where the common,
//! notification, ISR and device configuration structures sit in BAR 0, and
//! the VIRTIO_PCI_CAP_PCI_CFG access window into the BAR through
//! configuration space. Layout only; the transport acts on accesses.

use crate::pci::config::{overlaps, PciConfig, PciConfigError};

/// BAR 0's size; every structure lives in it, one 4 KiB page each.
pub const VIRTIO_PCI_BAR_SIZE: u64 = 0x8000;
pub const COMMON_OFFSET: u64 = 0x0000;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_OFFSET: u64 = 0x2000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
pub const MSIX_PBA_OFFSET: u64 = 0x5000;
/// Bytes each structure's region spans (and its capability announces).
pub const REGION_LEN: u64 = 0x1000;
/// Queue q's notification address is NOTIFY_OFFSET + q * this.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;

const VENDOR_CAP_ID: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
const CFG_PCI: u8 = 5;
/// struct virtio_pci_cap: 16 bytes; the notify and PCI_CFG forms add a
/// dword (the multiplier, the data window).
const CAP_LEN: u8 = 16;
const CAP_LEN_EXT: u8 = 20;

/// Body of a struct virtio_pci_cap after cap_vndr and cap_next.
fn body(cap_len: u8, cfg_type: u8, offset: u64, length: u64, extra: Option<u32>) -> Vec<u8> {
    let mut b = vec![cap_len, cfg_type, 0 /* bar */, 0 /* id */, 0, 0];
    // Offsets and lengths are page-sized constants inside the 32 KiB BAR.
    b.extend_from_slice(&(offset as u32).to_le_bytes());
    b.extend_from_slice(&(length as u32).to_le_bytes());
    if let Some(x) = extra {
        b.extend_from_slice(&x.to_le_bytes());
    }
    b
}

/// Append the five virtio capabilities to `cfg`; returns the PCI_CFG one.
pub fn add_virtio_caps(cfg: &mut PciConfig) -> Result<PciCfgCap, PciConfigError> {
    let plain = [
        (CFG_COMMON, COMMON_OFFSET),
        (CFG_ISR, ISR_OFFSET),
        (CFG_DEVICE, DEVICE_OFFSET),
    ];
    for (ty, off) in plain {
        let b = body(CAP_LEN, ty, off, REGION_LEN, None);
        cfg.add_capability(VENDOR_CAP_ID, &b, &vec![0; b.len()])?;
    }
    let b = body(
        CAP_LEN_EXT,
        CFG_NOTIFY,
        NOTIFY_OFFSET,
        REGION_LEN,
        Some(NOTIFY_OFF_MULTIPLIER),
    );
    cfg.add_capability(VENDOR_CAP_ID, &b, &vec![0; b.len()])?;
    // PCI_CFG: the driver writes bar, offset and length, then reads or
    // writes the data dword; offset and length in the header stay zero.
    let b = body(CAP_LEN_EXT, CFG_PCI, 0, 0, Some(0));
    let mut mask = vec![0u8; b.len()];
    mask[2] = 0xff; // bar
    mask[6..18].fill(0xff); // offset, length, data
    let at = cfg.add_capability(VENDOR_CAP_ID, &b, &mask)?;
    Ok(PciCfgCap { at })
}

/// The VIRTIO_PCI_CAP_PCI_CFG window (virtio 1.x, 4.1.4.9).
#[derive(Debug, Clone, Copy)]
pub struct PciCfgCap {
    at: u16,
}

impl PciCfgCap {
    fn data_at(&self) -> u16 {
        self.at + 16
    }

    /// Whether a configuration access touches pci_cfg_data.
    pub fn touches_data(&self, offset: u16, len: usize) -> bool {
        overlaps(offset, len, self.data_at(), 4)
    }

    /// The BAR 0 access the window describes: (offset, length). None when
    /// the driver set another BAR, a length other than 1, 2 or 4, an
    /// offset not a multiple of the length, or one past the BAR.
    pub fn access(&self, cfg: &PciConfig) -> Option<(u64, usize)> {
        let bar = cfg.u8_at(self.at + 4);
        let off = u64::from(cfg.u32_at(self.at + 8));
        let len = cfg.u32_at(self.at + 12);
        let ok = bar == 0
            && matches!(len, 1 | 2 | 4)
            && off.is_multiple_of(u64::from(len))
            && off + u64::from(len) <= VIRTIO_PCI_BAR_SIZE;
        ok.then_some((off, len as usize))
    }

    pub fn data(&self, cfg: &PciConfig) -> [u8; 4] {
        cfg.u32_at(self.data_at()).to_le_bytes()
    }

    /// Store what a BAR read returned; bytes past it read as zero.
    pub fn set_data(&self, cfg: &mut PciConfig, bytes: &[u8]) {
        let mut d = [0u8; 4];
        for (d, b) in d.iter_mut().zip(bytes) {
            *d = *b;
        }
        cfg.set_bytes(self.data_at(), &d);
    }
}
