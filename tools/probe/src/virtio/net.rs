//! virtio-net (type 1) on either transport: VERSION_1, MAC and MTU only
//! (no offloads, no mergeable buffers; the MTU is only reported), so every frame, both ways, is the
//! 12-byte `virtio_net_hdr_v1` (zeroed when sending) and the Ethernet
//! frame in one buffer. Receive queue 0 keeps `RX_BUFS` device-writable
//! buffers of `BUF` bytes posted; transmit queue 1 sends from its own
//! slots, reclaimed as the device returns them.

use super::queue::{Buf, Queue, RingMem};
use super::{Dma, Transport};

pub const F_CSUM: u64 = 1;
pub const F_MTU: u64 = 1 << 3;
pub const F_HOST_TSO4: u64 = 1 << 11;
pub const F_MAC: u64 = 1 << 5;
pub const HDR: usize = 12;
pub const BUF: usize = 2048;
pub const RX_BUFS: usize = 32;
pub const TX_BUFS: usize = 32;
/// `tx_slot` of a chain sent from the caller's memory (`send_shared`).
const SHARED: u8 = 0xff;

static RX_RING: RingMem = Dma::new();
static TX_RING: RingMem = Dma::new();
static RX_MEM: Dma<{ RX_BUFS * BUF }> = Dma::new();
static TX_MEM: Dma<{ TX_BUFS * BUF }> = Dma::new();

pub struct Net {
    pub t: Transport,
    pub rx: Queue,
    pub tx: Queue,
    pub features: u64,
    pub mac: [u8; 6],
    /// The device's MTU with VIRTIO_NET_F_MTU, else 0.
    pub mtu: u16,
    /// Buffer slot of each descriptor head in flight.
    rx_slot: [u8; 256],
    tx_slot: [u8; 256],
    tx_free: [u8; TX_BUFS],
    tx_nfree: usize,
}

fn rx_addr(slot: usize) -> u64 {
    RX_MEM.addr() + (slot * BUF) as u64
}

fn tx_addr(slot: usize) -> u64 {
    TX_MEM.addr() + (slot * BUF) as u64
}

impl Net {
    /// Reset, features, both queues, DRIVER_OK, then (with `post_rx`)
    /// every receive buffer posted (one notification).
    pub fn open(t: Transport, post_rx: bool) -> Result<Net, &'static str> {
        Net::open_with(t, post_rx, 0)
    }

    /// As `open`, asking for `extra` features too (net-bench's TSO row:
    /// CSUM and HOST_TSO4).
    pub fn open_with(t: Transport, post_rx: bool, extra: u64) -> Result<Net, &'static str> {
        let (_, features) = t.start(F_MAC | F_MTU | extra)?;
        let rx = Queue::new_in(&t, 0, RX_BUFS as u16, &RX_RING)?;
        let tx = Queue::new_in(&t, 1, TX_BUFS as u16, &TX_RING)?;
        let mut mac = [0u8; 6];
        if features & F_MAC != 0 {
            let lo = t.config_read32(0).to_le_bytes();
            let hi = t.config_read32(4).to_le_bytes();
            mac[..4].copy_from_slice(&lo);
            mac[4..].copy_from_slice(&hi[..2]);
        } else {
            mac = [0x52, 0x54, 0, 0x12, 0x34, 0x99];
        }
        let mtu = if features & F_MTU != 0 { (t.config_read32(8) >> 16) as u16 } else { 0 };
        t.driver_ok();
        let mut tx_free = [0u8; TX_BUFS];
        for (i, f) in tx_free.iter_mut().enumerate() {
            *f = i as u8;
        }
        let mut n = Net {
            t,
            rx,
            tx,
            features,
            mac,
            mtu,
            rx_slot: [0; 256],
            tx_slot: [0; 256],
            tx_free,
            tx_nfree: TX_BUFS,
        };
        if post_rx {
            n.post_all_rx()?;
        }
        Ok(n)
    }

    /// Posts every receive buffer (one notification).
    pub fn post_all_rx(&mut self) -> Result<(), &'static str> {
        for slot in 0..(self.rx.size as usize).min(RX_BUFS) {
            self.post_rx(slot)?;
        }
        self.rx.kick();
        Ok(())
    }

    fn post_rx(&mut self, slot: usize) -> Result<(), &'static str> {
        let head = self
            .rx
            .submit(&[Buf { addr: rx_addr(slot), len: BUF as u32, write: true }])
            .ok_or("net-queue-full")?;
        self.rx_slot[head as usize] = slot as u8;
        Ok(())
    }

    /// The next received frame (without the header), handed to `f`; the
    /// buffer is posted again afterwards. False when none is waiting.
    pub fn recv(&mut self, f: &mut dyn FnMut(&[u8])) -> bool {
        let Some(c) = self.rx.poll() else { return false };
        if !c.known {
            return true;
        }
        let slot = self.rx_slot[c.head as usize] as usize;
        let len = (c.len as usize).min(BUF);
        if len > HDR {
            // SAFETY: the slot is the probe's receive buffer, which the
            // device returned (it no longer writes it); len is capped at it.
            let frame = unsafe { core::slice::from_raw_parts((rx_addr(slot) + HDR as u64) as *const u8, len - HDR) };
            f(frame);
        }
        let _ = self.post_rx(slot);
        self.rx.kick();
        true
    }

    /// Queues a frame the caller keeps in its own memory, which the device
    /// only reads (net-bench sends one 64 KiB TSO frame many times): no
    /// transmit slot is taken. Err when the ring is full.
    pub fn send_shared(&mut self, addr: u64, len: u32) -> Result<(), &'static str> {
        self.reclaim();
        let head = self.tx.submit(&[Buf { addr, len, write: false }]).ok_or("net-tx-full")?;
        self.tx_slot[head as usize] = SHARED;
        self.tx.kick();
        Ok(())
    }

    /// Takes back transmit slots the device is done with.
    fn reclaim(&mut self) {
        while let Some(c) = self.tx.poll() {
            if c.known && self.tx_slot[c.head as usize] != SHARED {
                self.tx_free[self.tx_nfree] = self.tx_slot[c.head as usize];
                self.tx_nfree += 1;
            }
        }
    }

    /// Sends a frame that `fill` writes into the buffer it is given
    /// (returning its length). Err when no slot is free.
    pub fn send(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> Result<(), &'static str> {
        self.reclaim();
        if self.tx_nfree == 0 {
            return Err("net-tx-full");
        }
        self.tx_nfree -= 1;
        let slot = self.tx_free[self.tx_nfree] as usize;
        // SAFETY: a free transmit slot: the device does not own it.
        let buf = unsafe { core::slice::from_raw_parts_mut(tx_addr(slot) as *mut u8, BUF) };
        buf[..HDR].fill(0);
        let n = fill(&mut buf[HDR..]).min(BUF - HDR);
        let head = self
            .tx
            .submit(&[Buf { addr: tx_addr(slot), len: (HDR + n) as u32, write: false }])
            .ok_or("net-queue-full")?;
        self.tx_slot[head as usize] = slot as u8;
        self.tx.kick();
        Ok(())
    }
}
