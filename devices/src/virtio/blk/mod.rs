//! virtio-blk: the guest-visible block device (features, config space) over
//! a `casemate_disk::DiskImage` backend. Request parsing is `request`, the
//! parallel I/O engines `engine`, the queue loop `worker`.
//!
//! Engines: at each activation the device picks io_uring when the image is
//! raw (`DiskImage::raw_file`) and the kernel sets up a ring, and a pool of
//! `IO_THREADS` threads otherwise (qcow2, old kernels, io_uring forbidden);
//! a debug log line names the one chosen. The environment variable
//! `CASEMATE_BLK_ENGINE=threads|uring|auto`, read at each activation,
//! overrides that for benchmarks and tests (`uring` on a disk that cannot
//! do it warns and uses the pool); `BlockDevice::set_engine` does the same
//! from code and wins over the variable.

pub mod engine;
pub mod request;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use casemate_disk::DiskImage;

pub use engine::CacheMode;
pub use engine::{DetectZeroes, EngineChoice, EngineKind, ZeroPolicy};
use engine::{EngineParams, Executor, IoEngine, MAX_REQUEST};
use request::{ID_LEN, SECTOR};
use worker::BlockWorker;

use super::{
    read_config_bytes, use_event_idx, StartContext, StartError, VirtioDevice, Worker, TYPE_BLOCK,
    VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
};
use virtio_queue::QueueT;

pub const F_SIZE_MAX: u64 = 1 << 1;
pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_BLK_SIZE: u64 = 1 << 6;
pub const F_FLUSH: u64 = 1 << 9;
pub const F_MQ: u64 = 1 << 12;
pub const F_DISCARD: u64 = 1 << 13;
pub const F_WRITE_ZEROES: u64 = 1 << 14;

/// Queue size offered per queue.
pub const QUEUE_SIZE: u16 = 256;
/// Segments per request and bytes per segment: 128 x 256 KiB = 32 MiB,
/// the engine's request limit.
const SEG_MAX: u32 = 128;
const SIZE_MAX: u32 = (MAX_REQUEST / SEG_MAX as u64) as u32;
/// Discard and write-zeroes: at most 32 MiB per segment, 16 segments.
const MAX_DISCARD_SECTORS: u32 = (32 << 20) / SECTOR as u32;
const MAX_DISCARD_SEG: u32 = 16;
/// I/O threads per device: enough to keep a queue depth of 32 busy on this
/// class of host without oversubscribing it.
const IO_THREADS: usize = 4;

/// A block device as `-drive`/`-device` describe it.
pub struct BlockConfig {
    /// Device name for threads and logs, e.g. `blk0`.
    pub name: String,
    /// The serial the guest reads through GET_ID (at most 20 bytes).
    pub serial: String,
    pub disk: Arc<dyn DiskImage>,
    pub read_only: bool,
    pub cache: CacheMode,
    pub num_queues: u16,
    /// `discard=` and `detect-zeroes=`.
    pub zeroes: ZeroPolicy,
    /// How long the worker polls for the guest's next request before it
    /// sleeps (`virtio::poll`); zero never polls.
    pub poll_max: Duration,
}

pub struct BlockDevice {
    cfg: BlockConfig,
    max_sizes: Vec<u16>,
    acked: u64,
    /// Set from code; `None` reads `CASEMATE_BLK_ENGINE` at activation.
    engine_choice: Option<EngineChoice>,
    engine_kind: Option<EngineKind>,
}

impl BlockDevice {
    pub fn new(cfg: BlockConfig) -> Self {
        let n = cfg.num_queues.max(1);
        Self {
            max_sizes: vec![QUEUE_SIZE; n.into()],
            cfg,
            acked: 0,
            engine_choice: None,
            engine_kind: None,
        }
    }

    /// Force an engine for the next activations (tests, benchmarks); this
    /// wins over `CASEMATE_BLK_ENGINE`.
    pub fn set_engine(&mut self, choice: EngineChoice) {
        self.engine_choice = Some(choice);
    }

    /// The engine the last activation started.
    pub fn engine_kind(&self) -> Option<EngineKind> {
        self.engine_kind
    }

    fn config_space(&self) -> Vec<u8> {
        let mut c = vec![0u8; 60];
        let put = |c: &mut Vec<u8>, at: usize, v: &[u8]| c[at..at + v.len()].copy_from_slice(v);
        put(
            &mut c,
            0,
            &(self.cfg.disk.virtual_size() / SECTOR).to_le_bytes(),
        );
        put(&mut c, 8, &SIZE_MAX.to_le_bytes());
        put(&mut c, 12, &SEG_MAX.to_le_bytes());
        put(&mut c, 20, &(SECTOR as u32).to_le_bytes());
        c[32] = u8::from(self.cfg.cache != CacheMode::Writethrough);
        put(&mut c, 34, &self.cfg.num_queues.max(1).to_le_bytes());
        put(&mut c, 36, &MAX_DISCARD_SECTORS.to_le_bytes());
        put(&mut c, 40, &MAX_DISCARD_SEG.to_le_bytes());
        put(&mut c, 44, &1u32.to_le_bytes());
        put(&mut c, 48, &MAX_DISCARD_SECTORS.to_le_bytes());
        put(&mut c, 52, &MAX_DISCARD_SEG.to_le_bytes());
        c[56] = 1;
        c
    }
}

impl VirtioDevice for BlockDevice {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }

    fn features(&self) -> u64 {
        let mut f = VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_EVENT_IDX
            | F_SIZE_MAX
            | F_SEG_MAX
            | F_BLK_SIZE
            | F_FLUSH;
        if self.cfg.read_only {
            f |= F_RO;
        } else {
            f |= F_DISCARD | F_WRITE_ZEROES;
        }
        if self.cfg.num_queues > 1 {
            f |= F_MQ;
        }
        f
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features & self.features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space(), offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        // Only `writeback` is writable in the spec, and only with
        // CONFIG_WCE, which is not offered: ignore.
        log::debug!("{}: ignoring config write at {offset:#x}", self.cfg.name);
    }

    fn activate(&mut self, mut ctx: StartContext) -> Result<Box<dyn Worker>, StartError> {
        // The worker already re-checks each ring after enabling
        // notifications (`serve_chunks`), as event indexes need.
        use_event_idx(&mut ctx.queues, self.acked);
        let mut id = [0u8; ID_LEN];
        let serial = self.cfg.serial.as_bytes();
        id[..serial.len().min(ID_LEN)].copy_from_slice(&serial[..serial.len().min(ID_LEN)]);
        let exec = Arc::new(Executor {
            disk: self.cfg.disk.clone(),
            mem: ctx.mem.clone(),
            cache: self.cfg.cache,
            read_only: self.cfg.read_only,
            zeroes: self.cfg.zeroes,
            id,
            name: self.cfg.name.clone(),
        });
        let params = EngineParams {
            choice: self.engine_choice.unwrap_or_else(EngineChoice::from_env),
            threads: IO_THREADS,
            max_in_flight: ctx.queues.iter().map(|q| usize::from(q.queue.size())).sum(),
        };
        let engine = IoEngine::start(exec, &params).map_err(|source| StartError::EventFd {
            device: self.cfg.name.clone(),
            source,
        })?;
        self.engine_kind = Some(engine.kind());
        let capacity = self.cfg.disk.virtual_size();
        let worker = BlockWorker::new(self.cfg.name.clone(), ctx, capacity, engine);
        Ok(Box::new(worker.with_poll_max(self.cfg.poll_max)))
    }

    fn reset(&mut self) {
        self.acked = 0;
    }
}

#[cfg(test)]
mod tests;
