//! One split virtqueue (virtio 1.x, 2.6): descriptor table, available and
//! used rings in a static page-aligned buffer. The driver side only: it
//! hands out descriptor chains, publishes them, notifies once per batch
//! (skipped while the device sets VIRTQ_USED_F_NO_NOTIFY) and polls the
//! used ring. Malformed chains for blk-evil go through `submit_raw`. With
//! EVENT_IDX negotiated it notifies only when the new index passes the
//! device's `avail_event`, and asks for an interrupt at the next
//! completion through `used_event` (as Linux does; the probe polls).

use core::sync::atomic::{fence, Ordering};

use super::{Dma, Notify, Transport};
use crate::io::{mmio_write16, mmio_write32};

pub const QMAX: usize = 256;

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;
pub const DESC_F_INDIRECT: u16 = 4;
const USED_F_NO_NOTIFY: u16 = 1;

const DESC_OFF: u64 = 0;
const AVAIL_OFF: u64 = 16 * QMAX as u64;
const USED_OFF: u64 = AVAIL_OFF + 4096;

/// Bytes of one queue's rings (descriptors, avail, used).
pub const RING_BYTES: usize = 16 * QMAX + 4096 + 8 + 8 * QMAX;
/// Ring memory of a queue.
pub type RingMem = Dma<RING_BYTES>;

static RING: RingMem = Dma::new();

/// One buffer of a request: `write` means the device writes it.
#[derive(Clone, Copy)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

/// A descriptor as blk-evil wants it: explicit flags and, for `next`, an
/// index into the same slice (so a chain can point backwards).
#[derive(Clone, Copy)]
pub struct RawDesc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: Option<usize>,
}

pub struct Completion {
    pub head: u16,
    /// Bytes the device says it wrote (probe=rng reports it).
    pub len: u32,
    /// False when the head was not in flight (a device completing a chain
    /// twice, or one the driver gave up on).
    pub known: bool,
}

pub struct Queue {
    pub size: u16,
    base: u64,
    notify: Notify,
    free: [u16; QMAX],
    nfree: usize,
    /// Driver-private chain links: freeing follows these, never the
    /// device-visible `next` fields (which blk-evil makes loop).
    link: [u16; QMAX],
    chain_len: [u16; QMAX],
    avail_idx: u16,
    used_idx: u16,
    /// Avail entries written since the last `kick`.
    pending: u16,
    pub notifies: u64,
    event_idx: bool,
}

fn w16(a: u64, v: u16) {
    // SAFETY: `a` is inside RING (callers compute it from base + offsets
    // within the ring layout); volatile because the device reads it.
    unsafe { core::ptr::write_volatile(a as *mut u16, v) }
}

fn r16(a: u64) -> u16 {
    // SAFETY: as for `w16`; volatile because the device writes it.
    unsafe { core::ptr::read_volatile(a as *const u16) }
}

fn r32(a: u64) -> u32 {
    // SAFETY: as for `r16`.
    unsafe { core::ptr::read_volatile(a as *const u32) }
}

fn write_desc(a: u64, addr: u64, len: u32, flags: u16, next: u16) {
    // SAFETY: `a` is a 16-byte descriptor slot inside RING.
    unsafe {
        core::ptr::write_volatile(a as *mut u64, addr);
        core::ptr::write_volatile((a + 8) as *mut u32, len);
        core::ptr::write_volatile((a + 12) as *mut u16, flags);
        core::ptr::write_volatile((a + 14) as *mut u16, next);
    }
}

impl Queue {
    /// Sets up queue `q` on `t` with min(device max, QMAX, `want`) entries
    /// (rounded down to a power of two, which split rings need on PCI).
    pub fn new(t: &Transport, q: u16, want: u16) -> Result<Queue, &'static str> {
        Queue::new_in(t, q, want, &RING)
    }

    /// As `new`, with the rings in `ring` (a device with several queues
    /// gives each its own).
    pub fn new_in(t: &Transport, q: u16, want: u16, ring: &'static RingMem) -> Result<Queue, &'static str> {
        let max = t.queue_max(q);
        if max == 0 {
            return Err("virtio-queue-absent");
        }
        let mut size = max.min(QMAX as u16).min(want.max(1));
        size = 1 << (15 - size.leading_zeros());
        let base = ring.addr();
        // SAFETY: `ring` is the probe's own buffer; the device is reset (it
        // does not touch the old rings any more) before a queue is set up.
        unsafe { core::ptr::write_bytes(base as *mut u8, 0, ring.len()) };
        let notify = t.setup_queue(q, size, base + DESC_OFF, base + AVAIL_OFF, base + USED_OFF);
        let mut free = [0u16; QMAX];
        for (i, f) in free.iter_mut().enumerate().take(size as usize) {
            // Pop order 0, 1, 2, ...: the stack holds them reversed.
            *f = size - 1 - i as u16;
        }
        Ok(Queue {
            size,
            base,
            notify,
            free,
            nfree: size as usize,
            link: [0; QMAX],
            chain_len: [0; QMAX],
            avail_idx: 0,
            used_idx: 0,
            pending: 0,
            notifies: 0,
            event_idx: super::event_idx_on(),
        })
    }

    pub fn free_descs(&self) -> usize {
        self.nfree
    }

    fn alloc(&mut self, n: usize) -> Option<[u16; QMAX]> {
        if n == 0 || n > self.nfree {
            return None;
        }
        let mut ids = [0u16; QMAX];
        for id in ids.iter_mut().take(n) {
            self.nfree -= 1;
            *id = self.free[self.nfree];
        }
        for i in 0..n - 1 {
            self.link[ids[i] as usize] = ids[i + 1];
        }
        self.chain_len[ids[0] as usize] = n as u16;
        Some(ids)
    }

    fn desc_addr(&self, i: u16) -> u64 {
        self.base + DESC_OFF + 16 * i as u64
    }

    fn push_avail(&mut self, head: u16) {
        let slot = self.avail_idx % self.size;
        w16(self.base + AVAIL_OFF + 4 + 2 * slot as u64, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.pending += 1;
    }

    /// Builds a well-formed chain and queues it (not yet visible to the
    /// device: call `kick`). Returns the head, which `peek_head` predicts so
    /// callers can place per-request memory (header, status) by head.
    pub fn submit(&mut self, bufs: &[Buf]) -> Option<u16> {
        let ids = self.alloc(bufs.len())?;
        for (i, b) in bufs.iter().enumerate() {
            let last = i + 1 == bufs.len();
            let flags = if b.write { DESC_F_WRITE } else { 0 } | if last { 0 } else { DESC_F_NEXT };
            let next = if last { 0 } else { ids[i + 1] };
            write_desc(self.desc_addr(ids[i]), b.addr, b.len, flags, next);
        }
        self.push_avail(ids[0]);
        Some(ids[0])
    }

    /// The head a chain of `n` would get from `submit`/`submit_raw`.
    pub fn peek_head(&self) -> Option<u16> {
        if self.nfree == 0 { None } else { Some(self.free[self.nfree - 1]) }
    }

    /// Queues descriptors exactly as given (flags, backwards `next`).
    pub fn submit_raw(&mut self, descs: &[RawDesc]) -> Option<u16> {
        let ids = self.alloc(descs.len())?;
        for (i, d) in descs.iter().enumerate() {
            let next = d.next.map_or(0, |j| ids[j]);
            let flags = d.flags | if d.next.is_some() { DESC_F_NEXT } else { 0 };
            write_desc(self.desc_addr(ids[i]), d.addr, d.len, flags, next);
        }
        self.push_avail(ids[0]);
        Some(ids[0])
    }

    /// Publishes queued chains and notifies the device, unless it asked not
    /// to be (it is still processing and will see the new index itself).
    pub fn kick(&mut self) {
        if self.pending == 0 {
            return;
        }
        // Descriptors and ring entries before the index the device reads.
        fence(Ordering::Release);
        w16(self.base + AVAIL_OFF + 2, self.avail_idx);
        let old = self.avail_idx.wrapping_sub(self.pending);
        self.pending = 0;
        // The index store must be visible before reading the device's flag
        // or event (store-load order needs a full fence on x86), else both
        // sides can miss each other.
        fence(Ordering::SeqCst);
        let wanted = if self.event_idx {
            // vring_need_event: did the index pass `avail_event`?
            let event = r16(self.base + USED_OFF + 4 + 8 * self.size as u64);
            self.avail_idx.wrapping_sub(event).wrapping_sub(1) < self.avail_idx.wrapping_sub(old)
        } else {
            r16(self.base + USED_OFF) & USED_F_NO_NOTIFY == 0
        };
        if wanted {
            self.notify_now();
        }
    }

    /// Unconditional notification (one store; an ioeventfd on Casemate).
    pub fn notify_now(&mut self) {
        self.notifies += 1;
        match self.notify.width {
            2 => mmio_write16(self.notify.addr, self.notify.value),
            _ => mmio_write32(self.notify.addr, self.notify.value as u32),
        }
    }

    /// Takes one used element if there is one, freeing its chain.
    pub fn poll(&mut self) -> Option<Completion> {
        if r16(self.base + USED_OFF + 2) == self.used_idx {
            return None;
        }
        // The index is read before the element it covers.
        fence(Ordering::Acquire);
        let slot = self.used_idx % self.size;
        let e = self.base + USED_OFF + 4 + 8 * slot as u64;
        let id = r32(e);
        let len = r32(e + 4);
        self.used_idx = self.used_idx.wrapping_add(1);
        if self.event_idx {
            w16(self.base + AVAIL_OFF + 4 + 2 * self.size as u64, self.used_idx);
        }
        let known = (id as usize) < self.size as usize && self.chain_len[id as usize] != 0;
        if known {
            self.release(id as u16);
        }
        Some(Completion { head: id as u16, len, known })
    }

    /// Gives a chain's descriptors back (after completion).
    fn release(&mut self, head: u16) {
        let n = core::mem::replace(&mut self.chain_len[head as usize], 0);
        let mut i = head;
        for _ in 0..n {
            self.free[self.nfree] = i;
            self.nfree += 1;
            i = self.link[i as usize];
        }
    }
}
