//! virtio-blk (device id 2) on either transport: feature negotiation, the
//! configuration fields the probes report, and requests built as one
//! descriptor chain [header (device-readable), data..., status byte
//! (device-writable)]. Per-request header and status live at slots indexed
//! by the chain's head descriptor, which is unique while in flight.

use super::queue::{Buf, Completion, Queue, QMAX};
use super::{Dma, Transport, F_INDIRECT_DESC, STATUS_NEEDS_RESET};
use crate::io::rdtsc;
use crate::tsc;

pub const SECTOR: u64 = 512;

pub const F_SIZE_MAX: u64 = 1 << 1;
pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_GEOMETRY: u64 = 1 << 4;
pub const F_RO: u64 = 1 << 5;
pub const F_BLK_SIZE: u64 = 1 << 6;
pub const F_FLUSH: u64 = 1 << 9;
pub const F_TOPOLOGY: u64 = 1 << 10;
pub const F_MQ: u64 = 1 << 12;
pub const F_DISCARD: u64 = 1 << 13;
pub const F_WRITE_ZEROES: u64 = 1 << 14;

/// Named in the report when offered.
pub const NAMED: [(u64, &str); 7] = [
    (F_RO, "ro"),
    (F_FLUSH, "flush"),
    (F_DISCARD, "discard"),
    (F_WRITE_ZEROES, "write_zeroes"),
    (F_SEG_MAX, "seg_max"),
    (F_BLK_SIZE, "blk_size"),
    (F_MQ, "mq"),
];

/// One queue is used, so MQ is never accepted; neither is EVENT_IDX
/// (notification suppression by flag is enough for polling).
const WANTED: u64 = F_SIZE_MAX
    | F_SEG_MAX
    | F_GEOMETRY
    | F_RO
    | F_BLK_SIZE
    | F_FLUSH
    | F_TOPOLOGY
    | F_DISCARD
    | F_WRITE_ZEROES
    | F_INDIRECT_DESC;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;
/// Written into the status byte before submission: a completion that
/// leaves it there did not write a status.
pub const S_UNTOUCHED: u8 = 0xff;

/// Data buffers for all block probes (bench: qd * bs of it).
pub static DATA: Dma<{ 4 << 20 }> = Dma::new();

/// Request headers (16 bytes each) and status bytes, indexed by head.
static META: Dma<{ 16 * QMAX + QMAX + 16 * QMAX }> = Dma::new();
const STATUS_OFF: u64 = 16 * QMAX as u64;
/// Discard / write-zeroes segments (16 bytes), indexed by head.
const SEG_OFF: u64 = STATUS_OFF + QMAX as u64;

pub struct Blk {
    pub t: Transport,
    pub q: Queue,
    pub offered: u64,
    pub features: u64,
    pub capacity: u64,
    pub seg_max: u32,
    pub max_discard_sectors: u32,
    pub max_write_zeroes_sectors: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    Done(u8),
    /// The device completed the chain without writing the status byte.
    NoStatus,
    Timeout,
}

impl Blk {
    /// `no_indirect` keeps INDIRECT_DESC out of the negotiation (blk-evil
    /// then builds its over-long chain from ring descriptors).
    pub fn open(t: Transport, qsize: u16, no_indirect: bool) -> Result<Blk, &'static str> {
        let wanted = if no_indirect { WANTED & !F_INDIRECT_DESC } else { WANTED };
        let (offered, features) = t.start(wanted)?;
        let q = Queue::new(&t, 0, qsize)?;
        t.driver_ok();
        let cfg = |off| t.config_read32(off);
        let capacity = cfg(0) as u64 | (cfg(4) as u64) << 32;
        let seg_max = if features & F_SEG_MAX != 0 { cfg(12) } else { 0 };
        let max_discard_sectors = if features & F_DISCARD != 0 { cfg(36) } else { 0 };
        let max_write_zeroes_sectors = if features & F_WRITE_ZEROES != 0 { cfg(48) } else { 0 };
        Ok(Blk { t, q, offered, features, capacity, seg_max, max_discard_sectors, max_write_zeroes_sectors })
    }

    /// Resets and re-initialises the device on the same transport (after
    /// NEEDS_RESET); in-flight requests are dropped.
    pub fn reopen(self) -> Result<Blk, &'static str> {
        let size = self.q.size;
        let no_indirect = self.features & F_INDIRECT_DESC == 0;
        Blk::open(self.t, size, no_indirect)
    }

    pub fn needs_reset(&self) -> bool {
        self.t.status() & STATUS_NEEDS_RESET != 0
    }

    pub fn has(&self, f: u64) -> bool {
        self.features & f != 0
    }

    pub fn header_addr(head: u16) -> u64 {
        META.addr() + 16 * head as u64
    }

    pub fn status_addr(head: u16) -> u64 {
        META.addr() + STATUS_OFF + head as u64
    }

    pub fn seg_addr(head: u16) -> u64 {
        META.addr() + SEG_OFF + 16 * head as u64
    }

    /// Fills the header and status byte for the chain that will get `head`.
    pub fn prepare(head: u16, typ: u32, sector: u64) {
        let h = Self::header_addr(head);
        // SAFETY: h..h+16 and the status byte are this head's slots in META,
        // not in use by the device (the head is free until submitted).
        unsafe {
            core::ptr::write_volatile(h as *mut u32, typ);
            core::ptr::write_volatile((h + 4) as *mut u32, 0);
            core::ptr::write_volatile((h + 8) as *mut u64, sector);
            core::ptr::write_volatile(Self::status_addr(head) as *mut u8, S_UNTOUCHED);
        }
    }

    pub fn status_of(head: u16) -> u8 {
        // SAFETY: the head's status slot in META; volatile: the device wrote it.
        unsafe { core::ptr::read_volatile(Self::status_addr(head) as *const u8) }
    }

    /// Queues [header, data..., status] (not yet kicked). Data buffers are
    /// device-writable for reads, readable otherwise.
    pub fn submit(&mut self, typ: u32, sector: u64, data: &[Buf]) -> Option<u16> {
        let head = self.q.peek_head()?;
        let mut bufs = [Buf { addr: 0, len: 0, write: false }; 18];
        if data.len() + 2 > bufs.len() || data.len() + 2 > self.q.free_descs() {
            return None;
        }
        Self::prepare(head, typ, sector);
        bufs[0] = Buf { addr: Self::header_addr(head), len: 16, write: false };
        bufs[1..=data.len()].copy_from_slice(data);
        bufs[data.len() + 1] = Buf { addr: Self::status_addr(head), len: 1, write: true };
        let got = self.q.submit(&bufs[..data.len() + 2])?;
        debug_assert!(got == head);
        Some(head)
    }

    /// Discard / write-zeroes: one 16-byte segment {sector, num, flags}.
    pub fn submit_range(&mut self, typ: u32, sector: u64, sectors: u32, unmap: bool) -> Option<u16> {
        let head = self.q.peek_head()?;
        let s = Self::seg_addr(head);
        // SAFETY: this head's segment slot in META, not in use by the device.
        unsafe {
            core::ptr::write_volatile(s as *mut u64, sector);
            core::ptr::write_volatile((s + 8) as *mut u32, sectors);
            core::ptr::write_volatile((s + 12) as *mut u32, unmap as u32);
        }
        self.submit(typ, 0, &[Buf { addr: s, len: 16, write: false }])
    }

    /// Kicks, then polls until `head` completes or `timeout_us` passes.
    /// Other completions seen meanwhile are dropped (callers wait on one
    /// request at a time outside the benchmark).
    pub fn wait(&mut self, head: u16, timeout_us: u64) -> Wait {
        self.q.kick();
        let end = rdtsc() + tsc::us_to_ticks(timeout_us);
        loop {
            if let Some(Completion { head: h, known: true, .. }) = self.q.poll() {
                if h == head {
                    return match Self::status_of(head) {
                        S_UNTOUCHED => Wait::NoStatus,
                        s => Wait::Done(s),
                    };
                }
            }
            if rdtsc() > end {
                return Wait::Timeout;
            }
            core::hint::spin_loop();
        }
    }

    /// One request, start to finish: Ok(status) or Err on timeout.
    pub fn rw(&mut self, typ: u32, sector: u64, data: &[Buf]) -> Result<u8, &'static str> {
        let head = self.submit(typ, sector, data).ok_or("blk-queue-full")?;
        match self.wait(head, 5_000_000) {
            Wait::Done(s) => Ok(s),
            Wait::NoStatus => Err("blk-no-status"),
            Wait::Timeout => Err("blk-timeout"),
        }
    }
}
