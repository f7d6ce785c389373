//! ATAPI packet commands for a CD-ROM unit: the MMC/SPC subset Linux's
//! sr driver and installers use (TEST UNIT READY, REQUEST SENSE, INQUIRY,
//! START STOP UNIT, PREVENT ALLOW, READ CAPACITY, READ(10)/(12), SEEK,
//! READ TOC, GET CONFIGURATION, GET EVENT STATUS NOTIFICATION, MODE
//! SENSE(10), READ DISC INFORMATION, MECHANISM STATUS, SET CD SPEED),
//! with 2048-byte blocks and sense data. Owns the meaning of a 12-byte
//! packet; moving the reply (PIO byte counts, AHCI PRDTs) is the
//! transport's.

use super::unit::{Media, Unit};

pub const BLOCK: u64 = 2048;

/// Sense keys and additional sense codes used here.
pub const NOT_READY: u8 = 0x02;
pub const ILLEGAL_REQUEST: u8 = 0x05;
pub const ASC_NO_MEDIUM: u8 = 0x3a;
pub const ASC_LBA_OUT_OF_RANGE: u8 = 0x21;
pub const ASC_INVALID_OPCODE: u8 = 0x20;
pub const ASC_INVALID_FIELD: u8 = 0x24;

/// Fixed-format sense: key, additional sense code and qualifier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

impl Sense {
    const fn new(key: u8, asc: u8) -> Self {
        Self { key, asc, ascq: 0 }
    }
}

/// What a packet asks the transport to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Good status, no data.
    Done,
    /// Good status after these bytes go to the host.
    Data(Vec<u8>),
    /// Good status after `blocks` 2048-byte blocks from `lba` go to the host.
    Read { lba: u64, blocks: u32 },
    /// CHECK CONDITION; the sense is kept for REQUEST SENSE.
    Fail(Sense),
}

fn be16(b: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([b[0], b[1]]))
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The disc's size in 2048-byte blocks, or the NOT READY sense.
fn disc_blocks(u: &Unit) -> Result<u64, Sense> {
    match &u.cfg.media {
        Media::Cdrom(Some(d)) => Ok(d.virtual_size() / BLOCK),
        _ => Err(Sense::new(NOT_READY, ASC_NO_MEDIUM)),
    }
}

/// Run packet `p` on `u`.
pub fn execute(u: &mut Unit, p: &[u8; 12]) -> Reply {
    let r = run(u, p);
    match &r {
        Reply::Fail(s) => u.sense = *s,
        // REQUEST SENSE itself reported and cleared it.
        _ if p[0] == 0x03 => {}
        _ => u.sense = Sense::default(),
    }
    r
}

fn trim(mut v: Vec<u8>, alloc: usize) -> Reply {
    v.truncate(alloc);
    Reply::Data(v)
}

fn run(u: &mut Unit, p: &[u8; 12]) -> Reply {
    let fail = |key, asc| Reply::Fail(Sense::new(key, asc));
    let blocks = disc_blocks(u);
    match p[0] {
        0x00 => match blocks {
            Ok(_) => Reply::Done,
            Err(s) => Reply::Fail(s),
        },
        0x03 => {
            let mut v = vec![0u8; 18];
            v[0] = 0x70;
            v[2] = u.sense.key;
            v[7] = 10;
            v[12] = u.sense.asc;
            v[13] = u.sense.ascq;
            u.sense = Sense::default();
            trim(v, usize::from(p[4]))
        }
        0x12 => {
            let mut v = vec![0u8; 36];
            v[0] = 0x05;
            v[1] = 0x80;
            v[2] = 0x05;
            v[3] = 0x32;
            v[4] = 31;
            v[8..16].copy_from_slice(b"QEMU    ");
            v[16..32].copy_from_slice(b"QEMU DVD-ROM    ");
            v[32..36].copy_from_slice(b"2.5+");
            trim(v, be16(&p[3..5]))
        }
        0x1b => {
            // LoEj with Start clear: eject the disc.
            if p[4] & 0x03 == 0x02 {
                u.cfg.media = Media::Cdrom(None);
            }
            Reply::Done
        }
        0x1e | 0xbb => Reply::Done,
        0x25 => match blocks {
            Ok(n) => {
                let last = n.saturating_sub(1).min(u64::from(u32::MAX)) as u32;
                let mut v = last.to_be_bytes().to_vec();
                v.extend_from_slice(&(BLOCK as u32).to_be_bytes());
                Reply::Data(v)
            }
            Err(s) => Reply::Fail(s),
        },
        op @ (0x28 | 0xa8 | 0x2b) => {
            let n = match blocks {
                Ok(n) => n,
                Err(s) => return Reply::Fail(s),
            };
            let lba = u64::from(be32(&p[2..6]));
            let count = match op {
                0x28 => be16(&p[7..9]) as u32,
                0xa8 => be32(&p[6..10]),
                _ => 0,
            };
            if lba + u64::from(count) > n || (op == 0x2b && lba >= n) {
                return fail(ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE);
            }
            if count == 0 {
                Reply::Done
            } else {
                Reply::Read { lba, blocks: count }
            }
        }
        0x43 => match blocks {
            Ok(n) => read_toc(p, n),
            Err(s) => Reply::Fail(s),
        },
        0x46 => {
            let profile: u16 = match blocks {
                Ok(n) if n * BLOCK > 700 << 20 => 0x0010,
                Ok(_) => 0x0008,
                Err(_) => 0,
            };
            let mut v = vec![0u8; 8];
            v[6..8].copy_from_slice(&profile.to_be_bytes());
            // Feature 0, the profile list: DVD-ROM and CD-ROM.
            v.extend_from_slice(&[0, 0, 0x03, 8]);
            for pr in [0x0010u16, 0x0008] {
                v.extend_from_slice(&pr.to_be_bytes());
                v.extend_from_slice(&[u8::from(pr == profile), 0]);
            }
            // Feature 1, core: ATAPI interface.
            v.extend_from_slice(&[0, 1, 0x0b, 8, 0, 0, 0, 2, 1, 0, 0, 0]);
            let len = (v.len() - 4) as u32;
            v[0..4].copy_from_slice(&len.to_be_bytes());
            trim(v, be16(&p[7..9]))
        }
        0x4a => {
            if p[1] & 1 == 0 {
                // Only polled operation exists.
                return fail(ILLEGAL_REQUEST, ASC_INVALID_FIELD);
            }
            let v = if p[4] & 0x10 != 0 {
                vec![0, 6, 0x04, 0x10, 0, u8::from(blocks.is_ok()) << 1, 0, 0]
            } else {
                vec![0, 2, 0x80, 0x10]
            };
            trim(v, be16(&p[7..9]))
        }
        0x5a => {
            let page = p[2] & 0x3f;
            let mut v = vec![0u8; 8];
            if matches!(page, 0x01 | 0x3f) {
                v.extend_from_slice(&[0x01, 0x06, 0, 5, 0, 0, 0, 0]);
            }
            if matches!(page, 0x2a | 0x3f) {
                let mut c = vec![0u8; 22];
                c[0] = 0x2a;
                c[1] = 20;
                // Reads CD-R/RW and DVD-ROM; ejects; tray loader.
                c[2] = 0x3b;
                c[4] = 0x71;
                c[6] = 0x2d | 0x08;
                c[8..10].copy_from_slice(&(706u16).to_be_bytes());
                c[10..12].copy_from_slice(&2u16.to_be_bytes());
                c[12..14].copy_from_slice(&512u16.to_be_bytes());
                c[14..16].copy_from_slice(&(706u16).to_be_bytes());
                v.extend_from_slice(&c);
            }
            if v.len() == 8 {
                return fail(ILLEGAL_REQUEST, ASC_INVALID_FIELD);
            }
            let len = (v.len() - 2) as u16;
            v[0..2].copy_from_slice(&len.to_be_bytes());
            trim(v, be16(&p[7..9]))
        }
        0x51 => match blocks {
            Ok(_) => {
                let mut v = vec![0u8; 34];
                v[1] = 32;
                v[2] = 0x0e;
                v[3..7].fill(1);
                trim(v, be16(&p[7..9]))
            }
            Err(s) => Reply::Fail(s),
        },
        0xbd => trim(vec![0u8; 8], be16(&p[8..10])),
        _ => fail(ILLEGAL_REQUEST, ASC_INVALID_OPCODE),
    }
}

/// READ TOC formats 0 (tracks) and 1 (sessions), LBA or MSF addresses.
fn read_toc(p: &[u8; 12], blocks: u64) -> Reply {
    let msf = p[1] & 0x02 != 0;
    let format = match p[2] & 0x0f {
        0 => p[9] >> 6,
        f => f,
    };
    let addr = |lba: u64| -> [u8; 4] {
        if msf {
            let x = lba + 150;
            [0, (x / 4500) as u8, (x / 75 % 60) as u8, (x % 75) as u8]
        } else {
            (lba.min(u64::from(u32::MAX)) as u32).to_be_bytes()
        }
    };
    let mut v = vec![0u8, 0, 1, 1];
    match format {
        0 => {
            for (track, lba) in [(1u8, 0u64), (0xaa, blocks)] {
                if track != 0xaa && p[6] > 1 {
                    continue;
                }
                v.extend_from_slice(&[0, 0x14, track, 0]);
                v.extend_from_slice(&addr(lba));
            }
        }
        1 => {
            v.extend_from_slice(&[0, 0x14, 1, 0]);
            v.extend_from_slice(&addr(0));
        }
        _ => return Reply::Fail(Sense::new(ILLEGAL_REQUEST, ASC_INVALID_FIELD)),
    }
    let len = (v.len() - 2) as u16;
    v[0..2].copy_from_slice(&len.to_be_bytes());
    trim(v, be16(&p[7..9]))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ata::testing::mem_disk;
    use crate::ata::unit::UnitConfig;

    fn cd(blocks: Option<u64>) -> Unit {
        Unit::new(UnitConfig {
            media: Media::Cdrom(blocks.map(|b| mem_disk(b * BLOCK) as Arc<_>)),
            serial: "cd".into(),
            read_only: true,
        })
    }

    fn pkt(b: &[u8]) -> [u8; 12] {
        let mut p = [0u8; 12];
        p[..b.len()].copy_from_slice(b);
        p
    }

    #[test]
    fn no_medium_is_not_ready_and_request_sense_reports_it_once() {
        let mut u = cd(None);
        assert_eq!(
            execute(&mut u, &pkt(&[0x00])),
            Reply::Fail(Sense::new(NOT_READY, ASC_NO_MEDIUM))
        );
        let Reply::Data(s) = execute(&mut u, &pkt(&[0x03, 0, 0, 0, 18])) else {
            panic!("sense data")
        };
        assert_eq!((s[2], s[12]), (NOT_READY, ASC_NO_MEDIUM));
        let Reply::Data(s) = execute(&mut u, &pkt(&[0x03, 0, 0, 0, 18])) else {
            panic!("sense data")
        };
        assert_eq!((s[2], s[12]), (0, 0), "cleared after it was read");
        assert!(matches!(
            execute(&mut u, &pkt(&[0x28, 0, 0, 0, 0, 0, 0, 0, 1])),
            Reply::Fail(Sense { key: NOT_READY, .. })
        ));
    }

    #[test]
    fn reads_are_bounded_by_the_disc_and_capacity_names_the_last_block() {
        let mut u = cd(Some(100));
        assert_eq!(
            execute(&mut u, &pkt(&[0x25])),
            Reply::Data(vec![0, 0, 0, 99, 0, 0, 8, 0])
        );
        assert_eq!(
            execute(&mut u, &pkt(&[0x28, 0, 0, 0, 0, 90, 0, 0, 10])),
            Reply::Read {
                lba: 90,
                blocks: 10
            }
        );
        assert_eq!(
            execute(&mut u, &pkt(&[0x28, 0, 0, 0, 0, 91, 0, 0, 10])),
            Reply::Fail(Sense::new(ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE))
        );
        assert_eq!(
            execute(
                &mut u,
                &pkt(&[0xa8, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
            ),
            Reply::Fail(Sense::new(ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE)),
            "no overflow"
        );
        assert_eq!(
            execute(&mut u, &pkt(&[0xee])),
            Reply::Fail(Sense::new(ILLEGAL_REQUEST, ASC_INVALID_OPCODE))
        );
        let Reply::Data(toc) = execute(&mut u, &pkt(&[0x43, 0, 0, 0, 0, 0, 0, 0, 100])) else {
            panic!("toc")
        };
        assert_eq!(toc.len(), 20);
        assert_eq!(&toc[16..20], &100u32.to_be_bytes(), "lead-out at the end");
        assert_eq!(execute(&mut u, &pkt(&[0x1b, 0, 0, 0, 0x02])), Reply::Done);
        assert!(
            matches!(execute(&mut u, &pkt(&[0x00])), Reply::Fail(_)),
            "ejected"
        );
    }
}
