//! Virtio: one device trait for every transport, the worker contract, and
//! the interrupt seam.
//!
//! ```text
//!  guest ──MMIO──▶ MmioTransport ─────┐        (vCPU thread: registers,
//!  guest ──PCI───▶ VirtioPciTransport ┼─▶ VirtioDevice   status machine)
//!                                     │      │ activate(StartContext)
//!  guest ─notify─▶ ioeventfd ─────────┼──────▼
//!                                     └─▶ Worker::on_event (cm-<dev> thread:
//!                                           │ VirtioIrq       queues, backend)
//! ```
//! Devices never spawn threads or touch epoll. A status write that starts
//! or resets a device comes back from the transport as a
//! `PlatformRequest::Virtio`; the VMM's control thread then calls the
//! transport's `VirtioLifecycle`, which hands the worker the device built
//! to a `WorkerHost` (the VMM's), which runs it on its own thread and
//! stops it again on reset.

pub mod blk;
pub mod common;
pub mod gpu;
pub mod mmio;
pub mod net;
pub mod pci;
pub mod poll;
pub mod rng;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
pub mod worker_loop;

use std::os::fd::RawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub use common::QueueConfig;

/// Device status bits (virtio 1.x, 2.1), as the status register's byte.
pub mod status {
    use virtio_bindings::virtio_config as c;
    pub const ACKNOWLEDGE: u8 = c::VIRTIO_CONFIG_S_ACKNOWLEDGE as u8;
    pub const DRIVER: u8 = c::VIRTIO_CONFIG_S_DRIVER as u8;
    pub const DRIVER_OK: u8 = c::VIRTIO_CONFIG_S_DRIVER_OK as u8;
    pub const FEATURES_OK: u8 = c::VIRTIO_CONFIG_S_FEATURES_OK as u8;
    pub const NEEDS_RESET: u8 = c::VIRTIO_CONFIG_S_NEEDS_RESET as u8;
    pub const FAILED: u8 = c::VIRTIO_CONFIG_S_FAILED as u8;
}

/// Transport-level feature bits every device offers.
pub const VIRTIO_F_VERSION_1: u64 = 1 << virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
/// VIRTIO_RING_F_EVENT_IDX: the driver says through `used_event` when it
/// wants an interrupt, the device through `avail_event` when it wants a
/// notification (virtio 1.x, 2.7.10).
pub const VIRTIO_RING_F_EVENT_IDX: u64 =
    1 << virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// Turn event-index suppression on in every queue when the driver
/// accepted it. A worker of such queues must call
/// `enable_notification` whenever it finds a ring empty and look again
/// when that says more arrived: with event indexes the driver notifies
/// only when its index passes the `avail_event` that call writes.
pub fn use_event_idx(queues: &mut [ReadyQueue], acked: u64) {
    use virtio_queue::QueueT;
    for q in queues {
        q.queue.set_event_idx(acked & VIRTIO_RING_F_EVENT_IDX != 0);
    }
}

/// Device ids (virtio 1.x, 5).
pub const TYPE_BLOCK: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
pub const TYPE_NET: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_NET;
pub const TYPE_RNG: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_RNG;

/// Signals the guest. MMIO: ISR bit + irqfd; PCI: the queue's MSI-X vector.
pub trait VirtioIrq: Send + Sync {
    fn signal_used(&self, queue: u16) -> std::io::Result<()>;
    fn signal_config(&self) -> std::io::Result<()>;
}

/// One ready queue with the eventfd its notifications arrive on.
pub struct ReadyQueue {
    pub index: u16,
    pub queue: virtio_queue::Queue,
    pub notify: EventFd,
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct StartContext {
    pub mem: GuestMemoryMmap,
    pub queues: Vec<ReadyQueue>,
    pub irq: Arc<dyn VirtioIrq>,
    /// Set by the worker when guest input left it unable to continue; the
    /// transport then shows NEEDS_RESET in the status register.
    pub needs_reset: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{device}: {why}")]
    Invalid { device: String, why: String },
    #[error("{device}: creating an eventfd")]
    EventFd {
        device: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{device}: reading an eventfd")]
    EventFd {
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{device}: queue {queue}: {source}")]
    Queue {
        device: String,
        queue: u16,
        #[source]
        source: virtio_queue::Error,
    },
    #[error("{device}: signalling the guest")]
    Irq {
        device: String,
        #[source]
        source: std::io::Error,
    },
}

/// A started device's I/O loop body; the host runs it on its own thread.
pub trait Worker: Send {
    /// File descriptors to watch, each with the token `on_event` receives.
    fn fds(&self) -> Vec<(RawFd, u32)>;
    /// One fd became readable.
    fn on_event(&mut self, token: u32) -> Result<(), WorkerError>;
    /// Fds to start or stop watching, as (fd, token, watch), asked since
    /// the last call; the host applies them after each event. A worker
    /// that must not read a host fd for a while (net: no receive buffers)
    /// stops watching it instead of spinning on a level-triggered wakeup.
    fn watch_changes(&mut self) -> Vec<(RawFd, u32, bool)> {
        Vec::new()
    }
    /// The longest the event loop may poll for the next event before it
    /// sleeps, while `awaits_guest` (see `poll`); zero never polls.
    fn poll_max(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
    /// True when the worker's next event can only come from the guest
    /// (nothing of its own in flight): the wait worth polling for.
    fn awaits_guest(&self) -> bool {
        false
    }
}

/// Runs workers on behalf of transports (the VMM implements it).
pub trait WorkerHost: Send + Sync {
    /// Start `worker` on a thread named `name`; the returned id stops it.
    fn start(&self, name: String, worker: Box<dyn Worker>) -> std::io::Result<u64>;
    /// Stop the worker and wait for its thread: after this returns, the
    /// device's queues are no longer touched.
    fn stop(&self, id: u64);
}

/// The guest-visible virtio device, independent of transport.
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    /// A short name for threads and logs, e.g. `blk0`.
    fn name(&self) -> &str;
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits offered (VIRTIO_F_VERSION_1 included).
    fn features(&self) -> u64;
    /// The subset the driver accepted (already masked to `features()`).
    fn ack_features(&mut self, features: u64);
    fn read_config(&self, offset: u64, data: &mut [u8]);
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// DRIVER_OK: build the worker that serves `ctx.queues`.
    fn activate(&mut self, ctx: StartContext) -> Result<Box<dyn Worker>, StartError>;
    /// The driver reset the device (the worker is already stopped).
    fn reset(&mut self);
}

/// Read the bytes of `config` at `offset` into `data`; out-of-range bytes
/// read as zero, so a driver probing past the end sees nothing harmful.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(off) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(off..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}
