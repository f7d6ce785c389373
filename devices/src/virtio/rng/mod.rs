//! virtio-rng (entropy device, virtio 1.x 5.4): one request queue whose
//! buffers the device fills with random bytes. The guest-visible device
//! (`RngDevice`) is here; the queue loop and rate limit are `worker`, the
//! host source of bytes `source`.
//!
//! Written here: Firecracker's and Cloud Hypervisor's entropy devices are
//! not published as crates. The rate limit follows QEMU's `max-bytes` per
//! `period`: once a period's budget is spent, requests wait in the ring
//! until the next period starts (a timerfd the worker watches).

pub mod source;
#[cfg(test)]
mod tests;
mod worker;

use std::sync::Arc;
use std::time::Duration;

pub use source::{EntropySource, RngSource};
use worker::RngWorker;

use super::{StartContext, StartError, VirtioDevice, Worker, TYPE_RNG, VIRTIO_F_VERSION_1};

/// Queue size offered.
pub const QUEUE_SIZE: u16 = 256;

/// QEMU's `max-bytes` per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub bytes: u64,
    pub period: Duration,
}

/// A virtio-rng device as `-device virtio-rng-*` describes it.
pub struct RngConfig {
    /// Device name for threads and logs, e.g. `rng0`.
    pub name: String,
    pub source: Arc<dyn EntropySource>,
    pub limit: Option<RateLimit>,
}

pub struct RngDevice {
    cfg: RngConfig,
    max_sizes: [u16; 1],
}

impl RngDevice {
    pub fn new(cfg: RngConfig) -> Self {
        Self {
            cfg,
            max_sizes: [QUEUE_SIZE],
        }
    }
}

impl VirtioDevice for RngDevice {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }

    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn ack_features(&mut self, _features: u64) {}

    /// virtio-rng has no configuration space.
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::debug!("{}: ignoring config write at {offset:#x}", self.cfg.name);
    }

    fn activate(&mut self, ctx: StartContext) -> Result<Box<dyn Worker>, StartError> {
        let w = RngWorker::new(
            self.cfg.name.clone(),
            ctx,
            self.cfg.source.clone(),
            self.cfg.limit,
        )
        .map_err(|source| StartError::EventFd {
            device: self.cfg.name.clone(),
            source,
        })?;
        Ok(Box::new(w))
    }

    fn reset(&mut self) {}
}
