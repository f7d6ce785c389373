//! The device's capability list, filtered to what a guest here can use.
//!
//! Kept: MSI, MSI-X (both emulated by the model), PCI Express (passed
//! through, so drivers find their link and device control registers) and
//! vendor-specific capabilities (passed through: virtio-pci finds its
//! register blocks through them). Everything else (power management, VPD,
//! bridge and hot-plug capabilities, ...) is unlinked:
//! the model answers the capabilities pointer and the kept capabilities'
//! next pointers from this list, while the bytes themselves stay where the
//! device has them. The list is read once from the device's configuration
//! space; a malformed list (pointer into the header, a loop) ends the walk
//! there rather than failing the device.

pub const CAP_MSI: u8 = 0x05;
pub const CAP_VENDOR: u8 = 0x09;
pub const CAP_PCIE: u8 = 0x10;
pub const CAP_MSIX: u8 = 0x11;

const FIRST_CAP_OFFSET: u8 = 0x40;
/// The legacy space has room for at most this many 4-byte capabilities.
const MAX_CAPS: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    pub id: u8,
    pub offset: u8,
}

/// The walk of the device's list and the kept subset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapList {
    pub all: Vec<Cap>,
    pub kept: Vec<Cap>,
}

/// Whether the model exposes capability `id`.
pub fn kept(id: u8) -> bool {
    matches!(id, CAP_MSI | CAP_VENDOR | CAP_MSIX | CAP_PCIE)
}

impl CapList {
    /// Walk the list in `cfg` (the device's first 256 bytes). `has_list`
    /// is the status register's capability-list bit.
    pub fn parse(cfg: &[u8], has_list: bool) -> Self {
        let mut all: Vec<Cap> = Vec::new();
        let mut next = if has_list {
            cfg.get(0x34).copied().unwrap_or(0) & !0x3
        } else {
            0
        };
        while next >= FIRST_CAP_OFFSET && all.len() < MAX_CAPS {
            if all.iter().any(|c| c.offset == next) {
                log::warn!("PCI capability list loops at {next:#x}; ignoring the rest");
                break;
            }
            let at = usize::from(next);
            let (Some(&id), Some(&n)) = (cfg.get(at), cfg.get(at + 1)) else {
                break;
            };
            all.push(Cap { id, offset: next });
            next = n & !0x3;
        }
        let kept_caps = all.iter().copied().filter(|c| kept(c.id)).collect();
        Self {
            all,
            kept: kept_caps,
        }
    }

    pub fn find(&self, id: u8) -> Option<Cap> {
        self.kept.iter().copied().find(|c| c.id == id)
    }

    /// What the capabilities pointer reads (0: no list).
    pub fn first(&self) -> u8 {
        self.kept.first().map_or(0, |c| c.offset)
    }

    /// If `offset` is a kept capability's next pointer, what it reads.
    pub fn next_pointer_at(&self, offset: u16) -> Option<u8> {
        let i = self
            .kept
            .iter()
            .position(|c| u16::from(c.offset) + 1 == offset)?;
        Some(self.kept.get(i + 1).map_or(0, |c| c.offset))
    }
}
