//! The virtio-blk worker, on the device's `cm-<dev>` thread: pops
//! descriptor chains when the guest notifies, parses them, hands valid
//! requests to the engine in chunks (one kick each), and publishes
//! completions to the used ring with coalesced interrupts. While it serves a
//! queue the guest's notifications are off, so a driver that keeps adding
//! requests does not exit for each batch. It does not know which engine
//! runs (`IoEngine`).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestMemoryMmap};

use super::engine::{Done, IoEngine, Job};
use super::request::{parse, Reject};
use crate::virtio::{ReadyQueue, StartContext, VirtioIrq, Worker, WorkerError};

/// Token for the engine's completion eventfd; queue tokens are their slot.
pub const DONE_TOKEN: u32 = u32::MAX;

/// Requests popped and started before the completions so far are
/// published: small enough that a polling guest sees completions (and
/// refills) while the rest of its batch is served, large enough to share one
/// submission syscall. A chunk grows up to `MAX_CHUNK` while its requests
/// keep merging into one transfer (sequential I/O), where a larger transfer
/// pays more than early completions.
const CHUNK: usize = 8;
const MAX_CHUNK: usize = 32;
/// Requests served between two interrupts while a queue is being drained:
/// a driver that waits for interrupts still hears of completions this often.
const IRQ_EVERY: usize = 32;
/// Requests served per queue event before other events get a turn.
const MAX_PER_EVENT: usize = 256;
/// Errors from the engine logged before going quiet.
const MAX_ENGINE_ERRORS_LOGGED: u32 = 8;

pub struct BlockWorker {
    name: String,
    mem: GuestMemoryMmap,
    queues: Vec<ReadyQueue>,
    irq: Arc<dyn VirtioIrq>,
    needs_reset: Arc<AtomicBool>,
    capacity: u64,
    engine: IoEngine,
    /// Rate-limits logs of malformed requests from a misbehaving guest.
    rejects_logged: u32,
    engine_errors_logged: u32,
    /// Reused for every batch: completions, and the queues they touched.
    done: Vec<Done>,
    touched: Vec<bool>,
    /// Requests handed to the engine and not completed yet.
    in_flight: usize,
    poll_max: Duration,
}

impl BlockWorker {
    /// `capacity` is the disk size in bytes, as the guest was told.
    pub fn new(name: String, ctx: StartContext, capacity: u64, engine: IoEngine) -> Self {
        Self {
            name,
            mem: ctx.mem,
            touched: vec![false; ctx.queues.len()],
            queues: ctx.queues,
            irq: ctx.irq,
            needs_reset: ctx.needs_reset,
            capacity,
            engine,
            rejects_logged: 0,
            engine_errors_logged: 0,
            done: Vec::new(),
            in_flight: 0,
            poll_max: Duration::ZERO,
        }
    }

    /// Poll up to `max` for the guest's next request (`virtio::poll`).
    pub fn with_poll_max(mut self, max: Duration) -> Self {
        self.poll_max = max;
        self
    }

    /// The engine could not hand requests to the kernel: they would never
    /// complete, so the device needs a reset.
    fn engine_failed(&mut self, e: &std::io::Error) {
        self.needs_reset.store(true, Ordering::Release);
        if self.engine_errors_logged < MAX_ENGINE_ERRORS_LOGGED {
            self.engine_errors_logged += 1;
            log::error!(
                "{}: block engine failed, device needs a reset: {e}",
                self.name
            );
        }
    }

    fn queue_err(&self, slot: usize, source: virtio_queue::Error) -> WorkerError {
        self.needs_reset.store(true, Ordering::Release);
        WorkerError::Queue {
            device: self.name.clone(),
            queue: self.queues[slot].index,
            source,
        }
    }

    fn log_reject(&mut self, why: &str) {
        if self.rejects_logged < 16 {
            self.rejects_logged += 1;
            log::warn!("{}: malformed request from the guest: {why}", self.name);
        }
    }

    /// Serve queue `slot` until its available ring is empty: with the
    /// guest's notifications off meanwhile (a polling driver then adds
    /// requests without exiting), in chunks of `CHUNK` requests whose
    /// completions go into the used ring before the next chunk is popped, so
    /// a polling guest refills while the rest is served. Interrupts are
    /// coalesced: one per `IRQ_EVERY` requests and one at the end.
    fn serve_queue(&mut self, slot: usize) -> Result<(), WorkerError> {
        let r = self.serve_chunks(slot);
        let s = self.signal();
        r.and(s)
    }

    fn serve_chunks(&mut self, slot: usize) -> Result<(), WorkerError> {
        let mut budget = MAX_PER_EVENT;
        let mut unsignalled = 0;
        loop {
            let q = &mut self.queues[slot].queue;
            if let Err(e) = q.disable_notification(&self.mem) {
                return Err(self.queue_err(slot, e));
            }
            loop {
                let (popped, empty) = self.pop_chunk(slot)?;
                budget = budget.saturating_sub(popped);
                unsignalled += popped;
                if unsignalled >= IRQ_EVERY {
                    unsignalled = 0;
                    self.signal()?;
                }
                if empty {
                    break;
                }
                if budget == 0 {
                    // Let other queues and completions in; notifications
                    // stay off, so wake ourselves to come back.
                    let _ = self.queues[slot].notify.write(1);
                    return Ok(());
                }
            }
            let q = &mut self.queues[slot].queue;
            match q.enable_notification(&self.mem) {
                Ok(true) => continue,
                Ok(false) => {
                    self.engine.idle();
                    return Ok(());
                }
                Err(e) => return Err(self.queue_err(slot, e)),
            }
        }
    }

    /// Pop, parse and submit a chunk of requests, start them, and publish
    /// whatever has completed by then; returns how many were popped and
    /// whether the available ring ran empty.
    fn pop_chunk(&mut self, slot: usize) -> Result<(usize, bool), WorkerError> {
        let mut done = std::mem::take(&mut self.done);
        done.clear();
        let (mut popped, mut merging, mut empty) = (0, false, false);
        while popped < MAX_CHUNK && (popped < CHUNK || merging) {
            let q = &mut self.queues[slot].queue;
            let Some(chain) = q.pop_descriptor_chain(&self.mem) else {
                empty = true;
                break;
            };
            popped += 1;
            let head = chain.head_index();
            merging = false;
            match parse(chain, &self.mem, self.capacity) {
                Ok(req) => {
                    self.in_flight += 1;
                    merging = self.engine.submit(Job { slot, head, req });
                }
                Err(Reject::Status { status, code, why }) => {
                    self.log_reject(why);
                    let len = u32::from(self.mem.write_obj(code, status).is_ok());
                    done.push(Done { slot, head, len });
                }
                Err(Reject::Silent(why)) => {
                    self.log_reject(why);
                    done.push(Done { slot, head, len: 0 });
                }
            }
        }
        // One submission for the chunk, then whatever finished meanwhile
        // (page-cache hits complete inside io_uring's submit call).
        if let Err(e) = self.engine.kick() {
            self.engine_failed(&e);
        }
        self.finish_batch(done)?;
        Ok((popped, empty))
    }

    /// Collect the engine's completions into `done` and publish them.
    fn finish_batch(&mut self, mut done: Vec<Done>) -> Result<(), WorkerError> {
        let rejected = done.len();
        if let Err(e) = self.engine.take_done(&mut done) {
            self.engine_failed(&e);
        }
        self.in_flight = self.in_flight.saturating_sub(done.len() - rejected);
        let r = self.complete(&done);
        self.done = done;
        r
    }

    /// Put `done` into the used rings; the guest's interrupt waits for
    /// `signal`.
    fn complete(&mut self, done: &[Done]) -> Result<(), WorkerError> {
        for d in done {
            let q = &mut self.queues[d.slot].queue;
            if let Err(e) = q.add_used(&self.mem, d.head, d.len) {
                return Err(self.queue_err(d.slot, e));
            }
            self.touched[d.slot] = true;
        }
        Ok(())
    }

    /// One interrupt for each queue with new used entries since the last.
    fn signal(&mut self) -> Result<(), WorkerError> {
        for slot in 0..self.touched.len() {
            if !std::mem::take(&mut self.touched[slot]) {
                continue;
            }
            let notify = match self.queues[slot].queue.needs_notification(&self.mem) {
                Ok(n) => n,
                Err(e) => return Err(self.queue_err(slot, e)),
            };
            if notify {
                let index = self.queues[slot].index;
                self.irq
                    .signal_used(index)
                    .map_err(|source| WorkerError::Irq {
                        device: self.name.clone(),
                        source,
                    })?;
            }
        }
        Ok(())
    }
}

/// Reset a level-style eventfd; an already-empty one (a spurious wakeup) is
/// fine.
fn drain(evt: &vmm_sys_util::eventfd::EventFd, name: &str) -> Result<(), WorkerError> {
    match evt.read() {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        Err(source) => Err(WorkerError::EventFd {
            device: name.to_string(),
            source,
        }),
    }
}

impl Worker for BlockWorker {
    fn fds(&self) -> Vec<(RawFd, u32)> {
        let mut v: Vec<(RawFd, u32)> = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| (q.notify.as_raw_fd(), i as u32))
            .collect();
        v.push((self.engine.done_evt().as_raw_fd(), DONE_TOKEN));
        v
    }

    fn on_event(&mut self, token: u32) -> Result<(), WorkerError> {
        if token == DONE_TOKEN {
            drain(self.engine.done_evt(), &self.name)?;
            let mut done = std::mem::take(&mut self.done);
            done.clear();
            self.finish_batch(done)?;
            return self.signal();
        }
        let slot = token as usize;
        if slot >= self.queues.len() {
            return Ok(());
        }
        drain(&self.queues[slot].notify, &self.name)?;
        if self.needs_reset.load(Ordering::Acquire) {
            return Ok(());
        }
        self.serve_queue(slot)
    }

    fn poll_max(&self) -> Duration {
        self.poll_max
    }

    fn awaits_guest(&self) -> bool {
        self.in_flight == 0 && !self.needs_reset.load(Ordering::Relaxed)
    }
}
