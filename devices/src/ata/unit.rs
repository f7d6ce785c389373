//! One unit on an ATA channel or AHCI port: a hard disk over a
//! `casemate_disk::DiskImage` (the same backends, formats, cache modes and
//! `-snapshot` overlays as virtio-blk) or an ATAPI CD-ROM, and the
//! IDENTIFY (PACKET) DEVICE data it reports. Owns the unit's settings
//! (SET MULTIPLE MODE, SET FEATURES) and CD-ROM sense state; register
//! protocol is the channel's, packet commands are `atapi`.

use std::sync::Arc;

use casemate_disk::DiskImage;

use super::atapi::Sense;

pub const SECTOR: u64 = 512;
/// The largest READ/WRITE MULTIPLE block offered (IDENTIFY word 47).
pub const MAX_MULTIPLE: u32 = 16;

/// What sits in the unit.
#[derive(Debug)]
pub enum Media {
    Disk(Arc<dyn DiskImage>),
    /// A CD-ROM drive, with or without a disc.
    Cdrom(Option<Arc<dyn DiskImage>>),
}

/// How the VMM describes a unit.
#[derive(Debug)]
pub struct UnitConfig {
    pub media: Media,
    /// The serial number string (at most 20 bytes shown).
    pub serial: String,
    /// Writes refused with ABRT (`readonly=on`); a CD-ROM always is.
    pub read_only: bool,
}

/// See the module doc.
#[derive(Debug)]
pub struct Unit {
    pub cfg: UnitConfig,
    /// SET MULTIPLE MODE's block, 0 until set.
    pub multiple: u32,
    pub write_cache: bool,
    /// Sense data for the next REQUEST SENSE (CD-ROM).
    pub sense: Sense,
    /// DMA mode selected by SET FEATURES: (multiword, ultra) bit masks.
    pub dma_mode: (u8, u8),
}

impl Unit {
    pub fn new(cfg: UnitConfig) -> Self {
        Self {
            cfg,
            multiple: 0,
            write_cache: true,
            sense: Sense::default(),
            dma_mode: (0, 0),
        }
    }

    pub fn is_packet(&self) -> bool {
        matches!(self.cfg.media, Media::Cdrom(_))
    }

    /// The disk's size in 512-byte sectors (0 for a CD-ROM: ATA data
    /// commands do not reach it).
    pub fn sectors(&self) -> u64 {
        match &self.cfg.media {
            Media::Disk(d) => d.virtual_size() / SECTOR,
            Media::Cdrom(_) => 0,
        }
    }

    pub fn disk(&self) -> Option<&Arc<dyn DiskImage>> {
        match &self.cfg.media {
            Media::Disk(d) => Some(d),
            Media::Cdrom(d) => d.as_ref(),
        }
    }

    pub fn read_only(&self) -> bool {
        self.cfg.read_only || self.is_packet() || self.disk().is_some_and(|d| d.is_read_only())
    }

    /// SET FEATURES: write cache on/off and the transfer mode; anything
    /// else is accepted and ignored, as drives do for unknown subcommands
    /// that need no answer, except what the standard says to abort.
    pub fn set_features(&mut self, feature: u8, count: u8) -> bool {
        match feature {
            0x02 => self.write_cache = true,
            0x82 => self.write_cache = false,
            0x03 => match count >> 3 {
                // PIO default/flow control modes.
                0 | 1 => {}
                4 => self.dma_mode = (1 << (count & 7), 0),
                8 => self.dma_mode = (0, 1 << (count & 7)),
                _ => return false,
            },
            // Read look-ahead, reverting to defaults, 8-bit PIO off.
            0x55 | 0xaa | 0x66 | 0xcc | 0x81 => {}
            _ => return false,
        }
        true
    }

    /// IDENTIFY DEVICE or IDENTIFY PACKET DEVICE, as 512 bytes.
    pub fn identify(&self) -> [u8; 512] {
        let mut w = [0u16; 256];
        let model = if self.is_packet() {
            "QEMU DVD-ROM"
        } else {
            "QEMU HARDDISK"
        };
        put_string(&mut w[10..20], &self.cfg.serial);
        put_string(&mut w[23..27], "2.5+");
        put_string(&mut w[27..47], model);
        if self.is_packet() {
            // ATAPI, CD-ROM, removable, DRQ within 50 us, 12-byte packets.
            w[0] = 0x85c0;
            w[49] = 1 << 9;
            w[53] = 0x0002;
            w[64] = 0x0003;
            w[65..69].fill(120);
            w[71] = 30;
            w[72] = 30;
            w[80] = 0x001e;
            w[82] = (1 << 14) | (1 << 4);
            w[85] = (1 << 14) | (1 << 4);
        } else {
            let total = self.sectors();
            let cyls = (total / (16 * 63)).clamp(1, 16383) as u16;
            w[0] = 0x0040;
            (w[1], w[3], w[6]) = (cyls, 16, 63);
            w[47] = 0x8000 | MAX_MULTIPLE as u16;
            // LBA and DMA.
            w[49] = (1 << 9) | (1 << 8);
            w[53] = 0x0007;
            (w[54], w[55], w[56]) = (cyls, 16, 63);
            let chs = u32::from(cyls) * 16 * 63;
            (w[57], w[58]) = (chs as u16, (chs >> 16) as u16);
            if self.multiple != 0 {
                w[59] = 0x100 | self.multiple as u16;
            }
            let lba28 = total.min(0x0fff_ffff) as u32;
            (w[60], w[61]) = (lba28 as u16, (lba28 >> 16) as u16);
            w[63] = 0x07 | u16::from(self.dma_mode.0) << 8;
            w[64] = 0x0003;
            w[65..69].fill(120);
            w[80] = 0x00f0;
            w[81] = 0x0016;
            w[82] = (1 << 14) | (1 << 5);
            // FLUSH CACHE EXT, FLUSH CACHE, LBA48.
            w[83] = (1 << 14) | (1 << 13) | (1 << 12) | (1 << 10);
            w[84] = 1 << 14;
            w[85] = (1 << 14) | (u16::from(self.write_cache) << 5);
            w[86] = (1 << 13) | (1 << 12) | (1 << 10);
            w[87] = 1 << 14;
            w[88] = 0x3f | u16::from(self.dma_mode.1) << 8;
            // An 80-wire cable, so drivers may pick the faster UDMA modes.
            w[93] = 1 << 14 | 1 << 13 | 1;
            for (i, word) in w[100..104].iter_mut().enumerate() {
                *word = (total >> (16 * i)) as u16;
            }
        }
        let mut out = [0u8; 512];
        for (i, v) in w.iter().enumerate() {
            out[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

/// ATA strings: space-padded, two characters per word, first in the
/// high byte.
fn put_string(words: &mut [u16], s: &str) {
    let mut b = vec![b' '; words.len() * 2];
    for (d, c) in b.iter_mut().zip(s.bytes()) {
        *d = c;
    }
    for (w, pair) in words.iter_mut().zip(b.chunks(2)) {
        *w = u16::from(pair[0]) << 8 | u16::from(pair[1]);
    }
}
