//! virtio-blk from a drive's config and its image (opened once per
//! process by `Resources`): the device model for one boot.

use std::sync::Arc;
use std::time::Duration;

use casemate_devices::virtio::blk::{
    BlockConfig, BlockDevice, CacheMode, DetectZeroes, EngineChoice, ZeroPolicy,
};
use casemate_devices::virtio::poll::DEFAULT_POLL_MAX;
use casemate_disk::DiskImage;

use crate::config::{AioConfig, CacheConfig, DetectZeroesConfig, DiscardConfig, DriveConfig};

/// The block device for drive `index`.
pub fn block_device(index: usize, d: &DriveConfig, disk: &Arc<dyn DiskImage>) -> BlockDevice {
    let mut dev = BlockDevice::new(BlockConfig {
        name: format!("blk{index}"),
        serial: d.id.clone(),
        disk: disk.clone(),
        read_only: d.read_only,
        cache: match d.cache {
            CacheConfig::Writeback => CacheMode::Writeback,
            CacheConfig::None => CacheMode::None,
            CacheConfig::Writethrough => CacheMode::Writethrough,
            CacheConfig::Unsafe => CacheMode::Unsafe,
        },
        num_queues: d.num_queues,
        zeroes: ZeroPolicy {
            unmap: d.discard == DiscardConfig::Unmap,
            detect_zeroes: match d.detect_zeroes {
                DetectZeroesConfig::Off => DetectZeroes::Off,
                DetectZeroesConfig::On => DetectZeroes::On,
                DetectZeroesConfig::Unmap => DetectZeroes::Unmap,
            },
        },
        poll_max: d.poll_max_ns.map_or(DEFAULT_POLL_MAX, Duration::from_nanos),
    });
    // Without aio= the device picks (and CASEMATE_BLK_ENGINE may override).
    match d.aio {
        None => {}
        Some(AioConfig::Threads) => dev.set_engine(EngineChoice::Threads),
        Some(AioConfig::Native | AioConfig::IoUring) => dev.set_engine(EngineChoice::Uring),
    }
    dev
}
