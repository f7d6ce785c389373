//! virtio-gpu wire format (virtio 1.2, 5.7.6): command and response
//! types, the control header, pixel formats, and little-endian readers
//! over a request's bytes that fail instead of panicking on short input.

pub const F_EDID: u64 = 1 << 1;

pub const CMD_GET_DISPLAY_INFO: u32 = 0x0100;
pub const CMD_RESOURCE_CREATE_2D: u32 = 0x0101;
pub const CMD_RESOURCE_UNREF: u32 = 0x0102;
pub const CMD_SET_SCANOUT: u32 = 0x0103;
pub const CMD_RESOURCE_FLUSH: u32 = 0x0104;
pub const CMD_TRANSFER_TO_HOST_2D: u32 = 0x0105;
pub const CMD_RESOURCE_ATTACH_BACKING: u32 = 0x0106;
pub const CMD_RESOURCE_DETACH_BACKING: u32 = 0x0107;
pub const CMD_GET_CAPSET_INFO: u32 = 0x0108;
pub const CMD_GET_CAPSET: u32 = 0x0109;
pub const CMD_GET_EDID: u32 = 0x010a;
pub const CMD_UPDATE_CURSOR: u32 = 0x0300;
pub const CMD_MOVE_CURSOR: u32 = 0x0301;

pub const RESP_OK_NODATA: u32 = 0x1100;
pub const RESP_OK_DISPLAY_INFO: u32 = 0x1101;
pub const RESP_OK_EDID: u32 = 0x1104;
pub const RESP_ERR_UNSPEC: u32 = 0x1200;
pub const RESP_ERR_OUT_OF_MEMORY: u32 = 0x1201;
pub const RESP_ERR_INVALID_SCANOUT_ID: u32 = 0x1202;
pub const RESP_ERR_INVALID_RESOURCE_ID: u32 = 0x1203;
pub const RESP_ERR_INVALID_PARAMETER: u32 = 0x1205;

pub const FLAG_FENCE: u32 = 1;
/// `struct virtio_gpu_ctrl_hdr`.
pub const HDR_LEN: usize = 24;
/// Scanouts in `virtio_gpu_resp_display_info`.
pub const MAX_SCANOUTS: usize = 16;

/// Pixel formats (`enum virtio_gpu_formats`) and the byte positions of
/// red, green and blue in each 4-byte pixel.
pub fn format_layout(format: u32) -> Option<[usize; 3]> {
    Some(match format {
        1 | 2 => [2, 1, 0],    // B8G8R8A8, B8G8R8X8
        3 | 4 => [1, 2, 3],    // A8R8G8B8, X8R8G8B8
        67 | 134 => [0, 1, 2], // R8G8B8A8, R8G8B8X8
        68 | 121 => [3, 2, 1], // X8B8G8R8, A8B8G8R8
        _ => return None,
    })
}

/// A rectangle as the guest sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GpuRect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl GpuRect {
    /// Inside a `width` x `height` resource (no overflow).
    pub fn within(&self, width: u32, height: u32) -> bool {
        u64::from(self.x) + u64::from(self.w) <= u64::from(width)
            && u64::from(self.y) + u64::from(self.h) <= u64::from(height)
    }

    /// The overlap of two rectangles (empty when none).
    pub fn intersect(&self, o: &GpuRect) -> GpuRect {
        let x1 = self.x.max(o.x);
        let y1 = self.y.max(o.y);
        let x2 = (u64::from(self.x) + u64::from(self.w)).min(u64::from(o.x) + u64::from(o.w));
        let y2 = (u64::from(self.y) + u64::from(self.h)).min(u64::from(o.y) + u64::from(o.h));
        if x2 <= u64::from(x1) || y2 <= u64::from(y1) {
            return GpuRect::default();
        }
        GpuRect {
            x: x1,
            y: y1,
            w: (x2 - u64::from(x1)) as u32,
            h: (y2 - u64::from(y1)) as u32,
        }
    }
}

/// A request's bytes, read little-endian from the front.
pub struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

/// The request was shorter than its command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short;

impl<'a> Reader<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Self { b, at: 0 }
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let s = self
            .b
            .get(self.at..self.at.checked_add(n).ok_or(Short)?)
            .ok_or(Short)?;
        self.at += n;
        Ok(s)
    }

    pub fn u32(&mut self) -> Result<u32, Short> {
        let s = self.bytes(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, Short> {
        Ok(u64::from(self.u32()?) | (u64::from(self.u32()?) << 32))
    }

    pub fn rect(&mut self) -> Result<GpuRect, Short> {
        Ok(GpuRect {
            x: self.u32()?,
            y: self.u32()?,
            w: self.u32()?,
            h: self.u32()?,
        })
    }

    pub fn left(&self) -> usize {
        self.b.len() - self.at
    }
}

/// The control header of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hdr {
    pub kind: u32,
    pub flags: u32,
    pub fence_id: u64,
    pub ctx_id: u32,
    pub ring_idx: u8,
}

impl Hdr {
    pub fn read(r: &mut Reader) -> Result<Hdr, Short> {
        let kind = r.u32()?;
        let flags = r.u32()?;
        let fence_id = r.u64()?;
        let ctx_id = r.u32()?;
        let ring_idx = r.bytes(4)?[0];
        Ok(Hdr {
            kind,
            flags,
            fence_id,
            ctx_id,
            ring_idx,
        })
    }

    /// A response header of type `kind` answering `self`: fenced
    /// requests get their fence back (they complete in order here).
    pub fn response(&self, kind: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity(HDR_LEN);
        v.extend_from_slice(&kind.to_le_bytes());
        let fenced = self.flags & FLAG_FENCE != 0;
        let flags = if fenced { FLAG_FENCE } else { 0 };
        v.extend_from_slice(&flags.to_le_bytes());
        v.extend_from_slice(&(if fenced { self.fence_id } else { 0 }).to_le_bytes());
        v.extend_from_slice(&self.ctx_id.to_le_bytes());
        v.extend_from_slice(&[0; 4]);
        v
    }
}
