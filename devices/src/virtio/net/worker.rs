//! The virtio-net worker, on the device's `cm-netN` thread.
//!
//! TX: every chain the guest posts is written to the backend with one
//! writev straight from guest memory (vnet header and frame), then
//! returned. RX: frames are read from the backend only while the guest has
//! posted receive buffers, with one readv straight into them; when the
//! ring runs dry the worker stops watching the backend fd (the kernel's
//! tap queue holds or drops what arrives, the VMM buffers nothing) and
//! resumes on the guest's next RX notification. With MRG_RXBUF a frame
//! may fill several chains; their count goes into `num_buffers`.
//!
//! A malformed chain (wrong direction, outside guest RAM, a loop, too
//! short for the header) is returned with length 0 and logged, a few
//! times at most; the device goes on.

use std::io::ErrorKind;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use virtio_bindings::virtio_net as vn;
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::backend::{Iov, NetBackend};
use super::HDR_LEN;
use crate::virtio::{ReadyQueue, StartContext, VirtioIrq, Worker, WorkerError};

const RX: u32 = 0;
const TX: u32 = 1;
const BACKEND: u32 = 2;
/// The most iovecs one readv/writev takes (the kernel's IOV_MAX).
const IOV_MAX: usize = 1024;
/// Malformed-chain and backend messages logged per worker.
const MAX_LOGGED: u32 = 8;

/// Counters, for tests and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub bad_chains: u64,
    pub dropped: u64,
}

pub struct NetWorker {
    name: String,
    mem: GuestMemoryMmap,
    rx: ReadyQueue,
    tx: ReadyQueue,
    irq: Arc<dyn VirtioIrq>,
    backend: Arc<dyn NetBackend>,
    /// False for a multiqueue pair the driver has not enabled: its
    /// backend queue is detached and its receive ring left alone.
    enabled: bool,
    mrg: bool,
    /// Receive buffer space gathered per frame with MRG_RXBUF.
    rx_need: usize,
    /// Whether the host is watching the backend fd, and what it was asked.
    watching: bool,
    change: Option<bool>,
    iov: Vec<Iov>,
    /// The receive chains gathered for the next frame.
    chains: Vec<RxChain>,
    pub stats: Stats,
    logged: u32,
}

/// A receive chain popped for a frame: its head, its byte count and its
/// buffers (the first ones hold the header's `num_buffers`).
struct RxChain {
    head: u16,
    cap: u32,
    bufs: Vec<(GuestAddress, u32)>,
}

/// Why a chain was refused.
enum Bad {
    Direction,
    Memory,
    Loop,
    Short,
    TooManyPieces,
}

impl Bad {
    fn why(&self) -> &'static str {
        match self {
            Bad::Direction => "buffer in the wrong direction",
            Bad::Memory => "buffer outside guest memory",
            Bad::Loop => "descriptor chain loops or exceeds the queue size",
            Bad::Short => "chain too short for the 12-byte virtio-net header",
            Bad::TooManyPieces => "chain has more pieces than one readv/writev takes",
        }
    }
}

/// The chain's buffers as host iovecs appended to `iov`, each buffer's
/// guest range appended to `bufs`; returns the chain's byte count.
fn parse_chain(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    writable: bool,
    iov: &mut Vec<Iov>,
    bufs: &mut Vec<(GuestAddress, u32)>,
) -> Result<u32, Bad> {
    let mut total: u64 = 0;
    let mut last_has_next = false;
    for d in chain {
        last_has_next = d.has_next();
        if d.is_write_only() != writable {
            return Err(Bad::Direction);
        }
        for s in GuestMemoryBackend::get_slices(mem, d.addr(), d.len() as usize) {
            let s = s.map_err(|_| Bad::Memory)?;
            if iov.len() == IOV_MAX {
                return Err(Bad::TooManyPieces);
            }
            iov.push(Iov {
                base: s.ptr_guard_mut().as_ptr() as usize,
                len: s.len(),
            });
        }
        bufs.push((d.addr(), d.len()));
        total += u64::from(d.len());
    }
    // The iterator stops after queue-size descriptors: a chain that still
    // points onward is a loop.
    if last_has_next {
        return Err(Bad::Loop);
    }
    if total < HDR_LEN as u64 {
        return Err(Bad::Short);
    }
    Ok(u32::try_from(total).unwrap_or(u32::MAX))
}

/// What a queue pair's worker is given besides its two queues.
pub struct PairParts {
    pub name: String,
    pub mem: GuestMemoryMmap,
    pub irq: Arc<dyn VirtioIrq>,
    pub backend: Arc<dyn NetBackend>,
    pub acked: u64,
    pub mtu: Option<u16>,
}

impl NetWorker {
    /// The single-pair device: `ctx` holds exactly its receive and
    /// transmit queues.
    pub fn new(
        name: String,
        mut ctx: StartContext,
        backend: Arc<dyn NetBackend>,
        acked: u64,
        mtu: Option<u16>,
    ) -> Self {
        let tx = ctx.queues.remove(1);
        let rx = ctx.queues.remove(0);
        Self::pair(
            PairParts {
                name,
                mem: ctx.mem,
                irq: ctx.irq,
                backend,
                acked,
                mtu,
            },
            rx,
            tx,
        )
    }

    /// One queue pair (of several with multiqueue) on its own backend.
    pub fn pair(p: PairParts, rx: ReadyQueue, tx: ReadyQueue) -> Self {
        let PairParts {
            name,
            mem,
            irq,
            backend,
            acked,
            mtu,
        } = p;
        let has = |b: u32| acked & (1u64 << b) != 0;
        let tso = has(vn::VIRTIO_NET_F_GUEST_TSO4) || has(vn::VIRTIO_NET_F_GUEST_TSO6);
        Self {
            name,
            mem,
            rx,
            tx,
            irq,
            enabled: true,
            backend,
            mrg: has(vn::VIRTIO_NET_F_MRG_RXBUF),
            // A GSO frame is up to 64 KiB; otherwise an Ethernet frame
            // (header and VLAN tag: 18 bytes) of the MTU the device offers.
            rx_need: HDR_LEN
                + if tso {
                    65550
                } else {
                    18 + usize::from(mtu.unwrap_or(1500).max(1500))
                },
            watching: true,
            change: None,
            iov: Vec::new(),
            chains: Vec::new(),
            stats: Stats::default(),
            logged: 0,
        }
    }

    fn log(&mut self, what: std::fmt::Arguments<'_>) {
        if self.logged < MAX_LOGGED {
            self.logged += 1;
            log::warn!("{}: {what}", self.name);
        }
    }

    /// Enable or disable this pair (multiqueue VQ_PAIRS_SET): the
    /// backend queue is attached or detached, so the kernel steers no
    /// frames to a queue nobody reads, and receiving follows.
    pub fn set_enabled(&mut self, on: bool) -> std::io::Result<()> {
        if self.enabled == on {
            return Ok(());
        }
        self.backend.set_enabled(on)?;
        self.enabled = on;
        self.watch(on);
        Ok(())
    }

    /// Start disabled (a multiqueue pair past the first, until the
    /// driver asks for it): detached and not watched from the outset.
    pub fn start_disabled(&mut self) -> std::io::Result<()> {
        self.backend.set_enabled(false)?;
        self.enabled = false;
        self.watching = false;
        self.change = None;
        Ok(())
    }

    fn watch(&mut self, on: bool) {
        if self.watching != on {
            self.watching = on;
            self.change = Some(on);
        }
    }

    fn queue_err(&self, q: u16, source: virtio_queue::Error) -> WorkerError {
        WorkerError::Queue {
            device: self.name.clone(),
            queue: q,
            source,
        }
    }

    fn signal(&self, q: u16) -> Result<(), WorkerError> {
        self.irq.signal_used(q).map_err(|source| WorkerError::Irq {
            device: self.name.clone(),
            source,
        })
    }

    /// Send every chain the guest posted.
    fn process_tx(&mut self) -> Result<(), WorkerError> {
        let mut done = false;
        let mut bufs = Vec::new();
        loop {
            let popped = self.drain_tx(&mut bufs)?;
            done |= popped > 0;
            // With event indexes the guest notifies again only once its
            // index passes the `avail_event` this writes: look again for
            // what it posted meanwhile, or that waits for a kick that
            // never comes. A ring that says "more" but yields nothing is
            // broken (its index runs ahead); its chains are never served.
            let more = self
                .tx
                .queue
                .enable_notification(&self.mem)
                .map_err(|e| self.queue_err(self.tx.index, e))?;
            if !more {
                break;
            }
            if popped == 0 {
                self.log(format_args!("transmit ring index is out of range"));
                break;
            }
        }
        if done
            && self
                .tx
                .queue
                .needs_notification(&self.mem)
                .map_err(|e| self.queue_err(self.tx.index, e))?
        {
            self.signal(self.tx.index)?;
        }
        Ok(())
    }

    /// Send what the transmit ring holds; returns how many chains.
    fn drain_tx(&mut self, bufs: &mut Vec<(GuestAddress, u32)>) -> Result<usize, WorkerError> {
        let mut popped = 0;
        while let Some(chain) = self.tx.queue.pop_descriptor_chain(&self.mem) {
            let head = chain.head_index();
            self.iov.clear();
            bufs.clear();
            match parse_chain(chain, &self.mem, false, &mut self.iov, bufs) {
                Ok(_) => {
                    // SAFETY: the iovecs were built from guest memory
                    // (checked inside RAM by get_slices), which `self.mem`
                    // keeps mapped for the call.
                    match unsafe { self.backend.writev(&self.iov) } {
                        Ok(_) => self.stats.tx_frames += 1,
                        Err(e) => {
                            self.stats.dropped += 1;
                            let b = self.backend.name().to_string();
                            self.log(format_args!("{b}: sending a frame: {e}"));
                        }
                    }
                }
                Err(bad) => {
                    self.stats.bad_chains += 1;
                    self.log(format_args!("malformed transmit chain: {}", bad.why()));
                }
            }
            self.tx
                .queue
                .add_used(&self.mem, head, 0)
                .map_err(|e| self.queue_err(self.tx.index, e))?;
            popped += 1;
        }
        Ok(popped)
    }

    /// Gather receive chains for one frame into `self.iov`/`self.chains`:
    /// one chain, or with MRG_RXBUF as many as `rx_need` takes (or all the
    /// ring has). Malformed chains are returned empty on the way; one met
    /// after good ones is left in the ring for the next frame.
    fn gather_rx(&mut self) -> Result<bool, WorkerError> {
        self.iov.clear();
        self.chains.clear();
        let mut have = 0usize;
        loop {
            if !self.chains.is_empty() && (!self.mrg || have >= self.rx_need) {
                break;
            }
            let Some(chain) = self.rx.queue.pop_descriptor_chain(&self.mem) else {
                break;
            };
            let head = chain.head_index();
            let mark = self.iov.len();
            let mut bufs = Vec::new();
            match parse_chain(chain, &self.mem, true, &mut self.iov, &mut bufs) {
                Ok(cap) => {
                    have += cap as usize;
                    self.chains.push(RxChain { head, cap, bufs });
                }
                Err(_) if !self.chains.is_empty() => {
                    self.iov.truncate(mark);
                    self.rx.queue.go_to_previous_position();
                    break;
                }
                Err(bad) => {
                    self.iov.truncate(mark);
                    self.stats.bad_chains += 1;
                    self.log(format_args!("malformed receive chain: {}", bad.why()));
                    self.rx
                        .queue
                        .add_used(&self.mem, head, 0)
                        .map_err(|e| self.queue_err(self.rx.index, e))?;
                }
            }
        }
        Ok(!self.chains.is_empty())
    }

    /// Put the last `n` gathered chains back in the ring.
    fn unpop(&mut self, n: usize) {
        for _ in 0..n {
            self.rx.queue.go_to_previous_position();
        }
    }

    /// Receive frames while both a frame and buffers for it are there.
    fn process_rx(&mut self) -> Result<(), WorkerError> {
        let mut used = false;
        // Whether the ring was just re-armed and said more had come.
        let mut rearmed = false;
        loop {
            let before = self.stats.bad_chains;
            if !self.gather_rx()? {
                let progress = self.stats.bad_chains != before;
                used |= progress;
                // No buffers: ask for the guest's next notification (with
                // event indexes that means writing `avail_event`) and look
                // once more, for buffers posted before that took effect.
                // "More" twice with nothing to pop is a broken ring.
                let more = self
                    .rx
                    .queue
                    .enable_notification(&self.mem)
                    .map_err(|e| self.queue_err(self.rx.index, e))?;
                if more && (progress || !rearmed) {
                    rearmed = true;
                    continue;
                }
                // Stop reading until the guest posts some.
                self.watch(false);
                break;
            }
            rearmed = false;
            used |= self.stats.bad_chains != before;
            // SAFETY: the iovecs were built from guest memory inside RAM
            // (get_slices), which `self.mem` keeps mapped for the call.
            let n = match unsafe { self.backend.readv(&self.iov) } {
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.unpop(self.chains.len());
                    self.watch(true);
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {
                    self.unpop(self.chains.len());
                    continue;
                }
                Err(e) => {
                    self.unpop(self.chains.len());
                    self.stats.dropped += 1;
                    let b = self.backend.name().to_string();
                    // EFAULT/EINVAL/EMSGSIZE: the frame did not fit and the
                    // kernel dropped it; go on. Anything else (EBADFD: the
                    // tap was deleted) would wake us forever: stop watching
                    // until the guest's next notification.
                    let frame_only = matches!(
                        e.raw_os_error(),
                        Some(libc::EFAULT | libc::EINVAL | libc::EMSGSIZE)
                    );
                    self.log(format_args!("{b}: receiving a frame: {e}"));
                    if frame_only {
                        continue;
                    }
                    self.watch(false);
                    break;
                }
            };
            self.complete_rx(n)?;
            used = true;
        }
        if used
            && self
                .rx
                .queue
                .needs_notification(&self.mem)
                .map_err(|e| self.queue_err(self.rx.index, e))?
        {
            self.signal(self.rx.index)?;
        }
        Ok(())
    }

    /// A frame of `n` bytes landed in the gathered chains: return the ones
    /// it filled, give the rest back, and set `num_buffers`.
    fn complete_rx(&mut self, n: usize) -> Result<(), WorkerError> {
        let mut left = n;
        let mut count = 0u16;
        for i in 0..self.chains.len() {
            let RxChain { head, cap, .. } = self.chains[i];
            if left == 0 && count > 0 {
                break;
            }
            let len = left.min(cap as usize);
            left -= len;
            count += 1;
            self.rx
                .queue
                .add_used(&self.mem, head, len as u32)
                .map_err(|e| self.queue_err(self.rx.index, e))?;
        }
        self.unpop(self.chains.len() - count as usize);
        self.write_num_buffers(count);
        self.stats.rx_frames += 1;
        Ok(())
    }

    /// `num_buffers` is bytes 10..12 of the header, in the first chain;
    /// the tap leaves them alone. Without MRG_RXBUF it is 1 as well (the
    /// v1 header always has the field).
    fn write_num_buffers(&mut self, count: u16) {
        let mut off = 10u64;
        let bytes = count.to_le_bytes();
        let mut written = 0;
        for &(addr, len) in &self.chains[0].bufs {
            while written < 2 && off < u64::from(len) {
                let at = GuestAddress(addr.0 + off);
                let _ = self.mem.write_obj(bytes[written], at);
                written += 1;
                off += 1;
            }
            if written == 2 {
                break;
            }
            off -= u64::from(len);
        }
    }
}

impl Worker for NetWorker {
    fn fds(&self) -> Vec<(RawFd, u32)> {
        let mut f = vec![
            (self.rx.notify.as_raw_fd(), RX),
            (self.tx.notify.as_raw_fd(), TX),
        ];
        if self.watching {
            f.push((self.backend.fd(), BACKEND));
        }
        f
    }

    fn on_event(&mut self, token: u32) -> Result<(), WorkerError> {
        let notify = match token {
            RX => Some(&self.rx.notify),
            TX => Some(&self.tx.notify),
            _ => None,
        };
        if let Some(n) = notify {
            if let Err(e) = n.read() {
                if e.kind() != ErrorKind::WouldBlock {
                    return Err(WorkerError::EventFd {
                        device: self.name.clone(),
                        source: e,
                    });
                }
            }
        }
        match token {
            TX => self.process_tx(),
            // A stale wakeup after we asked to stop watching, or a pair
            // the driver has not enabled: ignore.
            _ if !self.enabled => Ok(()),
            BACKEND if !self.watching => Ok(()),
            _ => self.process_rx(),
        }
    }

    fn watch_changes(&mut self) -> Vec<(RawFd, u32, bool)> {
        match self.change.take() {
            Some(on) => vec![(self.backend.fd(), BACKEND, on)],
            None => Vec::new(),
        }
    }
}
