//! The virtio-rng worker, on the device's `cm-rngN` thread: for each
//! descriptor chain the guest posts, fill its device-writable buffers from
//! the entropy source (straight into guest memory) and return it with the
//! byte count. Chains with device-readable parts are returned with nothing
//! written (the spec allows the device to ignore them). Under a rate limit
//! a chain waits in the ring once the period's budget is spent; a timerfd
//! brings the worker back when the next period starts.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::timerfd::TimerFd;

use super::{EntropySource, RateLimit};
use crate::virtio::{ReadyQueue, StartContext, VirtioIrq, Worker, WorkerError};

const TIMER_TOKEN: u32 = u32::MAX;
/// Bytes per chain at most: a guest asking for more gets this much, as
/// Linux's driver asks for at most a page or so at a time.
const MAX_PER_CHAIN: usize = 64 << 10;

pub struct RngWorker {
    name: String,
    mem: GuestMemoryMmap,
    queue: ReadyQueue,
    irq: Arc<dyn VirtioIrq>,
    needs_reset: Arc<AtomicBool>,
    source: Arc<dyn EntropySource>,
    limit: Option<RateLimit>,
    /// Budget left in the current period, and when the period started.
    budget: u64,
    period_start: Instant,
    timer: TimerFd,
    timer_armed: bool,
    buf: Vec<u8>,
    logged: u32,
}

impl RngWorker {
    pub fn new(
        name: String,
        mut ctx: StartContext,
        source: Arc<dyn EntropySource>,
        limit: Option<RateLimit>,
    ) -> std::io::Result<Self> {
        let queue = ctx.queues.remove(0);
        Ok(Self {
            name,
            mem: ctx.mem,
            queue,
            irq: ctx.irq,
            needs_reset: ctx.needs_reset,
            source,
            budget: limit.map_or(u64::MAX, |l| l.bytes),
            limit,
            period_start: Instant::now(),
            timer: TimerFd::new().map_err(std::io::Error::from)?,
            timer_armed: false,
            buf: Vec::new(),
            logged: 0,
        })
    }

    fn queue_err(&self, source: virtio_queue::Error) -> WorkerError {
        self.needs_reset.store(true, Ordering::Release);
        WorkerError::Queue {
            device: self.name.clone(),
            queue: self.queue.index,
            source,
        }
    }

    /// Refill the budget when a new period has begun.
    fn refill(&mut self) {
        if let Some(l) = self.limit {
            if self.period_start.elapsed() >= l.period {
                self.period_start = Instant::now();
                self.budget = l.bytes;
            }
        }
    }

    /// Come back when the current period ends.
    fn arm_timer(&mut self) {
        let Some(l) = self.limit else {
            return;
        };
        let left = l
            .period
            .saturating_sub(self.period_start.elapsed())
            .max(Duration::from_millis(1));
        match self.timer.reset(left, None) {
            Ok(()) => self.timer_armed = true,
            Err(e) => log::warn!("{}: arming the rate-limit timer: {e}", self.name),
        }
    }

    /// Serve the ring until it is empty or the budget is spent.
    fn serve(&mut self) -> Result<(), WorkerError> {
        self.refill();
        let mut used = false;
        loop {
            if self.budget == 0 {
                self.arm_timer();
                break;
            }
            let Some(chain) = self.queue.queue.pop_descriptor_chain(&self.mem) else {
                break;
            };
            let head = chain.head_index();
            let descs: Vec<_> = chain
                .map(|d| (d.addr(), d.len(), d.is_write_only()))
                .collect();
            let len = self.fill_chain(&descs);
            self.budget = self.budget.saturating_sub(u64::from(len));
            if let Err(e) = self.queue.queue.add_used(&self.mem, head, len) {
                return Err(self.queue_err(e));
            }
            used = true;
        }
        if used
            && self
                .queue
                .queue
                .needs_notification(&self.mem)
                .map_err(|e| self.queue_err(e))?
        {
            self.irq
                .signal_used(self.queue.index)
                .map_err(|source| WorkerError::Irq {
                    device: self.name.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Fill the chain's writable buffers; returns the bytes written. A
    /// chain with a readable part, or a buffer outside guest RAM, gets
    /// what was written before it (logged, rate-limited).
    fn fill_chain(&mut self, descs: &[(GuestAddress, u32, bool)]) -> u32 {
        let cap = usize::try_from(self.budget)
            .unwrap_or(usize::MAX)
            .min(MAX_PER_CHAIN);
        let mut written = 0usize;
        for &(addr, len, writable) in descs {
            if !writable {
                self.reject("device-readable buffer in an entropy request");
                break;
            }
            let want = (len as usize).min(cap - written);
            if want == 0 {
                break;
            }
            self.buf.resize(want, 0);
            let n = match self.source.fill(&mut self.buf[..want]) {
                Ok(n) => n,
                Err(e) => {
                    log::warn!("{}: reading the entropy source: {e}", self.name);
                    break;
                }
            };
            if self.mem.write_slice(&self.buf[..n], addr).is_err() {
                self.reject("buffer outside guest memory");
                break;
            }
            written += n;
            if n < want {
                break;
            }
        }
        written as u32
    }

    fn reject(&mut self, why: &str) {
        if self.logged < 8 {
            self.logged += 1;
            log::warn!("{}: malformed request from the guest: {why}", self.name);
        }
    }
}

impl Worker for RngWorker {
    fn fds(&self) -> Vec<(RawFd, u32)> {
        vec![
            (self.queue.notify.as_raw_fd(), 0),
            (self.timer.as_raw_fd(), TIMER_TOKEN),
        ]
    }

    fn on_event(&mut self, token: u32) -> Result<(), WorkerError> {
        if token == TIMER_TOKEN {
            // Reading the expirations disarms a one-shot timer's event.
            let _ = self.timer.wait();
            self.timer_armed = false;
        } else if let Err(e) = self.queue.notify.read() {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(WorkerError::EventFd {
                    device: self.name.clone(),
                    source: e,
                });
            }
        }
        if self.needs_reset.load(Ordering::Acquire) || self.timer_armed {
            return Ok(());
        }
        self.serve()
    }
}
