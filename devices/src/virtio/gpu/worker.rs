//! The virtio-gpu worker, on the device's `cm-gpuN` thread: pops control
//! and cursor requests, gathers each request's device-readable bytes
//! (bounded by `MAX_REQUEST`), lets `GpuState` answer, writes the
//! response into the device-writable part and returns the chain.
//! Requests complete in order, so a fenced request's fence is done when
//! its response is written.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::protocol::{Hdr, RESP_ERR_UNSPEC};
use super::state::{GpuState, MAX_BACKING_ENTRIES};
use crate::virtio::{ReadyQueue, VirtioIrq, Worker, WorkerError};

/// The largest request: ATTACH_BACKING with every entry it may carry.
pub const MAX_REQUEST: usize = 32 + MAX_BACKING_ENTRIES as usize * 16;

pub struct GpuWorker {
    name: String,
    mem: GuestMemoryMmap,
    queues: Vec<ReadyQueue>,
    irq: Arc<dyn VirtioIrq>,
    needs_reset: Arc<AtomicBool>,
    pub state: GpuState,
    req: Vec<u8>,
}

impl GpuWorker {
    pub fn new(
        name: String,
        mem: GuestMemoryMmap,
        queues: Vec<ReadyQueue>,
        irq: Arc<dyn VirtioIrq>,
        needs_reset: Arc<AtomicBool>,
        state: GpuState,
    ) -> Self {
        Self {
            name,
            mem,
            queues,
            irq,
            needs_reset,
            state,
            req: Vec::new(),
        }
    }

    fn queue_err(&self, queue: u16, source: virtio_queue::Error) -> WorkerError {
        self.needs_reset.store(true, Ordering::Release);
        WorkerError::Queue {
            device: self.name.clone(),
            queue,
            source,
        }
    }

    /// Serve every request waiting on queue `qi` (0 control, 1 cursor).
    fn serve(&mut self, qi: usize) -> Result<(), WorkerError> {
        let index = self.queues[qi].index;
        let mut used = false;
        while let Some(chain) = self.queues[qi].queue.pop_descriptor_chain(&self.mem) {
            let head = chain.head_index();
            let descs: Vec<(GuestAddress, u32, bool)> = chain
                .map(|d| (d.addr(), d.len(), d.is_write_only()))
                .collect();
            let resp = self.handle(qi, &descs);
            let len = self.write_response(&descs, &resp);
            self.queues[qi]
                .queue
                .add_used(&self.mem, head, len)
                .map_err(|e| self.queue_err(index, e))?;
            used = true;
        }
        if used
            && self.queues[qi]
                .queue
                .needs_notification(&self.mem)
                .map_err(|e| self.queue_err(index, e))?
        {
            self.irq
                .signal_used(index)
                .map_err(|source| WorkerError::Irq {
                    device: self.name.clone(),
                    source,
                })?;
        }
        Ok(())
    }

    /// The response to one chain (empty for the cursor queue).
    fn handle(&mut self, qi: usize, descs: &[(GuestAddress, u32, bool)]) -> Vec<u8> {
        self.req.clear();
        for &(addr, len, writable) in descs {
            if writable {
                break;
            }
            let at = self.req.len();
            let n = len as usize;
            if at + n > MAX_REQUEST {
                return Hdr::default().response(RESP_ERR_UNSPEC);
            }
            self.req.resize(at + n, 0);
            if self.mem.read_slice(&mut self.req[at..], addr).is_err() {
                return Hdr::default().response(RESP_ERR_UNSPEC);
            }
        }
        if qi == 0 {
            let req = std::mem::take(&mut self.req);
            let resp = self.state.control(&self.mem, &req);
            self.req = req;
            resp
        } else {
            self.state.cursor_cmd(&self.req);
            Vec::new()
        }
    }

    /// Write `resp` over the chain's writable buffers; bytes written.
    fn write_response(&self, descs: &[(GuestAddress, u32, bool)], resp: &[u8]) -> u32 {
        let mut done = 0;
        for &(addr, len, _) in descs.iter().filter(|d| d.2) {
            if done == resp.len() {
                break;
            }
            let n = (len as usize).min(resp.len() - done);
            if self.mem.write_slice(&resp[done..done + n], addr).is_err() {
                break;
            }
            done += n;
        }
        done as u32
    }
}

impl Worker for GpuWorker {
    fn fds(&self) -> Vec<(RawFd, u32)> {
        self.queues
            .iter()
            .enumerate()
            .map(|(i, q)| (q.notify.as_raw_fd(), i as u32))
            .collect()
    }

    fn on_event(&mut self, token: u32) -> Result<(), WorkerError> {
        let qi = token as usize;
        let Some(q) = self.queues.get(qi) else {
            return Ok(());
        };
        if let Err(e) = q.notify.read() {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(WorkerError::EventFd {
                    device: self.name.clone(),
                    source: e,
                });
            }
        }
        if self.needs_reset.load(Ordering::Acquire) {
            return Ok(());
        }
        self.serve(qi)
    }
}
