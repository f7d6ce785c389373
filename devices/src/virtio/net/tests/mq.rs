//! Multiqueue and the control queue: commands answered OK or ERR as the
//! offered features allow, VQ_PAIRS_SET attaching and detaching the tap
//! queues (and the worker watching them), traffic on the second pair, and
//! malformed control chains failing alone.

use super::*;
use crate::virtio::net::ctrl::{answer, Effect};

const CTRL_TOKEN: u32 = 6;
const ACK: u64 = 0x50100;

/// A two-pair device's rings: rx0, tx0, rx1, tx1, ctrl.
struct MqRig {
    mem: GuestMemoryMmap,
    rings: Vec<Ring>,
    irqs: Arc<Irqs>,
    a: Arc<Fake>,
    b: Arc<Fake>,
}

fn mq_worker() -> (MqRig, Box<dyn crate::virtio::Worker>) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let mut rings = Vec::new();
    let mut queues = Vec::new();
    for (i, at) in [0u64, 0x4000, 0x8000, 0xc000, 0xe000]
        .into_iter()
        .enumerate()
    {
        let (q, ring) = queue_at(&mem, at);
        rings.push(ring);
        queues.push(ReadyQueue {
            index: i as u16,
            queue: q,
            notify: EventFd::new(EFD_NONBLOCK).unwrap(),
        });
    }
    let irqs = Arc::new(Irqs::default());
    let (a, b) = (Fake::new(), Fake::new());
    let mut d = NetDevice::new(NetConfig {
        name: "net0".into(),
        mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        backend: a.clone(),
        mtu: None,
        mq: true,
        more: vec![b.clone()],
    });
    assert_eq!(d.queue_max_sizes().len(), 5);
    let f = d.features();
    assert_eq!(f & MQ_FEATURES, MQ_FEATURES);
    let mut c = [0u8; 2];
    d.read_config(8, &mut c);
    assert_eq!(u16::from_le_bytes(c), 2, "max_virtqueue_pairs");
    d.ack_features(f);
    let ctx = StartContext {
        mem: mem.clone(),
        queues,
        irq: irqs.clone(),
        needs_reset: Arc::new(AtomicBool::new(false)),
    };
    let w = d.activate(ctx).unwrap();
    let r = MqRig {
        mem,
        rings,
        irqs,
        a,
        b,
    };
    (r, w)
}

impl MqRig {
    /// Post `cmd` (class, command, data) with its ack byte; run it; the
    /// ack written, or None when the chain came back with length 0.
    fn command(&mut self, w: &mut Box<dyn crate::virtio::Worker>, cmd: &[u8]) -> Option<u8> {
        self.mem.write_slice(cmd, GuestAddress(0x50000)).unwrap();
        self.mem.write_obj(0xeeu8, GuestAddress(ACK)).unwrap();
        let ctrl = &mut self.rings[4];
        let n = ctrl.used_idx(&self.mem);
        ctrl.post(
            &self.mem,
            &[(0x50000, cmd.len() as u32, false), (ACK, 1, true)],
        );
        w.on_event(CTRL_TOKEN).unwrap();
        assert_eq!(self.rings[4].used_idx(&self.mem), n + 1, "returned");
        let (_, len) = self.rings[4].used(&self.mem, u64::from(n));
        (len == 1).then(|| self.mem.read_obj(GuestAddress(ACK)).unwrap())
    }
}

const PAIRS_SET: [u8; 2] = [4, 0];

#[test]
fn commands_are_answered_as_the_features_allow() {
    let all = (1u64 << vn::VIRTIO_NET_F_CTRL_RX) | (1 << vn::VIRTIO_NET_F_MQ);
    assert_eq!(answer(4, 0, &[2, 0], all, 2), Ok(Effect::Pairs(2)));
    assert!(answer(4, 0, &[3, 0], all, 2).is_err(), "more than set up");
    assert!(answer(4, 0, &[0, 0], all, 2).is_err(), "zero pairs");
    assert!(answer(4, 0, &[1], all, 2).is_err(), "short");
    assert!(answer(4, 0, &[1, 0], 0, 2).is_err(), "MQ not accepted");
    assert!(answer(4, 1, &[], all, 2).is_err(), "RSS not offered");
    assert_eq!(answer(0, 0, &[1], all, 2), Ok(Effect::None), "promisc");
    assert_eq!(answer(0, 1, &[0], all, 2), Ok(Effect::None), "allmulti");
    assert!(answer(0, 0, &[2], all, 2).is_err());
    assert!(answer(0, 2, &[1], all, 2).is_err(), "ALLUNI needs RX_EXTRA");
    assert!(answer(0, 0, &[1], 0, 2).is_err(), "CTRL_RX not accepted");
    let mut table = vec![1, 0, 0, 0, 0x52, 0x54, 0, 1, 2, 3];
    table.extend([2, 0, 0, 0]);
    table.extend([1, 0, 0x5e, 0, 0, 1, 0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(answer(1, 0, &table, all, 2), Ok(Effect::None));
    assert!(answer(1, 0, &table[..table.len() - 1], all, 2).is_err());
    let mut long = table.clone();
    long.push(0);
    assert!(answer(1, 0, &long, all, 2).is_err(), "trailing bytes");
    assert!(answer(1, 0, &[0xff, 0xff, 0xff, 0xff], all, 2).is_err());
    assert!(
        answer(1, 1, &[0; 6], all, 2).is_err(),
        "MAC_ADDR_SET not offered"
    );
    for class in [2u8, 3, 5, 200] {
        assert!(answer(class, 0, &[0; 8], all, 2).is_err(), "class {class}");
    }
}

#[test]
fn pairs_set_attaches_the_second_tap_queue_and_traffic_flows_on_it() {
    let (mut r, mut w) = mq_worker();
    let a_fd = r.a.fd.as_raw_fd();
    let b_fd = r.b.fd.as_raw_fd();
    assert!(
        !r.b.enabled.load(Ordering::SeqCst),
        "pair 1 detached at start"
    );
    let fds = w.fds();
    assert!(fds.contains(&(a_fd, 2)));
    assert!(!fds.contains(&(b_fd, 5)), "a detached queue is not watched");
    assert!(fds.iter().any(|&(_, t)| t == CTRL_TOKEN));

    assert_eq!(
        r.command(&mut w, &[PAIRS_SET[0], PAIRS_SET[1], 2, 0]),
        Some(0)
    );
    assert!(r.b.enabled.load(Ordering::SeqCst));
    assert_eq!(w.watch_changes(), vec![(b_fd, 5, true)]);

    // A frame on the second tap queue lands in the second receive ring,
    // and the second transmit ring sends on that queue.
    r.rings[2].post(&r.mem, &[(0x60000, 2048, true)]);
    r.b.inbox.lock().unwrap().push_back(frame(80, 9));
    w.on_event(5).unwrap();
    assert_eq!(r.rings[2].used_idx(&r.mem), 1);
    assert_eq!(r.rings[0].used_idx(&r.mem), 0);
    r.mem
        .write_slice(&frame(60, 1), GuestAddress(0x70000))
        .unwrap();
    r.rings[3].post(&r.mem, &[(0x70000, 72, false)]);
    w.on_event(4).unwrap();
    assert_eq!(r.b.sent.lock().unwrap().len(), 1);
    assert!(r.a.sent.lock().unwrap().is_empty());
    assert!(r.irqs.count() >= 2);

    // Back to one pair: detached and unwatched; three is refused.
    assert_eq!(r.command(&mut w, &[4, 0, 3, 0]), Some(1));
    assert!(r.b.enabled.load(Ordering::SeqCst), "unchanged");
    assert_eq!(r.command(&mut w, &[4, 0, 1, 0]), Some(0));
    assert!(!r.b.enabled.load(Ordering::SeqCst));
    assert_eq!(w.watch_changes(), vec![(b_fd, 5, false)]);
    assert!(r.a.enabled.load(Ordering::SeqCst));
}

#[test]
fn malformed_control_chains_fail_alone() {
    let (mut r, mut w) = mq_worker();
    // Too short for class and command; an unknown class.
    assert_eq!(r.command(&mut w, &[4]), Some(1));
    assert_eq!(r.command(&mut w, &[9, 9, 9]), Some(1));
    // No ack byte at all; a readable buffer after the ack; outside RAM.
    let ctrl = 4;
    for chain in [
        vec![(0x50000u64, 4u32, false)],
        vec![(0x50000, 2, false), (ACK, 1, true), (0x50002, 2, false)],
        vec![(0xfff_0000, 4, false), (ACK, 1, true)],
    ] {
        let n = r.rings[ctrl].used_idx(&r.mem);
        r.rings[ctrl].post(&r.mem, &chain);
        w.on_event(CTRL_TOKEN).unwrap();
        assert_eq!(r.rings[ctrl].used_idx(&r.mem), n + 1);
        let (_, len) = r.rings[ctrl].used(&r.mem, u64::from(n));
        assert!(len <= 1);
    }
    // Still answering.
    assert_eq!(r.command(&mut w, &[4, 0, 2, 0]), Some(0));
}
