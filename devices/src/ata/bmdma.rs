//! Bus-master IDE DMA (SFF-8038i): the command, status and PRD table
//! registers of one channel, and a transfer through the Physical Region
//! Descriptor table in guest RAM. Every PRD is read and checked against
//! guest RAM before any data moves, so a table or region outside RAM
//! fails the command with nothing written; a table shorter than the
//! transfer fails it too. Owns the DMA mechanics; when a job runs is the
//! channel's decision.

use casemate_disk::{DiskError, DiskImage};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::channel::DmaJob;
use super::unit::SECTOR;

/// Command register: start/stop, and direction (set: the device reads,
/// the bus master writes memory).
pub const CMD_START: u8 = 0x01;
pub const CMD_TO_MEMORY: u8 = 0x08;
/// Status register bits.
pub const ST_ACTIVE: u8 = 0x01;
pub const ST_ERROR: u8 = 0x02;
pub const ST_INTR: u8 = 0x04;
/// Drive 0/1 DMA capable: scratch bits firmware sets.
const ST_CAPABLE: u8 = 0x60;
/// A PRD table lies within one 64 KiB region: at most 8192 entries.
const MAX_PRDS: usize = 8192;

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum DmaError {
    #[error("PRD table at {0:#x} is outside guest RAM")]
    TableOutside(u64),
    #[error("PRD region {addr:#x}+{len:#x} is outside guest RAM")]
    RegionOutside { addr: u64, len: u64 },
    #[error("PRD table describes {have} bytes for a {want}-byte transfer")]
    Short { have: u64, want: u64 },
    #[error("the bus master's direction does not match the command")]
    Direction,
    #[error("disk I/O")]
    Disk(#[from] DiskError),
    #[error("guest memory access")]
    Memory,
    #[error("disk I/O straight to guest RAM")]
    Direct(#[source] std::io::Error),
}

/// One channel's registers.
#[derive(Debug, Clone, Default)]
pub struct BusMaster {
    pub cmd: u8,
    pub status: u8,
    pub prd: u32,
}

impl BusMaster {
    pub fn started(&self) -> bool {
        self.cmd & CMD_START != 0
    }

    fn bytes(&self) -> [u8; 8] {
        let p = self.prd.to_le_bytes();
        [self.cmd, 0, self.status, 0, p[0], p[1], p[2], p[3]]
    }

    pub fn read(&self, off: u64, data: &mut [u8]) {
        let b = self.bytes();
        for (i, d) in data.iter_mut().enumerate() {
            *d = b.get(off as usize + i).copied().unwrap_or(0xff);
        }
    }

    /// Returns true when the write set the start bit.
    pub fn write(&mut self, off: u64, data: &[u8]) -> bool {
        let mut started = false;
        for (i, &v) in data.iter().enumerate() {
            match off + i as u64 {
                0 => {
                    let was = self.cmd;
                    self.cmd = v & (CMD_START | CMD_TO_MEMORY);
                    if v & CMD_START != 0 && was & CMD_START == 0 {
                        self.status |= ST_ACTIVE;
                        started = true;
                    } else if v & CMD_START == 0 {
                        self.status &= !ST_ACTIVE;
                    }
                }
                2 => {
                    self.status &= !(v & (ST_ERROR | ST_INTR));
                    self.status = (self.status & !ST_CAPABLE) | (v & ST_CAPABLE);
                }
                o @ 4..=7 => {
                    let mut p = self.prd.to_le_bytes();
                    p[o as usize - 4] = v;
                    self.prd = u32::from_le_bytes(p) & !3;
                }
                _ => {}
            }
        }
        started
    }
}

/// The regions of the PRD table at `bm.prd` covering `want` bytes.
fn regions(mem: &GuestMemoryMmap, table: u32, want: u64) -> Result<Vec<(u64, u64)>, DmaError> {
    let mut out = Vec::new();
    let mut have = 0u64;
    for i in 0..MAX_PRDS {
        let at = u64::from(table) + 8 * i as u64;
        let mut e = [0u8; 8];
        mem.read_slice(&mut e, GuestAddress(at))
            .map_err(|_| DmaError::TableOutside(at))?;
        let addr = u64::from(u32::from_le_bytes([e[0], e[1], e[2], e[3]]) & !1);
        let len = match u16::from_le_bytes([e[4], e[5]]) & !1 {
            0 => 0x1_0000,
            n => u64::from(n),
        };
        let len = len.min(want - have);
        if !GuestMemoryBackend::check_range(mem, GuestAddress(addr), len as usize) {
            return Err(DmaError::RegionOutside { addr, len });
        }
        out.push((addr, len));
        have += len;
        if have == want || e[7] & 0x80 != 0 {
            break;
        }
    }
    if have < want {
        return Err(DmaError::Short { have, want });
    }
    Ok(out)
}

/// Move `job` between `disk` and the regions `bm` describes.
pub fn transfer(
    mem: &GuestMemoryMmap,
    bm: &BusMaster,
    disk: &dyn DiskImage,
    job: DmaJob,
) -> Result<(), DmaError> {
    if (bm.cmd & CMD_TO_MEMORY != 0) == job.write {
        return Err(DmaError::Direction);
    }
    let want = u64::from(job.sectors) * SECTOR;
    let mut off = job.lba * SECTOR;
    let regions = regions(mem, bm.prd, want)?;
    if let Some(r) = super::direct::transfer(disk, mem, &regions, off, job.write) {
        return r.map_err(DmaError::Direct);
    }
    let mut buf = Vec::new();
    for (addr, len) in regions {
        buf.resize(len as usize, 0);
        if job.write {
            mem.read_slice(&mut buf, GuestAddress(addr))
                .map_err(|_| DmaError::Memory)?;
            disk.write_at(&buf, off)?;
        } else {
            disk.read_at(&mut buf, off)?;
            mem.write_slice(&buf, GuestAddress(addr))
                .map_err(|_| DmaError::Memory)?;
        }
        off += len;
    }
    Ok(())
}
