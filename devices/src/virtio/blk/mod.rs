//! virtio-blk: placeholder
