//! A 128-byte EDID 1.4 base block for the scanout (GET_EDID): one
//! preferred detailed timing at the configured resolution, a monitor
//! name and a range-limits descriptor, as a guest's mode list needs.
//! Written here: the `edid` crates on crates.io parse EDIDs, none
//! builds one.

/// Build the block for a `w` x `h` display at 60 Hz.
pub fn edid(w: u32, h: u32) -> [u8; 128] {
    let mut e = [0u8; 128];
    e[..8].copy_from_slice(&[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
    // Manufacturer "CSM" (three 5-bit letters), product 1, serial 0.
    let m = (((b'C' - b'@') as u16) << 10) | (((b'S' - b'@') as u16) << 5) | (b'M' - b'@') as u16;
    e[8..10].copy_from_slice(&m.to_be_bytes());
    e[10] = 1;
    e[16] = 1; // week
    e[17] = (2026 - 1990) as u8;
    e[18] = 1;
    e[19] = 4;
    e[20] = 0xa5; // digital, 8 bits per colour, DisplayPort
                  // Screen size in cm at ~96 dpi.
    e[21] = (w * 254 / 9600).clamp(1, 255) as u8;
    e[22] = (h * 254 / 9600).clamp(1, 255) as u8;
    e[23] = 120; // gamma 2.2
    e[24] = 0x06; // RGB colour, preferred timing is native
                  // sRGB chromaticity, as QEMU's edid generator writes it.
    e[25..35].copy_from_slice(&[0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54]);
    // No established timings; standard timings unused (01 01).
    for i in 0..8 {
        e[38 + 2 * i] = 1;
        e[39 + 2 * i] = 1;
    }
    e[54..72].copy_from_slice(&timing(w, h));
    e[72..90].copy_from_slice(&text_descriptor(0xfc, b"Casemate"));
    e[90..108].copy_from_slice(&range_limits());
    e[108..126].copy_from_slice(&text_descriptor(0x10, b""));
    let sum = e[..127].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    e[127] = 0u8.wrapping_sub(sum);
    e
}

/// A detailed timing descriptor with CVT-reduced-blanking-like margins.
fn timing(w: u32, h: u32) -> [u8; 18] {
    let (hblank, vblank) = (160u32, 30u32);
    let (hfront, hsync, vfront, vsync) = (48u32, 32u32, 3u32, 6u32);
    let clock_10khz = ((w + hblank) * (h + vblank) * 60)
        .div_ceil(10_000)
        .min(0xffff);
    let mut d = [0u8; 18];
    d[0..2].copy_from_slice(&(clock_10khz as u16).to_le_bytes());
    d[2] = w as u8;
    d[3] = hblank as u8;
    d[4] = (((w >> 8) & 0xf) << 4 | ((hblank >> 8) & 0xf)) as u8;
    d[5] = h as u8;
    d[6] = vblank as u8;
    d[7] = (((h >> 8) & 0xf) << 4 | ((vblank >> 8) & 0xf)) as u8;
    d[8] = hfront as u8;
    d[9] = hsync as u8;
    d[10] = ((vfront & 0xf) << 4 | (vsync & 0xf)) as u8;
    d[11] = 0;
    let (wmm, hmm) = (w * 254 / 960, h * 254 / 960);
    d[12] = wmm as u8;
    d[13] = hmm as u8;
    d[14] = (((wmm >> 8) & 0xf) << 4 | ((hmm >> 8) & 0xf)) as u8;
    d[17] = 0x1e; // digital separate sync, both polarities positive
    d
}

fn text_descriptor(tag: u8, text: &[u8]) -> [u8; 18] {
    let mut d = [0u8; 18];
    d[3] = tag;
    if tag == 0x10 {
        return d;
    }
    let mut t = [b' '; 13];
    let n = text.len().min(12);
    t[..n].copy_from_slice(&text[..n]);
    t[n] = b'\n';
    d[5..].copy_from_slice(&t);
    d
}

fn range_limits() -> [u8; 18] {
    // 50-125 Hz vertical, 30-160 kHz horizontal, 600 MHz clock.
    let mut d = [0u8; 18];
    d[3] = 0xfd;
    d[5..11].copy_from_slice(&[50, 125, 30, 160, 60, 0]);
    d[11..18].copy_from_slice(b"\n      ");
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checksum_and_preferred_mode() {
        let e = edid(1280, 800);
        assert_eq!(&e[..8], &[0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0]);
        assert_eq!(e.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let w = u32::from(e[56]) | (u32::from(e[58] >> 4) << 8);
        let h = u32::from(e[59]) | (u32::from(e[61] >> 4) << 8);
        assert_eq!((w, h), (1280, 800));
        assert_eq!(&e[77..85], b"Casemate");
    }
}
