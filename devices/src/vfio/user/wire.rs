//! The vfio-user wire format this client speaks: the 16-byte message
//! header and the command bodies, little-endian, laid out as the
//! vfio-user specification (and QEMU, libvfio-user and the `vfio_user`
//! crate) lay them out. Pure encoding and decoding, no I/O.

pub const HEADER_LEN: usize = 16;

/// Message types and flags in the header's `flags` word.
pub const FLAG_REPLY: u32 = 1;
pub const FLAG_TYPE_MASK: u32 = 0xf;
pub const FLAG_ERROR: u32 = 1 << 5;

/// Commands.
pub const VERSION: u16 = 1;
pub const DMA_MAP: u16 = 2;
pub const DMA_UNMAP: u16 = 3;
pub const DEVICE_GET_INFO: u16 = 4;
pub const DEVICE_GET_REGION_INFO: u16 = 5;
pub const DEVICE_GET_IRQ_INFO: u16 = 7;
pub const DEVICE_SET_IRQS: u16 = 8;
pub const REGION_READ: u16 = 9;
pub const REGION_WRITE: u16 = 10;
pub const DEVICE_RESET: u16 = 13;

/// `VFIO_IRQ_SET_*` flags.
pub const IRQ_DATA_NONE: u32 = 1 << 0;
pub const IRQ_DATA_EVENTFD: u32 = 1 << 2;
pub const IRQ_ACTION_UNMASK: u32 = 1 << 4;
pub const IRQ_ACTION_TRIGGER: u32 = 1 << 5;

/// `VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE`.
pub const DMA_READ_WRITE: u32 = 0x3;

/// `vfio_region_info`'s size; its capability offsets count from its start.
pub const REGION_INFO_LEN: usize = 32;
pub const REGION_INFO_FLAG_CAPS: u32 = 1 << 3;
pub const CAP_SPARSE_MMAP: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub id: u16,
    pub command: u16,
    pub size: u32,
    pub flags: u32,
    pub error: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&self.id.to_le_bytes());
        b[2..4].copy_from_slice(&self.command.to_le_bytes());
        b[4..8].copy_from_slice(&self.size.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..16].copy_from_slice(&self.error.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8; HEADER_LEN]) -> Self {
        let r = Reader(b);
        Self {
            id: r.u16(0),
            command: r.u16(2),
            size: r.u32(4),
            flags: r.u32(8),
            error: r.u32(12),
        }
    }
}

/// Little-endian field builder.
#[derive(Default)]
pub struct Body(pub Vec<u8>);

impl Body {
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
}

/// Little-endian field reader over a reply; short replies read zeros
/// (callers check lengths first where it matters).
pub struct Reader<'a>(pub &'a [u8]);

impl Reader<'_> {
    fn get<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut b = [0u8; N];
        if let Some(s) = self.0.get(at..at + N) {
            b.copy_from_slice(s);
        }
        b
    }
    pub fn u16(&self, at: usize) -> u16 {
        u16::from_le_bytes(self.get(at))
    }
    pub fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.get(at))
    }
    pub fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.get(at))
    }
}

/// Why a region's capability list could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapError {
    #[error("capability at {0:#x} lies outside the reply or does not advance")]
    Outside(usize),
    #[error("sparse mmap area {offset:#x}+{size:#x} lies outside the {region:#x}-byte region")]
    Area { offset: u64, size: u64, region: u64 },
}

/// The sparse mmap areas in the capability list of a region info reply
/// (`info` is the reply body from `vfio_region_info` on).
pub fn sparse_areas(info: &[u8], region_size: u64) -> Result<Vec<(u64, u64)>, CapError> {
    let r = Reader(info);
    if r.u32(4) & REGION_INFO_FLAG_CAPS == 0 {
        return Ok(Vec::new());
    }
    let mut areas = Vec::new();
    let mut next = r.u32(12) as usize;
    let mut seen = 0usize;
    while next != 0 {
        if next < REGION_INFO_LEN || next <= seen || next + 8 > info.len() {
            return Err(CapError::Outside(next));
        }
        seen = next;
        let (id, following) = (r.u16(next), r.u32(next + 4) as usize);
        if id == CAP_SPARSE_MMAP {
            let n = r.u32(next + 8) as usize;
            let end = n
                .checked_mul(16)
                .and_then(|l| l.checked_add(next + 16))
                .filter(|&e| e <= info.len())
                .ok_or(CapError::Outside(next))?;
            for at in (next + 16..end).step_by(16) {
                let (offset, size) = (r.u64(at), r.u64(at + 8));
                if offset.checked_add(size).is_none_or(|e| e > region_size) {
                    return Err(CapError::Area {
                        offset,
                        size,
                        region: region_size,
                    });
                }
                areas.push((offset, size));
            }
        }
        next = following;
    }
    Ok(areas)
}
