//! Transport-independent virtio state: the device-status machine, feature
//! negotiation pages and per-queue configuration, and `Activation`, the
//! DRIVER_OK/reset lifecycle of a device's worker. Written once and shared
//! by the MMIO and PCI transports. The status machine runs on vCPU
//! threads and only returns a `StatusChange`; the worker is started and
//! stopped by the control thread (`VirtioLifecycle`), which alone spawns
//! and joins threads. Register layouts and interrupt delivery stay in the
//! transports.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::status::*;
use super::{
    ReadyQueue, StartContext, StartError, VirtioDevice, VirtioIrq, WorkerHost, VIRTIO_F_VERSION_1,
};

/// A queue as the driver configured it, before the device starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueConfig {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

/// What a status write asks the transport to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    None,
    /// DRIVER_OK was set with a valid configuration: start the device.
    Activate,
    /// Status 0: reset the device (and stop its worker).
    Reset,
}

impl StatusChange {
    /// What the transport with registry key `device` returns for this
    /// change from its bus write: a request for the control thread, or
    /// nothing.
    pub fn request(self, device: crate::bus::DeviceKey) -> crate::bus::BusAction {
        match self {
            StatusChange::None => crate::bus::BusAction::None,
            change => crate::bus::BusAction::Platform(crate::bus::PlatformRequest::Virtio {
                device,
                change,
            }),
        }
    }
}

pub struct VirtioCommonState {
    pub status: u8,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub queues: Vec<QueueConfig>,
    pub config_generation: u32,
    /// Warnings about the driver's mistakes logged so far: a guest looping
    /// on a bad status write must not flood the host's log.
    warned: u32,
}

/// Guest-caused warnings logged per device before going quiet.
const MAX_WARNINGS: u32 = 8;

impl VirtioCommonState {
    pub fn new(dev: &dyn VirtioDevice) -> Self {
        let queues = dev
            .queue_max_sizes()
            .iter()
            .map(|&m| QueueConfig {
                max_size: m,
                size: m,
                ..Default::default()
            })
            .collect();
        Self {
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            config_generation: 0,
            warned: 0,
        }
    }

    /// The 32-bit page of offered features the driver selected.
    pub fn device_features_page(&self, dev: &dyn VirtioDevice) -> u32 {
        match self.device_features_sel {
            0 => dev.features() as u32,
            1 => (dev.features() >> 32) as u32,
            _ => 0,
        }
    }

    /// Features may only change between DRIVER and FEATURES_OK.
    pub fn set_driver_features_page(&mut self, v: u32) {
        if self.status & FEATURES_OK != 0 || self.status & DRIVER == 0 {
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32),
            _ => {}
        }
    }

    pub fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers are writable only before DRIVER_OK.
    pub fn queue_writable(&self) -> bool {
        self.status & DRIVER_OK == 0
    }

    /// Apply a status write, enforcing the order of virtio 1.x 3.1.1.
    pub fn set_status(&mut self, v: u8, dev: &mut dyn VirtioDevice) -> StatusChange {
        if v == 0 {
            self.reset();
            return StatusChange::Reset;
        }
        let old = self.status;
        // Bits can only be added, never cleared, short of a reset.
        if v & old != old {
            if self.warned < MAX_WARNINGS {
                self.warned += 1;
                log::warn!(
                    "{}: driver cleared status bits {old:#x} -> {v:#x}; ignored",
                    dev.name()
                );
            }
            return StatusChange::None;
        }
        let added = v & !old;
        if added & FEATURES_OK != 0 {
            let offered = dev.features();
            if self.driver_features & !offered != 0
                || self.driver_features & VIRTIO_F_VERSION_1 == 0
            {
                // Leave FEATURES_OK clear: the driver reads it back and fails.
                self.status = v & !FEATURES_OK;
                return StatusChange::None;
            }
            dev.ack_features(self.driver_features);
        }
        self.status = v;
        if added & DRIVER_OK != 0 && v & FEATURES_OK != 0 && v & FAILED == 0 {
            return StatusChange::Activate;
        }
        StatusChange::None
    }

    pub fn reset(&mut self) {
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            *q = QueueConfig {
                max_size: q.max_size,
                size: q.max_size,
                ..Default::default()
            };
        }
    }
}

/// Why DRIVER_OK did not start the device; the transport then shows
/// NEEDS_RESET.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("queue {queue}: invalid configuration")]
    Queue {
        queue: u16,
        #[source]
        source: virtio_queue::Error,
    },
    #[error("queue {queue}: rings lie outside guest memory")]
    OutsideMemory { queue: u16 },
    #[error("queue {queue}: no notification eventfd")]
    NoNotify { queue: u16 },
    #[error("queue {queue}: cloning its notification eventfd")]
    EventFd {
        queue: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("DRIVER_OK with no ready queue")]
    NoReadyQueue,
    #[error("the device refused to start")]
    Device(#[source] StartError),
    #[error("starting the worker")]
    Host(#[source] std::io::Error),
}

/// Build the ready queues of `configs`, checked against `mem`, each with a
/// clone of its notification eventfd.
pub fn ready_queues(
    configs: &[QueueConfig],
    mem: &GuestMemoryMmap,
    notify: &[EventFd],
) -> Result<Vec<ReadyQueue>, ActivateError> {
    let mut queues = Vec::new();
    for (i, c) in configs.iter().enumerate().filter(|(_, c)| c.ready) {
        // Queue counts come from the device model (a u16 in both
        // transports), so the index fits.
        let queue = i as u16;
        let bad = |source| ActivateError::Queue { queue, source };
        let mut q = Queue::new(c.max_size).map_err(bad)?;
        q.try_set_size(c.size).map_err(bad)?;
        q.try_set_desc_table_address(GuestAddress(c.desc))
            .map_err(bad)?;
        q.try_set_avail_ring_address(GuestAddress(c.avail))
            .map_err(bad)?;
        q.try_set_used_ring_address(GuestAddress(c.used))
            .map_err(bad)?;
        q.set_ready(true);
        if !q.is_valid(mem) {
            return Err(ActivateError::OutsideMemory { queue });
        }
        let notify = notify
            .get(i)
            .ok_or(ActivateError::NoNotify { queue })?
            .try_clone()
            .map_err(|source| ActivateError::EventFd { queue, source })?;
        queues.push(ReadyQueue {
            index: queue,
            queue: q,
            notify,
        });
    }
    if queues.is_empty() {
        return Err(ActivateError::NoReadyQueue);
    }
    Ok(queues)
}

/// A device's worker lifecycle as a transport drives it: started on
/// DRIVER_OK through the `WorkerHost`, stopped on reset, and the
/// NEEDS_RESET flag the worker (or a failed start) raises.
pub struct Activation {
    mem: GuestMemoryMmap,
    notify: Vec<EventFd>,
    worker: Option<u64>,
    needs_reset: Arc<AtomicBool>,
    /// Start failures logged so far (see `MAX_WARNINGS`).
    warned: u32,
}

/// What the control thread calls on a transport after one of its status
/// writes returned `PlatformRequest::Virtio`: start or stop the worker
/// through `host`. Implemented by both transports.
pub trait VirtioLifecycle: Send {
    fn lifecycle(&mut self, change: StatusChange, host: &dyn WorkerHost);
}

impl Activation {
    /// `notify` holds one eventfd per queue, in queue order.
    pub fn new(mem: GuestMemoryMmap, notify: Vec<EventFd>) -> Self {
        Self {
            mem,
            notify,
            worker: None,
            needs_reset: Arc::new(AtomicBool::new(false)),
            warned: 0,
        }
    }

    pub fn notify(&self) -> &[EventFd] {
        &self.notify
    }

    /// Signal queue `q`'s eventfd, for a notification that reached the
    /// transport instead of an ioeventfd; unknown queues are ignored.
    pub fn kick(&self, q: u64) {
        if let Some(e) = usize::try_from(q).ok().and_then(|q| self.notify.get(q)) {
            let _ = e.write(1);
        }
    }

    /// `status` with NEEDS_RESET added when the device needs it.
    pub fn status(&self, status: u8) -> u8 {
        let broken = self.needs_reset.load(Ordering::Acquire);
        status | if broken { NEEDS_RESET } else { 0 }
    }

    /// DRIVER_OK: start `dev`'s worker on the ready queues of `queues`. A
    /// failure is logged and shown to the driver as NEEDS_RESET.
    pub fn start(
        &mut self,
        dev: &mut dyn VirtioDevice,
        queues: &[QueueConfig],
        irq: Arc<dyn VirtioIrq>,
        host: &dyn WorkerHost,
    ) {
        if self.worker.is_some() {
            // A second DRIVER_OK without a reset in between: the running
            // worker already serves the queues.
            return;
        }
        if let Err(e) = self.try_start(dev, queues, irq, host) {
            if self.warned < MAX_WARNINGS {
                self.warned += 1;
                log::warn!("{}: cannot start: {}", dev.name(), ErrorChain(&e));
            }
            self.needs_reset.store(true, Ordering::Release);
        }
    }

    fn try_start(
        &mut self,
        dev: &mut dyn VirtioDevice,
        queues: &[QueueConfig],
        irq: Arc<dyn VirtioIrq>,
        host: &dyn WorkerHost,
    ) -> Result<(), ActivateError> {
        let ctx = StartContext {
            mem: self.mem.clone(),
            queues: ready_queues(queues, &self.mem, &self.notify)?,
            irq,
            needs_reset: self.needs_reset.clone(),
        };
        let worker = dev.activate(ctx).map_err(ActivateError::Device)?;
        let id = host
            .start(dev.name().to_string(), worker)
            .map_err(ActivateError::Host)?;
        self.worker = Some(id);
        Ok(())
    }

    /// Carry out what a status write changed, the same for every
    /// transport (on the control thread): on reset stop the worker, reset
    /// `dev`, then the transport's interrupt state (`reset_irq`); on
    /// DRIVER_OK start the worker on `queues`.
    pub fn apply(
        &mut self,
        change: StatusChange,
        dev: &mut dyn VirtioDevice,
        queues: &[QueueConfig],
        irq: Arc<dyn VirtioIrq>,
        host: &dyn WorkerHost,
        reset_irq: impl FnOnce(),
    ) {
        match change {
            StatusChange::None => {}
            StatusChange::Reset => {
                self.stop(host);
                dev.reset();
                reset_irq();
            }
            StatusChange::Activate => self.start(dev, queues, irq, host),
        }
    }

    /// Reset: stop the worker (if any) and clear NEEDS_RESET.
    pub fn stop(&mut self, host: &dyn WorkerHost) {
        if let Some(id) = self.worker.take() {
            host.stop(id);
        }
        self.needs_reset.store(false, Ordering::Release);
    }

    /// Whether a worker runs now.
    pub fn running(&self) -> bool {
        self.worker.is_some()
    }
}

/// Formats an error with its sources, `a: b: c`, for one log line.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut src = self.0.source();
        while let Some(e) = src {
            write!(f, ": {e}")?;
            src = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testing::FakeDevice;
    use virtio_queue::QueueT;

    #[test]
    fn negotiation_follows_the_spec_order() {
        let mut dev = FakeDevice::new(VIRTIO_F_VERSION_1 | 0b101);
        let mut s = VirtioCommonState::new(&dev);
        assert_eq!(s.set_status(ACKNOWLEDGE, &mut dev), StatusChange::None);
        s.set_driver_features_page(0b1);
        assert_eq!(s.driver_features, 0, "features before DRIVER are ignored");
        s.set_status(ACKNOWLEDGE | DRIVER, &mut dev);
        s.set_driver_features_page(0b100);
        s.driver_features_sel = 1;
        s.set_driver_features_page(1);
        s.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK, &mut dev);
        assert_ne!(s.status & FEATURES_OK, 0);
        assert_eq!(dev.acked, VIRTIO_F_VERSION_1 | 0b100);
        let all = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;
        assert_eq!(s.set_status(all, &mut dev), StatusChange::Activate);
        assert_eq!(s.set_status(0, &mut dev), StatusChange::Reset);
        assert_eq!(s.status, 0);
    }

    #[test]
    fn unoffered_or_legacy_features_keep_features_ok_clear() {
        let mut dev = FakeDevice::new(VIRTIO_F_VERSION_1 | 1);
        let mut s = VirtioCommonState::new(&dev);
        s.set_status(ACKNOWLEDGE | DRIVER, &mut dev);
        s.set_driver_features_page(0b10);
        s.driver_features_sel = 1;
        s.set_driver_features_page(1);
        s.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK, &mut dev);
        assert_eq!(s.status & FEATURES_OK, 0, "bit 1 was not offered");
        let mut s = VirtioCommonState::new(&dev);
        s.set_status(ACKNOWLEDGE | DRIVER, &mut dev);
        s.set_driver_features_page(1);
        s.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK, &mut dev);
        assert_eq!(
            s.status & FEATURES_OK,
            0,
            "no VERSION_1: legacy drivers are refused"
        );
        let change = s.set_status(ACKNOWLEDGE | DRIVER | DRIVER_OK, &mut dev);
        assert_eq!(
            change,
            StatusChange::None,
            "DRIVER_OK without FEATURES_OK starts nothing"
        );
    }

    fn ready(desc: u64, size: u16) -> QueueConfig {
        QueueConfig {
            max_size: 16,
            size,
            ready: true,
            desc,
            avail: 0x2000,
            used: 0x3000,
        }
    }

    #[test]
    fn ready_queues_checks_every_queue() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let fds = vec![EventFd::new(0).unwrap(), EventFd::new(0).unwrap()];
        let idle = QueueConfig::default();
        let qs = ready_queues(&[idle, ready(0x1000, 8)], &mem, &fds).unwrap();
        assert_eq!(qs.len(), 1);
        assert_eq!(qs[0].index, 1);
        assert_eq!(qs[0].queue.size(), 8);
        let err = |c: &[QueueConfig], n: usize| match ready_queues(c, &mem, &fds[..n]) {
            Err(e) => e,
            Ok(_) => panic!("{c:?} accepted"),
        };
        assert!(matches!(err(&[idle], 2), ActivateError::NoReadyQueue));
        assert!(matches!(
            err(&[ready(0xffff_0000, 8)], 2),
            ActivateError::OutsideMemory { queue: 0 }
        ));
        assert!(matches!(
            err(&[ready(0x1000, 6)], 2),
            ActivateError::Queue { queue: 0, .. }
        ));
        assert!(matches!(
            err(&[ready(0x1000, 32)], 2),
            ActivateError::Queue { queue: 0, .. }
        ));
        assert!(matches!(
            err(&[ready(0x1000, 8)], 0),
            ActivateError::NoNotify { queue: 0 }
        ));
    }
}
