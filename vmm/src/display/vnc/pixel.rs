//! RFB pixel formats (RFC 6143 7.4): the 16-byte description a server
//! announces and a client may replace with SetPixelFormat, and turning
//! the surface's `0x00RRGGBB` pixels into it. True colour only; 8, 16
//! and 32 bits per pixel, either byte order.

/// A client's pixel format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelFormat {
    pub bpp: u8,
    pub depth: u8,
    pub big_endian: bool,
    pub true_colour: bool,
    pub max: [u16; 3],
    pub shift: [u8; 3],
}

impl PixelFormat {
    /// What the server offers: 32-bit little-endian BGRX, the surface's
    /// own layout, so that a client keeping it gets the bytes as they are.
    pub const NATIVE: PixelFormat = PixelFormat {
        bpp: 32,
        depth: 24,
        big_endian: false,
        true_colour: true,
        max: [255, 255, 255],
        shift: [16, 8, 0],
    };

    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0] = self.bpp;
        b[1] = self.depth;
        b[2] = self.big_endian as u8;
        b[3] = self.true_colour as u8;
        for i in 0..3 {
            b[4 + 2 * i..6 + 2 * i].copy_from_slice(&self.max[i].to_be_bytes());
            b[10 + i] = self.shift[i];
        }
        b
    }

    /// Parse a client's format; the reason it cannot be served otherwise.
    pub fn decode(b: &[u8; 16]) -> Result<PixelFormat, &'static str> {
        let f = PixelFormat {
            bpp: b[0],
            depth: b[1],
            big_endian: b[2] != 0,
            true_colour: b[3] != 0,
            max: [
                u16::from_be_bytes([b[4], b[5]]),
                u16::from_be_bytes([b[6], b[7]]),
                u16::from_be_bytes([b[8], b[9]]),
            ],
            shift: [b[10], b[11], b[12]],
        };
        if !matches!(f.bpp, 8 | 16 | 32) {
            return Err("bits per pixel other than 8, 16 or 32");
        }
        if !f.true_colour {
            return Err("colour maps (only true colour is served)");
        }
        if f.shift.iter().any(|&s| u32::from(s) >= u32::from(f.bpp)) {
            return Err("a colour shift outside the pixel");
        }
        Ok(f)
    }

    pub fn bytes_per_pixel(&self) -> usize {
        usize::from(self.bpp / 8)
    }

    /// Append `px` (`0x00RRGGBB`) to `out` in this format.
    pub fn put(&self, px: u32, out: &mut Vec<u8>) {
        if *self == Self::NATIVE {
            out.extend_from_slice(&px.to_le_bytes());
            return;
        }
        let c = [(px >> 16) & 0xff, (px >> 8) & 0xff, px & 0xff];
        let mut v: u32 = 0;
        for ((c, max), shift) in c.iter().zip(self.max).zip(self.shift) {
            v |= (c * u32::from(max) / 255).wrapping_shl(u32::from(shift));
        }
        let n = self.bytes_per_pixel();
        if self.big_endian {
            out.extend_from_slice(&v.to_be_bytes()[4 - n..]);
        } else {
            out.extend_from_slice(&v.to_le_bytes()[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_round_trips_and_keeps_the_bytes() {
        let f = PixelFormat::decode(&PixelFormat::NATIVE.encode()).unwrap();
        assert_eq!(f, PixelFormat::NATIVE);
        let mut out = Vec::new();
        f.put(0x00_11_22_33, &mut out);
        assert_eq!(out, [0x33, 0x22, 0x11, 0]);
    }

    #[test]
    fn converts_to_rgb565_big_endian() {
        let f = PixelFormat {
            bpp: 16,
            depth: 16,
            big_endian: true,
            true_colour: true,
            max: [31, 63, 31],
            shift: [11, 5, 0],
        };
        let mut out = Vec::new();
        f.put(0x00_ff_00_ff, &mut out);
        assert_eq!(out, [0xf8, 0x1f]);
    }

    #[test]
    fn refuses_colour_maps_and_odd_sizes() {
        let mut b = PixelFormat::NATIVE.encode();
        b[3] = 0;
        assert!(PixelFormat::decode(&b).is_err());
        let mut b = PixelFormat::NATIVE.encode();
        b[0] = 24;
        assert!(PixelFormat::decode(&b).is_err());
        let mut b = PixelFormat::NATIVE.encode();
        b[0] = 8;
        assert!(PixelFormat::decode(&b).is_err(), "shift 16 outside 8 bits");
    }
}
