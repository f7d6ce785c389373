//! The virtio-net control queue (virtio 1.x, 5.1.6.5), offered with
//! multiqueue: each chain is a `virtio_net_ctrl_hdr` (class, command) and
//! its data, read by the device, then one device-writable `ack` byte.
//!
//! Answered here: MQ VQ_PAIRS_SET (the pairs the driver uses; applied
//! through the caller, which attaches and detaches tap queues), and the
//! RX-mode and MAC-filter commands that come with VIRTIO_NET_F_CTRL_RX
//! (PROMISC, ALLMULTI, MAC_TABLE_SET), which are checked and acknowledged:
//! a tap hands the guest every frame for the interface, and the guest's
//! own stack drops what it did not ask for. Everything else (classes or
//! commands whose feature is not offered, wrong lengths) gets
//! VIRTIO_NET_ERR; a chain too malformed to answer (no ack byte, outside
//! RAM, a loop) is returned with length 0. Either way the device goes on.

use virtio_bindings::virtio_net as vn;
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::virtio::{ReadyQueue, VirtioIrq, WorkerError};

/// The longest command read: a MAC table of a few thousand addresses.
/// Longer ones are refused (VIRTIO_NET_ERR), never buffered.
const MAX_CMD: usize = 64 * 1024;
/// Refused commands logged per device.
const MAX_LOGGED: u32 = 8;

const OK: u8 = vn::VIRTIO_NET_OK as u8;
const ERR: u8 = vn::VIRTIO_NET_ERR as u8;

/// What an accepted command asks of the device beyond its ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Use this many queue pairs from now on.
    Pairs(u16),
}

fn has(acked: u64, bit: u32) -> bool {
    acked & (1u64 << bit) != 0
}

/// The answer to one command: `Ok(effect)` for VIRTIO_NET_OK, `Err(why)`
/// for VIRTIO_NET_ERR. `max_pairs` is how many pairs the driver made
/// ready.
pub fn answer(
    class: u8,
    cmd: u8,
    data: &[u8],
    acked: u64,
    max_pairs: u16,
) -> Result<Effect, &'static str> {
    let (class, cmd) = (u32::from(class), u32::from(cmd));
    match class {
        vn::VIRTIO_NET_CTRL_RX if has(acked, vn::VIRTIO_NET_F_CTRL_RX) => match cmd {
            vn::VIRTIO_NET_CTRL_RX_PROMISC | vn::VIRTIO_NET_CTRL_RX_ALLMULTI => {
                if data.len() == 1 && data[0] <= 1 {
                    Ok(Effect::None)
                } else {
                    Err("an RX mode command takes one byte, 0 or 1")
                }
            }
            _ => Err("RX mode command not offered (no VIRTIO_NET_F_CTRL_RX_EXTRA)"),
        },
        vn::VIRTIO_NET_CTRL_MAC if has(acked, vn::VIRTIO_NET_F_CTRL_RX) => match cmd {
            vn::VIRTIO_NET_CTRL_MAC_TABLE_SET => mac_tables(data).map(|()| Effect::None),
            _ => Err("MAC command not offered (no VIRTIO_NET_F_CTRL_MAC_ADDR)"),
        },
        vn::VIRTIO_NET_CTRL_MQ if has(acked, vn::VIRTIO_NET_F_MQ) => match cmd {
            vn::VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET => {
                let n = match data {
                    [a, b] => u16::from_le_bytes([*a, *b]),
                    _ => return Err("VQ_PAIRS_SET takes a 16-bit count"),
                };
                if (1..=max_pairs).contains(&n) {
                    Ok(Effect::Pairs(n))
                } else {
                    Err("VQ_PAIRS_SET count outside the pairs the driver set up")
                }
            }
            _ => Err("MQ command not offered (no RSS or hash report)"),
        },
        _ => Err("command class not offered"),
    }
}

/// MAC_TABLE_SET: a unicast and a multicast table, each a 32-bit count
/// and that many 6-byte addresses, filling the data exactly.
fn mac_tables(mut data: &[u8]) -> Result<(), &'static str> {
    for _ in 0..2 {
        let Some((n, rest)) = data.split_first_chunk::<4>() else {
            return Err("MAC table shorter than its count");
        };
        let len = (u32::from_le_bytes(*n) as usize)
            .checked_mul(6)
            .filter(|&l| l <= rest.len())
            .ok_or("MAC table shorter than its entries")?;
        data = &rest[len..];
    }
    if data.is_empty() {
        Ok(())
    } else {
        Err("bytes after the MAC tables")
    }
}

/// The control queue and what it needs to answer.
pub struct Ctrl {
    pub q: ReadyQueue,
    acked: u64,
    logged: u32,
    /// Reused for each command's bytes.
    buf: Vec<u8>,
}

/// A chain's command bytes and where its ack goes.
enum Parsed {
    Cmd {
        ack: GuestAddress,
    },
    /// No writable byte, outside RAM, a loop, or too long to read: the
    /// ack (if there is somewhere to put it) is ERR.
    Bad {
        ack: Option<GuestAddress>,
        why: &'static str,
    },
}

impl Ctrl {
    pub fn new(q: ReadyQueue, acked: u64) -> Self {
        Self {
            q,
            acked,
            logged: 0,
            buf: Vec::new(),
        }
    }

    /// Answer every command posted; `apply` carries out a pair count (false:
    /// it failed, the command gets VIRTIO_NET_ERR).
    pub fn process(
        &mut self,
        name: &str,
        mem: &GuestMemoryMmap,
        irq: &dyn VirtioIrq,
        max_pairs: u16,
        apply: &mut dyn FnMut(u16) -> bool,
    ) -> Result<(), WorkerError> {
        let qerr = |index, source| WorkerError::Queue {
            device: name.to_string(),
            queue: index,
            source,
        };
        let index = self.q.index;
        let mut any = false;
        loop {
            let mut done = false;
            while let Some(chain) = self.q.queue.pop_descriptor_chain(mem) {
                let head = chain.head_index();
                let (ack, status) = match self.read(chain, mem) {
                    Parsed::Cmd { ack } => {
                        let r = match self.buf.as_slice() {
                            [class, cmd, data @ ..] => {
                                answer(*class, *cmd, data, self.acked, max_pairs)
                            }
                            _ => Err("command shorter than its class and command bytes"),
                        };
                        let status = match r {
                            Ok(Effect::None) => OK,
                            Ok(Effect::Pairs(n)) if apply(n) => OK,
                            Ok(Effect::Pairs(_)) => ERR,
                            Err(why) => {
                                self.log(name, why);
                                ERR
                            }
                        };
                        (Some(ack), status)
                    }
                    Parsed::Bad { ack, why } => {
                        self.log(name, why);
                        (ack, ERR)
                    }
                };
                let len = match ack {
                    Some(at) if mem.write_obj(status, at).is_ok() => 1,
                    _ => 0,
                };
                self.q
                    .queue
                    .add_used(mem, head, len)
                    .map_err(|e| qerr(index, e))?;
                done = true;
                any = true;
            }
            // As for the data queues: re-arm (avail_event with event
            // indexes) and look again.
            if !self
                .q
                .queue
                .enable_notification(mem)
                .map_err(|e| qerr(index, e))?
                || !done
            {
                break;
            }
        }
        if any
            && self
                .q
                .queue
                .needs_notification(mem)
                .map_err(|e| qerr(index, e))?
        {
            irq.signal_used(index).map_err(|source| WorkerError::Irq {
                device: name.to_string(),
                source,
            })?;
        }
        Ok(())
    }

    fn log(&mut self, name: &str, why: &str) {
        if self.logged < MAX_LOGGED {
            self.logged += 1;
            log::warn!("{name}: control command refused: {why}");
        }
    }

    /// Read the chain's device-readable bytes into `buf`; the ack is the
    /// first byte of the first writable buffer, which must come last.
    fn read(
        &mut self,
        chain: virtio_queue::DescriptorChain<&GuestMemoryMmap>,
        mem: &GuestMemoryMmap,
    ) -> Parsed {
        self.buf.clear();
        let mut ack = None;
        let mut last_has_next = false;
        for d in chain {
            last_has_next = d.has_next();
            if d.is_write_only() {
                if ack.is_none() && d.len() > 0 {
                    ack = Some(d.addr());
                }
                continue;
            }
            if ack.is_some() {
                return Parsed::Bad {
                    ack,
                    why: "readable buffer after the ack",
                };
            }
            let len = d.len() as usize;
            if self.buf.len() + len > MAX_CMD {
                return Parsed::Bad {
                    ack: None,
                    why: "command longer than 64 KiB",
                };
            }
            let at = self.buf.len();
            self.buf.resize(at + len, 0);
            if mem.read_slice(&mut self.buf[at..], d.addr()).is_err() {
                return Parsed::Bad {
                    ack: None,
                    why: "command outside guest memory",
                };
            }
        }
        if last_has_next {
            return Parsed::Bad {
                ack: None,
                why: "descriptor chain loops or exceeds the queue size",
            };
        }
        match ack {
            Some(ack) => Parsed::Cmd { ack },
            None => Parsed::Bad {
                ack: None,
                why: "no writable ack byte",
            },
        }
    }
}
