//! virtio-blk from a drive's config and its image (opened once per
//! process by `Resources`): the device model for one boot.

use std::sync::Arc;

use casemate_devices::virtio::blk::{BlockConfig, BlockDevice, CacheMode};
use casemate_disk::DiskImage;

use crate::config::{CacheConfig, DriveConfig};

/// The block device for drive `index`.
pub fn block_device(index: usize, d: &DriveConfig, disk: &Arc<dyn DiskImage>) -> BlockDevice {
    BlockDevice::new(BlockConfig {
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
    })
}
