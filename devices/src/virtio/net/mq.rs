//! Multiqueue virtio-net (`mq=on` with a `queues=N` tap): N receive and
//! transmit pairs, each a `NetWorker` on its own tap queue, and the
//! control queue (`ctrl`), all served by one worker thread.
//!
//! One thread polls every queue rather than one thread per pair: on this
//! host a notification reaches the worker through an ioeventfd (~3 µs,
//! no VMM exit) whichever thread waits on it, and a frame costs far less
//! than the guest's own emulated kernel spends on it, so extra threads
//! would buy no throughput; they would compete with the vCPUs for the
//! host's two cores and need the device contract (one worker per device)
//! to change. Tap queues still spread the host side: the kernel steers
//! each flow to one queue, and the guest sees it on that pair.
//!
//! Only the pairs the driver enabled (VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET; one
//! until it asks) have their tap queue attached: the kernel steers no
//! frame to a queue nobody reads.

use std::io::ErrorKind;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use virtio_bindings::virtio_net as vn;

use super::ctrl::Ctrl;
use super::worker::{NetWorker, PairParts};
use super::NetConfig;
use crate::virtio::{ReadyQueue, StartContext, StartError, VirtioIrq, Worker, WorkerError};

/// Tokens per pair (receive, transmit, backend), as `NetWorker` uses.
const PER_PAIR: u32 = 3;

pub struct MqWorker {
    name: String,
    mem: GuestMemoryMmap,
    irq: Arc<dyn VirtioIrq>,
    pairs: Vec<NetWorker>,
    ctrl: Option<Ctrl>,
    /// Pair-count changes that failed, logged so far.
    logged: u32,
}

impl MqWorker {
    /// `pairs[0]` starts enabled, the others detached until the driver
    /// enables them.
    pub fn new(
        name: String,
        mem: GuestMemoryMmap,
        irq: Arc<dyn VirtioIrq>,
        mut pairs: Vec<NetWorker>,
        ctrl: Option<Ctrl>,
    ) -> std::io::Result<Self> {
        for p in pairs.iter_mut().skip(1) {
            p.start_disabled()?;
        }
        Ok(Self {
            name,
            mem,
            irq,
            pairs,
            ctrl,
            logged: 0,
        })
    }

    fn ctrl_token(&self) -> u32 {
        PER_PAIR * self.pairs.len() as u32
    }
}

/// Enable the first `n` pairs and disable the rest; false if a tap queue
/// refused (the command then fails).
fn set_pairs(name: &str, pairs: &mut [NetWorker], n: u16, logged: &mut u32) -> bool {
    for (i, p) in pairs.iter_mut().enumerate() {
        if let Err(e) = p.set_enabled(i < usize::from(n)) {
            if *logged < 8 {
                *logged += 1;
                log::warn!("{name}: switching queue pair {i} for {n} pairs: {e}");
            }
            return false;
        }
    }
    log::debug!("{name}: {n} queue pairs in use");
    true
}

impl Worker for MqWorker {
    fn fds(&self) -> Vec<(RawFd, u32)> {
        let mut f = Vec::new();
        for (i, p) in self.pairs.iter().enumerate() {
            let base = PER_PAIR * i as u32;
            f.extend(p.fds().into_iter().map(|(fd, t)| (fd, base + t)));
        }
        if let Some(c) = &self.ctrl {
            f.push((c.q.notify.as_raw_fd(), self.ctrl_token()));
        }
        f
    }

    fn on_event(&mut self, token: u32) -> Result<(), WorkerError> {
        if token == self.ctrl_token() {
            let Self {
                name,
                mem,
                irq,
                pairs,
                ctrl,
                logged,
            } = self;
            let Some(c) = ctrl else { return Ok(()) };
            if let Err(e) = c.q.notify.read() {
                if e.kind() != ErrorKind::WouldBlock {
                    return Err(WorkerError::EventFd {
                        device: name.clone(),
                        source: e,
                    });
                }
            }
            let max = pairs.len() as u16;
            return c.process(name, mem, irq.as_ref(), max, &mut |n| {
                set_pairs(name, pairs, n, logged)
            });
        }
        match self.pairs.get_mut((token / PER_PAIR) as usize) {
            Some(p) => p.on_event(token % PER_PAIR),
            None => Ok(()),
        }
    }

    fn watch_changes(&mut self) -> Vec<(RawFd, u32, bool)> {
        let mut c = Vec::new();
        for (i, p) in self.pairs.iter_mut().enumerate() {
            let base = PER_PAIR * i as u32;
            c.extend(
                p.watch_changes()
                    .into_iter()
                    .map(|(fd, t, on)| (fd, base + t, on)),
            );
        }
        c
    }
}

/// The worker for a multiqueue device: pairs in queue order (receive
/// 2i, transmit 2i+1) as far as the driver made both ready (at least the
/// first), and the control queue (index 2N) when it accepted CTRL_VQ.
/// Tap queues past the usable pairs are detached.
pub fn activate(cfg: &NetConfig, acked: u64, ctx: StartContext) -> Result<MqWorker, StartError> {
    let invalid = |why: String| StartError::Invalid {
        device: cfg.name.clone(),
        why,
    };
    let n = usize::from(cfg.pairs());
    let mut slots: Vec<Option<ReadyQueue>> = (0..=2 * n).map(|_| None).collect();
    for q in ctx.queues {
        let i = usize::from(q.index);
        if i < slots.len() {
            slots[i] = Some(q);
        }
    }
    let ctrl = match slots[2 * n].take() {
        Some(q) if acked & (1 << vn::VIRTIO_NET_F_CTRL_VQ) != 0 => Some(Ctrl::new(q, acked)),
        _ => None,
    };
    // Without MQ the driver uses the first pair only.
    let usable = if acked & (1 << vn::VIRTIO_NET_F_MQ) != 0 {
        n
    } else {
        1
    };
    let backends: Vec<_> = std::iter::once(&cfg.backend).chain(&cfg.more).collect();
    let mut pairs = Vec::new();
    for (i, backend) in backends.iter().enumerate().take(usable) {
        let (Some(rx), Some(tx)) = (slots[2 * i].take(), slots[2 * i + 1].take()) else {
            break;
        };
        let parts = PairParts {
            name: cfg.name.clone(),
            mem: ctx.mem.clone(),
            irq: ctx.irq.clone(),
            backend: Arc::clone(backend),
            acked,
            mtu: cfg.mtu,
        };
        pairs.push(NetWorker::pair(parts, rx, tx));
    }
    if pairs.is_empty() {
        return Err(invalid(
            "needs the first receive and transmit queues ready".into(),
        ));
    }
    for b in &backends[pairs.len()..] {
        b.set_enabled(false)
            .map_err(|e| invalid(format!("{}: detaching an unused queue: {e}", b.name())))?;
    }
    backends[0].set_enabled(true).map_err(|e| {
        invalid(format!(
            "{}: attaching the first queue: {e}",
            backends[0].name()
        ))
    })?;
    MqWorker::new(cfg.name.clone(), ctx.mem, ctx.irq, pairs, ctrl)
        .map_err(|e| invalid(format!("detaching the queues not yet in use: {e}")))
}
