//! The virtio-blk worker: pops descriptor chains when the guest notifies,
//! parses them, hands valid requests to the engine, and publishes
//! completions to the used ring and the guest's interrupt.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestMemoryMmap};

use super::engine::{Done, Engine, Job};
use super::request::{parse, Reject};
use crate::virtio::{ReadyQueue, VirtioIrq, Worker, WorkerError};

/// Token for the engine's completion eventfd; queue tokens are their slot.
pub const DONE_TOKEN: u32 = u32::MAX;

pub struct BlockWorker {
    pub name: String,
    pub mem: GuestMemoryMmap,
    pub queues: Vec<ReadyQueue>,
    pub irq: Arc<dyn VirtioIrq>,
    pub needs_reset: Arc<AtomicBool>,
    pub capacity: u64,
    pub engine: Engine,
    /// Rate-limits logs of malformed requests from a misbehaving guest.
    pub rejects_logged: u32,
}

impl BlockWorker {
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

    fn pop_requests(&mut self, slot: usize) -> Result<(), WorkerError> {
        let mut immediate = Vec::new();
        loop {
            let q = &mut self.queues[slot].queue;
            let Some(chain) = q.pop_descriptor_chain(&self.mem) else {
                break;
            };
            let head = chain.head_index();
            match parse(chain, &self.mem, self.capacity) {
                Ok(req) => self.engine.submit(Job { slot, head, req }),
                Err(Reject::Status { status, code, why }) => {
                    self.log_reject(why);
                    let len = u32::from(self.mem.write_obj(code, status).is_ok());
                    immediate.push(Done { slot, head, len });
                }
                Err(Reject::Silent(why)) => {
                    self.log_reject(why);
                    immediate.push(Done { slot, head, len: 0 });
                }
            }
        }
        self.complete(&immediate)
    }

    fn complete(&mut self, done: &[Done]) -> Result<(), WorkerError> {
        let mut touched = vec![false; self.queues.len()];
        for d in done {
            let q = &mut self.queues[d.slot].queue;
            if let Err(e) = q.add_used(&self.mem, d.head, d.len) {
                return Err(self.queue_err(d.slot, e));
            }
            touched[d.slot] = true;
        }
        for (slot, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
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
        v.push((self.engine.done_evt.as_raw_fd(), DONE_TOKEN));
        v
    }

    fn on_event(&mut self, token: u32) -> Result<(), WorkerError> {
        if token == DONE_TOKEN {
            drain(&self.engine.done_evt, &self.name)?;
            let done = self.engine.take_done();
            return self.complete(&done);
        }
        let slot = token as usize;
        if slot >= self.queues.len() {
            return Ok(());
        }
        drain(&self.queues[slot].notify, &self.name)?;
        if self.needs_reset.load(Ordering::Acquire) {
            return Ok(());
        }
        self.pop_requests(slot)
    }
}
