//! The net device and worker without KVM or a tap: anonymous guest memory,
//! rings written by hand (so chains can be posted after the worker
//! started), a fake backend holding frames in memory, a counting irq.

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_net as vn;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::worker::NetWorker;
use super::*;
use crate::virtio::ReadyQueue;

type Irqs = crate::virtio::testing::CountingVirtioIrq;

/// Frames waiting to be read, frames sent, the offloads last set.
struct Fake {
    inbox: Mutex<VecDeque<Vec<u8>>>,
    sent: Mutex<Vec<Vec<u8>>>,
    offloads: AtomicU32,
    fd: EventFd,
    /// Attached (multiqueue), as `set_enabled` left it.
    enabled: AtomicBool,
}

impl Fake {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            inbox: Mutex::default(),
            sent: Mutex::default(),
            offloads: AtomicU32::new(u32::MAX),
            fd: EventFd::new(EFD_NONBLOCK).unwrap(),
            enabled: AtomicBool::new(true),
        })
    }
}

impl NetBackend for Fake {
    fn name(&self) -> &str {
        "fake-tap"
    }
    unsafe fn readv(&self, iov: &[Iov]) -> std::io::Result<usize> {
        let Some(f) = self.inbox.lock().unwrap().pop_front() else {
            return Err(std::io::ErrorKind::WouldBlock.into());
        };
        let room: usize = iov.iter().map(|v| v.len).sum();
        if room < f.len() {
            // As the tap: the frame is dropped with EFAULT.
            return Err(std::io::Error::from_raw_os_error(libc::EFAULT));
        }
        let mut at = 0;
        for v in iov {
            let n = v.len.min(f.len() - at);
            // SAFETY: the caller guarantees `v` is writable for its length.
            unsafe { std::ptr::copy_nonoverlapping(f[at..].as_ptr(), v.base as *mut u8, n) };
            at += n;
        }
        Ok(f.len())
    }
    unsafe fn writev(&self, iov: &[Iov]) -> std::io::Result<usize> {
        let mut f = Vec::new();
        for v in iov {
            // SAFETY: the caller guarantees `v` is readable for its length.
            f.extend_from_slice(unsafe { std::slice::from_raw_parts(v.base as *const u8, v.len) });
        }
        let n = f.len();
        self.sent.lock().unwrap().push(f);
        Ok(n)
    }
    fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
    fn set_offloads(&self, flags: u32) -> std::io::Result<()> {
        self.offloads.store(flags, Ordering::SeqCst);
        Ok(())
    }
    fn set_enabled(&self, on: bool) -> std::io::Result<()> {
        self.enabled.store(on, Ordering::SeqCst);
        Ok(())
    }
}

const SIZE: u16 = 16;

/// A split ring the test drives as a guest driver would.
struct Ring {
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    next_desc: u16,
    avail_idx: u16,
}

impl Ring {
    /// Post a chain of (addr, len, device-writable); `loop_back` makes
    /// the last descriptor point at the head.
    fn post_raw(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: &[(u64, u32, bool)],
        loop_back: bool,
    ) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, w)) in chain.iter().enumerate() {
            let idx = self.next_desc;
            self.next_desc += 1;
            let last = i + 1 == chain.len();
            let mut flags = if w { 2u16 } else { 0 };
            let next = if !last {
                flags |= 1;
                idx + 1
            } else if loop_back {
                flags |= 1;
                head
            } else {
                0
            };
            let at = self.desc.0 + 16 * u64::from(idx);
            mem.write_obj(addr, GuestAddress(at)).unwrap();
            mem.write_obj(len, GuestAddress(at + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
            mem.write_obj(next, GuestAddress(at + 14)).unwrap();
        }
        let slot = self.avail.0 + 4 + 2 * u64::from(self.avail_idx % SIZE);
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx += 1;
        mem.write_obj(self.avail_idx, GuestAddress(self.avail.0 + 2))
            .unwrap();
        head
    }
    fn post(&mut self, mem: &GuestMemoryMmap, chain: &[(u64, u32, bool)]) -> u16 {
        self.post_raw(mem, chain, false)
    }
    fn used_idx(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.used.0 + 2)).unwrap()
    }
    /// (id, len) of used element `i`.
    fn used(&self, mem: &GuestMemoryMmap, i: u64) -> (u32, u32) {
        let at = self.used.0 + 4 + 8 * i;
        (
            mem.read_obj(GuestAddress(at)).unwrap(),
            mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }
}

struct Rig {
    mem: GuestMemoryMmap,
    rx: Ring,
    tx: Ring,
    irqs: Arc<Irqs>,
    fake: Arc<Fake>,
}

/// A split ring at `at`, laid out by hand: virtio-queue 0.18's
/// `MockSplitQueue` puts the used ring inside the available ring (its
/// `end()` counts entries, not bytes), which the event-index fields would
/// collide with.
fn queue_at(_mem: &GuestMemoryMmap, at: u64) -> (Queue, Ring) {
    use virtio_queue::QueueT;
    let ring = Ring {
        desc: GuestAddress(at),
        avail: GuestAddress(at + 16 * u64::from(SIZE)),
        used: GuestAddress(at + 16 * u64::from(SIZE) + 0x100),
        next_desc: 0,
        avail_idx: 0,
    };
    let mut q = Queue::new(SIZE).unwrap();
    q.try_set_desc_table_address(ring.desc).unwrap();
    q.try_set_avail_ring_address(ring.avail).unwrap();
    q.try_set_used_ring_address(ring.used).unwrap();
    q.set_ready(true);
    (q, ring)
}

fn rig() -> (Rig, StartContext) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let (rxq, rx) = queue_at(&mem, 0);
    let (txq, tx) = queue_at(&mem, 0x4000);
    let irqs = Arc::new(Irqs::default());
    let ctx = StartContext {
        mem: mem.clone(),
        queues: vec![
            ReadyQueue {
                index: 0,
                queue: rxq,
                notify: EventFd::new(EFD_NONBLOCK).unwrap(),
            },
            ReadyQueue {
                index: 1,
                queue: txq,
                notify: EventFd::new(EFD_NONBLOCK).unwrap(),
            },
        ],
        irq: irqs.clone(),
        needs_reset: Arc::new(AtomicBool::new(false)),
    };
    let r = Rig {
        mem,
        rx,
        tx,
        irqs,
        fake: Fake::new(),
    };
    (r, ctx)
}

fn worker(acked: u64) -> (Rig, NetWorker) {
    let (r, ctx) = rig();
    let w = NetWorker::new("net-test".into(), ctx, r.fake.clone(), acked, None);
    (r, w)
}

const MRG: u64 = 1 << vn::VIRTIO_NET_F_MRG_RXBUF;
const RX: u32 = 0;
const TX: u32 = 1;
const TAP: u32 = 2;

/// A frame as the tap hands it over: 12-byte header, then `len` bytes.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![0u8; HDR_LEN];
    f.extend((0..len).map(|i| (i as u8).wrapping_add(seed)));
    f
}

#[test]
fn tx_writes_header_and_frame_from_guest_memory() {
    let (mut r, mut w) = worker(0);
    let data = frame(60, 7);
    r.mem
        .write_slice(&data[..HDR_LEN], GuestAddress(0x10000))
        .unwrap();
    r.mem
        .write_slice(&data[HDR_LEN..], GuestAddress(0x10100))
        .unwrap();
    let head =
        r.tx.post(&r.mem, &[(0x10000, 12, false), (0x10100, 60, false)]);
    w.on_event(TX).unwrap();
    assert_eq!(*r.fake.sent.lock().unwrap(), vec![data]);
    assert_eq!(r.tx.used_idx(&r.mem), 1);
    assert_eq!(r.tx.used(&r.mem, 0), (u32::from(head), 0));
    assert_eq!(r.irqs.0.load(Ordering::SeqCst), 1);
    assert_eq!(w.stats.tx_frames, 1);
}

#[test]
fn malformed_transmit_chains_fail_alone() {
    let (mut r, mut w) = worker(0);
    r.tx.post(&r.mem, &[(0x10000, 64, true)]); // device-writable
    r.tx.post(&r.mem, &[(0xfff_0000, 64, false)]); // outside RAM
    r.tx.post(&r.mem, &[(0x10000, 8, false)]); // shorter than the header
    r.tx.post_raw(&r.mem, &[(0x10000, 12, false), (0x10100, 60, false)], true); // loop
    r.tx.post(&r.mem, &[(0x10000, 72, false)]); // a good one after them
    w.on_event(TX).unwrap();
    assert_eq!(r.tx.used_idx(&r.mem), 5, "every chain returned");
    assert_eq!(w.stats.bad_chains, 4);
    assert_eq!(r.fake.sent.lock().unwrap().len(), 1);
    assert_eq!(r.fake.sent.lock().unwrap()[0].len(), 72);
}

#[test]
fn rx_fills_one_buffer_and_sets_num_buffers() {
    let (mut r, mut w) = worker(0);
    let head = r.rx.post(&r.mem, &[(0x20000, 2048, true)]);
    let f = frame(100, 3);
    r.fake.inbox.lock().unwrap().push_back(f.clone());
    w.on_event(TAP).unwrap();
    assert_eq!(r.rx.used(&r.mem, 0), (u32::from(head), 112));
    let mut got = vec![0u8; 112];
    r.mem.read_slice(&mut got, GuestAddress(0x20000)).unwrap();
    let nb: u16 = r.mem.read_obj(GuestAddress(0x20000 + 10)).unwrap();
    assert_eq!(nb, 1);
    assert_eq!(got[HDR_LEN..], f[HDR_LEN..]);
    assert_eq!(w.stats.rx_frames, 1);
}

#[test]
fn mergeable_buffers_spread_a_frame_and_count_them() {
    let (mut r, mut w) = worker(MRG);
    for i in 0..4 {
        r.rx.post(&r.mem, &[(0x20000 + 0x100 * i, 64, true)]);
    }
    let f = frame(138, 9); // 150 bytes: 64 + 64 + 22
    r.fake.inbox.lock().unwrap().push_back(f.clone());
    w.on_event(TAP).unwrap();
    assert_eq!(r.rx.used_idx(&r.mem), 3);
    let lens: Vec<u32> = (0..3).map(|i| r.rx.used(&r.mem, i).1).collect();
    assert_eq!(lens, [64, 64, 22]);
    let nb: u16 = r.mem.read_obj(GuestAddress(0x20000 + 10)).unwrap();
    assert_eq!(nb, 3);
    let mut got = vec![0u8; 22];
    r.mem.read_slice(&mut got, GuestAddress(0x20200)).unwrap();
    assert_eq!(got, f[128..]);
    // The fourth chain went back to the ring and takes the next frame.
    r.fake.inbox.lock().unwrap().push_back(frame(20, 1));
    w.on_event(TAP).unwrap();
    assert_eq!(r.rx.used_idx(&r.mem), 4);
    assert_eq!(r.rx.used(&r.mem, 3), (3, 32));
}

#[test]
fn no_receive_buffers_stops_reading_until_the_guest_posts_some() {
    let (mut r, mut w) = worker(0);
    let fd = r.fake.fd.as_raw_fd();
    for i in 0..3 {
        r.fake.inbox.lock().unwrap().push_back(frame(50, i));
    }
    w.on_event(TAP).unwrap();
    assert_eq!(w.watch_changes(), vec![(fd, TAP, false)], "unwatched");
    assert_eq!(
        r.fake.inbox.lock().unwrap().len(),
        3,
        "nothing read or buffered"
    );
    // A stale wakeup while unwatched reads nothing.
    w.on_event(TAP).unwrap();
    assert_eq!(r.fake.inbox.lock().unwrap().len(), 3);
    // The guest posts four buffers: three frames land, the fourth buffer
    // waits, and the backend is watched again.
    for i in 0..4 {
        r.rx.post(&r.mem, &[(0x20000 + 0x1000 * i, 2048, true)]);
    }
    w.on_event(RX).unwrap();
    assert_eq!(r.rx.used_idx(&r.mem), 3);
    assert_eq!(w.watch_changes(), vec![(fd, TAP, true)]);
    assert!(w.watch_changes().is_empty(), "reported once");
}

#[test]
fn malformed_receive_chains_and_oversized_frames_fail_alone() {
    let (mut r, mut w) = worker(0);
    r.rx.post(&r.mem, &[(0x20000, 2048, false)]); // device-readable
    r.rx.post(&r.mem, &[(0xfff_0000, 2048, true)]); // outside RAM
    r.rx.post(&r.mem, &[(0x20000, 4, true)]); // shorter than the header
    r.rx.post(&r.mem, &[(0x21000, 64, true)]); // too small for the frame
    r.rx.post(&r.mem, &[(0x22000, 2048, true)]);
    r.fake.inbox.lock().unwrap().push_back(frame(500, 0)); // dropped
    r.fake.inbox.lock().unwrap().push_back(frame(40, 0));
    w.on_event(TAP).unwrap();
    assert_eq!(w.stats.bad_chains, 3);
    assert_eq!(w.stats.dropped, 1);
    assert_eq!(r.rx.used_idx(&r.mem), 4, "three bad chains and one frame");
    assert_eq!(
        r.rx.used(&r.mem, 3),
        (3, 52),
        "the small buffer took the next frame"
    );
}

#[test]
fn device_offers_features_config_and_sets_tap_offloads() {
    let fake = Fake::new();
    let mut d = NetDevice::new(NetConfig {
        name: "net0".into(),
        mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        backend: fake.clone(),
        mtu: None,
        mq: false,
        more: Vec::new(),
    });
    assert_eq!(d.device_type(), 1);
    assert_eq!(d.queue_max_sizes(), &[QUEUE_SIZE, QUEUE_SIZE]);
    let f = d.features();
    for b in [
        vn::VIRTIO_NET_F_MAC,
        vn::VIRTIO_NET_F_STATUS,
        vn::VIRTIO_NET_F_MRG_RXBUF,
        vn::VIRTIO_NET_F_CSUM,
        vn::VIRTIO_NET_F_GUEST_CSUM,
        vn::VIRTIO_NET_F_HOST_TSO4,
        vn::VIRTIO_NET_F_GUEST_TSO6,
    ] {
        assert_ne!(f & (1 << b), 0, "feature bit {b}");
    }
    assert_ne!(f & VIRTIO_F_VERSION_1, 0);
    let mut c = [0u8; 8];
    d.read_config(0, &mut c);
    assert_eq!(c, [0x52, 0x54, 0, 0x12, 0x34, 0x56, 1, 0], "mac, link up");
    let acked = (1 << vn::VIRTIO_NET_F_GUEST_CSUM) | (1 << vn::VIRTIO_NET_F_GUEST_TSO4);
    d.ack_features(acked | VIRTIO_F_VERSION_1);
    let (_r, ctx) = rig();
    d.activate(ctx).unwrap();
    assert_eq!(
        fake.offloads.load(Ordering::SeqCst),
        libc::TUN_F_CSUM | libc::TUN_F_TSO4
    );
    d.reset();
    assert_eq!(fake.offloads.load(Ordering::SeqCst), 0);
    assert_eq!(
        tun_offloads(1 << vn::VIRTIO_NET_F_GUEST_TSO4),
        0,
        "TSO needs checksum offload"
    );
}

/// A backend that takes only complete frames (passt): the device offers
/// MAC, STATUS and MRG_RXBUF, no checksum or TSO bits.
#[test]
fn a_backend_without_offloads_gets_no_offload_features() {
    struct Complete(Arc<Fake>);
    impl NetBackend for Complete {
        fn name(&self) -> &str {
            "complete"
        }
        unsafe fn readv(&self, iov: &[Iov]) -> std::io::Result<usize> {
            // SAFETY: the caller's guarantee, passed on.
            unsafe { self.0.readv(iov) }
        }
        unsafe fn writev(&self, iov: &[Iov]) -> std::io::Result<usize> {
            // SAFETY: the caller's guarantee, passed on.
            unsafe { self.0.writev(iov) }
        }
        fn fd(&self) -> RawFd {
            self.0.fd()
        }
        fn set_offloads(&self, flags: u32) -> std::io::Result<()> {
            self.0.set_offloads(flags)
        }
        fn takes_offloads(&self) -> bool {
            false
        }
    }
    let d = NetDevice::new(NetConfig {
        name: "net0".into(),
        mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        backend: Arc::new(Complete(Fake::new())),
        mtu: None,
        mq: false,
        more: Vec::new(),
    });
    let want = VIRTIO_F_VERSION_1
        | crate::virtio::VIRTIO_RING_F_EVENT_IDX
        | 1 << vn::VIRTIO_NET_F_MAC
        | 1 << vn::VIRTIO_NET_F_STATUS
        | 1 << vn::VIRTIO_NET_F_MRG_RXBUF;
    assert_eq!(d.features(), want);
}

mod event_idx;
mod mq;

/// `host_mtu`: VIRTIO_NET_F_MTU offered and the MTU in the config space
/// (bytes 10..12); without it neither, and the field reads 1500.
#[test]
fn host_mtu_is_offered_in_features_and_config() {
    for (mtu, want) in [(Some(9000u16), 9000u16), (None, 1500)] {
        let d = NetDevice::new(NetConfig {
            name: "net0".into(),
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
            backend: Fake::new(),
            mtu,
            mq: false,
            more: Vec::new(),
        });
        let offered = d.features() & (1 << vn::VIRTIO_NET_F_MTU) != 0;
        assert_eq!(offered, mtu.is_some(), "{mtu:?}");
        let mut c = [0u8; 2];
        d.read_config(10, &mut c);
        assert_eq!(u16::from_le_bytes(c), want, "{mtu:?}");
    }
}

/// With a jumbo MTU and mergeable buffers, one frame gathers enough
/// buffers for the whole MTU (not just 1518 bytes).
#[test]
fn a_jumbo_mtu_frame_spans_mergeable_buffers() {
    let (mut r, ctx) = rig();
    let mut w = NetWorker::new("net-test".into(), ctx, r.fake.clone(), MRG, Some(9000));
    for i in 0..8 {
        r.rx.post(&r.mem, &[(0x20000 + 0x1000 * i, 2048, true)]);
    }
    r.fake.inbox.lock().unwrap().push_back(frame(9014, 5));
    w.on_event(TAP).unwrap();
    assert_eq!(w.stats.rx_frames, 1);
    assert_eq!(r.rx.used_idx(&r.mem), 5, "9026 bytes in 2048-byte buffers");
    let nb: u16 = r.mem.read_obj(GuestAddress(0x20000 + 10)).unwrap();
    assert_eq!(nb, 5);
}
