//! virtio-net (virtio 1.x, 5.1): one receive and one transmit queue, a
//! 12-byte `virtio_net_hdr_v1` in front of every frame, MAC and link
//! status in the configuration space, checksum and TSO offloads both ways
//! and mergeable receive buffers. The guest-visible device (`NetDevice`)
//! is here; the queue loop is `worker`, the host side a `NetBackend`
//! (`backend`): a tap (`tap`), possibly made by QEMU's bridge helper
//! (`bridge`), or passt's user-mode stack (`passt`).
//!
//! Frames go between guest memory and the backend with readv/writev and
//! are never copied or buffered by the VMM; the tap keeps the vnet header
//! format, so the guest's offload metadata passes through untouched and
//! the offloads the guest accepts are handed to the tap (TUNSETOFFLOAD).

pub mod backend;
pub mod bridge;
pub mod ctrl;
mod mq;
pub mod passt;
pub mod tap;
#[cfg(test)]
mod tests;
mod worker;

use std::sync::Arc;

use virtio_bindings::virtio_net as vn;

pub use backend::{Iov, NetBackend};
use worker::NetWorker;

use super::{
    use_event_idx, StartContext, StartError, VirtioDevice, Worker, TYPE_NET, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};

/// Queue size offered for both queues.
pub const QUEUE_SIZE: u16 = 256;
/// `virtio_net_hdr_v1`: with VERSION_1 every frame carries all 12 bytes.
pub const HDR_LEN: usize = std::mem::size_of::<vn::virtio_net_hdr_v1>();
const _: () = assert!(HDR_LEN == 12);

const fn bit(b: u32) -> u64 {
    1 << b
}

/// Features offered besides VERSION_1. The HOST_* ones need nothing from
/// the tap (it takes partial checksums and GSO frames through the vnet
/// header); the GUEST_* ones are passed on with TUNSETOFFLOAD once the
/// guest accepts them.
pub const OFFERED: u64 = bit(vn::VIRTIO_NET_F_MAC)
    | bit(vn::VIRTIO_NET_F_STATUS)
    | bit(vn::VIRTIO_NET_F_MRG_RXBUF)
    | bit(vn::VIRTIO_NET_F_CSUM)
    | bit(vn::VIRTIO_NET_F_GUEST_CSUM)
    | bit(vn::VIRTIO_NET_F_HOST_TSO4)
    | bit(vn::VIRTIO_NET_F_HOST_TSO6)
    | bit(vn::VIRTIO_NET_F_GUEST_TSO4)
    | bit(vn::VIRTIO_NET_F_GUEST_TSO6);

/// What is left of `OFFERED` for a backend that takes only complete
/// frames (passt).
pub const NO_OFFLOADS: u64 =
    bit(vn::VIRTIO_NET_F_MAC) | bit(vn::VIRTIO_NET_F_STATUS) | bit(vn::VIRTIO_NET_F_MRG_RXBUF);

/// The tap offload flags (TUN_F_*) for what the guest accepted: the
/// kernel may then hand us frames with partial checksums or GSO.
pub fn tun_offloads(acked: u64) -> u32 {
    let mut f = 0;
    if acked & bit(vn::VIRTIO_NET_F_GUEST_CSUM) != 0 {
        f |= libc::TUN_F_CSUM;
        // TSO without checksum offload is not a thing the kernel accepts.
        if acked & bit(vn::VIRTIO_NET_F_GUEST_TSO4) != 0 {
            f |= libc::TUN_F_TSO4;
        }
        if acked & bit(vn::VIRTIO_NET_F_GUEST_TSO6) != 0 {
            f |= libc::TUN_F_TSO6;
        }
    }
    f
}

/// A virtio-net device as `-device virtio-net-*` describes it.
pub struct NetConfig {
    /// Device name for threads and logs, e.g. `net0`.
    pub name: String,
    pub mac: [u8; 6],
    pub backend: Arc<dyn NetBackend>,
    /// QEMU's `host_mtu`: offered as VIRTIO_NET_F_MTU, the largest frame
    /// payload the guest should send (68..=65535, checked by the config).
    pub mtu: Option<u16>,
    /// `mq=on`: VIRTIO_NET_F_MQ and the control queue, with one queue pair
    /// for `backend` and one for each of `more` (a multiqueue tap's other
    /// queues).
    pub mq: bool,
    pub more: Vec<Arc<dyn NetBackend>>,
}

/// Features offered with `mq=on`: several pairs, the control queue that
/// selects them, and the RX-mode commands Linux sends on it.
pub const MQ_FEATURES: u64 =
    bit(vn::VIRTIO_NET_F_MQ) | bit(vn::VIRTIO_NET_F_CTRL_VQ) | bit(vn::VIRTIO_NET_F_CTRL_RX);

pub struct NetDevice {
    cfg: NetConfig,
    acked: u64,
    /// Two per pair, plus the control queue with `mq`.
    max_sizes: Vec<u16>,
}

impl NetDevice {
    pub fn new(cfg: NetConfig) -> Self {
        let queues = if cfg.mq { 2 * cfg.pairs() + 1 } else { 2 };
        Self {
            cfg,
            acked: 0,
            max_sizes: vec![QUEUE_SIZE; usize::from(queues)],
        }
    }

    /// `virtio_net_config` up to `mtu`: mac, status (link up), the most
    /// queue pairs (read with VIRTIO_NET_F_MQ), and the MTU (read by the driver only with VIRTIO_NET_F_MTU,
    /// offered when `host_mtu` is set).
    fn config_bytes(&self) -> [u8; 12] {
        let mut c = [0u8; 12];
        c[..6].copy_from_slice(&self.cfg.mac);
        c[6..8].copy_from_slice(&(vn::VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        c[8..10].copy_from_slice(&self.cfg.pairs().to_le_bytes());
        c[10..12].copy_from_slice(&self.cfg.mtu.unwrap_or(1500).to_le_bytes());
        c
    }
}

impl NetConfig {
    /// Queue pairs the device offers.
    pub fn pairs(&self) -> u16 {
        1 + self.more.len() as u16
    }
}

impl NetDevice {
    /// The offloads the guest accepted, to the tap (on its first queue,
    /// which is never detached; the setting is the interface's).
    fn set_offloads(&self) -> Result<(), StartError> {
        let offloads = tun_offloads(self.acked);
        self.cfg
            .backend
            .set_offloads(offloads)
            .map_err(|e| StartError::Invalid {
                device: self.cfg.name.clone(),
                why: format!(
                    "{}: setting offloads {offloads:#x} (TUNSETOFFLOAD): {e}",
                    self.cfg.backend.name()
                ),
            })
    }
}

impl VirtioDevice for NetDevice {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }

    fn features(&self) -> u64 {
        let mut ring = VIRTIO_F_VERSION_1 | VIRTIO_RING_F_EVENT_IDX;
        if self.cfg.mtu.is_some() {
            ring |= bit(vn::VIRTIO_NET_F_MTU);
        }
        if self.cfg.mq {
            ring |= MQ_FEATURES;
        }
        if self.cfg.backend.takes_offloads() {
            ring | OFFERED
        } else {
            ring | (OFFERED & NO_OFFLOADS)
        }
    }

    fn ack_features(&mut self, features: u64) {
        self.acked = features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config_bytes(), offset, data);
    }

    /// The MAC is read-only without VIRTIO_NET_F_CTRL_MAC_ADDR (not
    /// offered); legacy drivers' writes to it are ignored.
    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::debug!("{}: ignoring config write at {offset:#x}", self.cfg.name);
    }

    fn activate(&mut self, mut ctx: StartContext) -> Result<Box<dyn Worker>, StartError> {
        use_event_idx(&mut ctx.queues, self.acked);
        if self.cfg.mq {
            self.set_offloads()?;
            return Ok(Box::new(mq::activate(&self.cfg, self.acked, ctx)?));
        }
        if ctx.queues.len() != 2 {
            return Err(StartError::Invalid {
                device: self.cfg.name.clone(),
                why: format!(
                    "needs its receive and transmit queues, got {}",
                    ctx.queues.len()
                ),
            });
        }
        self.set_offloads()?;
        Ok(Box::new(NetWorker::new(
            self.cfg.name.clone(),
            ctx,
            self.cfg.backend.clone(),
            self.acked,
            self.cfg.mtu,
        )))
    }

    fn reset(&mut self) {
        self.acked = 0;
        // A reset guest takes no offloaded frames until it asks again.
        if let Err(e) = self.cfg.backend.set_offloads(0) {
            log::warn!("{}: clearing offloads on reset: {e}", self.cfg.name);
        }
    }
}
