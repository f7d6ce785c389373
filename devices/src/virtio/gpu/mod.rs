//! virtio-gpu, 2D only (virtio 1.2, 5.7): a control queue and a cursor
//! queue, one scanout shown on the display `Surface`. The guest-visible
//! device (`GpuDevice`: features, config space) is here; the commands
//! and every check on them in `state`, the queue loop in `worker`, the
//! wire format in `protocol`, the EDID in `edid`.
//!
//! Written here: rust-vmm has no virtio-gpu crate; crosvm's and Cloud
//! Hypervisor's (vhost-user) ones are tied to their own device models
//! and rutabaga/virglrenderer. 2D needs none of that.

pub mod edid;
pub mod protocol;
pub mod state;
#[cfg(test)]
mod tests;
mod worker;

use std::sync::Arc;

use protocol::F_EDID;
use state::GpuState;
use worker::GpuWorker;

use super::{StartContext, StartError, VirtioDevice, Worker, VIRTIO_F_VERSION_1};
use crate::display::Surface;

pub const TYPE_GPU: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_GPU;
pub const QUEUE_SIZE: u16 = 256;
/// QEMU's default `max_hostmem` (256 MiB).
pub const DEFAULT_MAX_HOSTMEM: u64 = 256 << 20;

/// A virtio-gpu device as `-device virtio-gpu-*` describes it.
pub struct GpuConfig {
    /// Device name for threads and logs, e.g. `gpu0`.
    pub name: String,
    pub xres: u32,
    pub yres: u32,
    pub max_hostmem: u64,
    pub surface: Arc<Surface>,
}

pub struct GpuDevice {
    cfg: GpuConfig,
    max_sizes: [u16; 2],
    acked: u64,
    events_read: u32,
}

impl GpuDevice {
    pub fn new(cfg: GpuConfig) -> Self {
        Self {
            cfg,
            max_sizes: [QUEUE_SIZE, QUEUE_SIZE],
            acked: 0,
            events_read: 0,
        }
    }

    fn config_bytes(&self) -> [u8; 16] {
        let mut c = [0u8; 16];
        c[0..4].copy_from_slice(&self.events_read.to_le_bytes());
        // events_clear reads as zero; num_scanouts 1; num_capsets 0.
        c[8..12].copy_from_slice(&1u32.to_le_bytes());
        c
    }
}

impl VirtioDevice for GpuDevice {
    fn device_type(&self) -> u32 {
        TYPE_GPU
    }

    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }

    fn features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | F_EDID
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config_bytes(), offset, data);
    }

    /// Only `events_clear` (offset 4) is writable: it clears bits of
    /// `events_read`.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        if offset == 4 && data.len() == 4 {
            let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
            self.events_read &= !v;
        } else {
            log::debug!("{}: ignoring config write at {offset:#x}", self.cfg.name);
        }
    }

    fn activate(&mut self, ctx: StartContext) -> Result<Box<dyn Worker>, StartError> {
        if ctx.queues.len() != 2 {
            return Err(StartError::Invalid {
                device: self.cfg.name.clone(),
                why: format!("{} queues ready, 2 needed", ctx.queues.len()),
            });
        }
        let state = GpuState::new(
            self.cfg.name.clone(),
            (self.cfg.xres, self.cfg.yres),
            self.cfg.max_hostmem,
            self.acked & F_EDID != 0,
            self.cfg.surface.clone(),
        );
        Ok(Box::new(GpuWorker::new(
            self.cfg.name.clone(),
            ctx.mem,
            ctx.queues,
            ctx.irq,
            ctx.needs_reset,
            state,
        )))
    }

    fn reset(&mut self) {
        self.acked = 0;
        self.events_read = 0;
    }
}
