//! VIRTIO_RING_F_EVENT_IDX on the net worker: the device writes
//! `avail_event` whenever it finds a ring empty (or the guest, which
//! notifies only past it, would wait forever), honours the driver's
//! `used_event`, and a ring whose index runs ahead neither hangs the
//! worker nor spins it.

use super::*;
use crate::virtio::{use_event_idx, VIRTIO_RING_F_EVENT_IDX};

fn worker_event_idx(acked: u64) -> (Rig, NetWorker) {
    let (r, mut ctx) = rig();
    use_event_idx(&mut ctx.queues, acked | VIRTIO_RING_F_EVENT_IDX);
    let w = NetWorker::new("net-test".into(), ctx, r.fake.clone(), acked, None);
    (r, w)
}

impl Ring {
    /// The device's `avail_event`, after the used ring's entries.
    fn avail_event(&self, mem: &GuestMemoryMmap) -> u16 {
        mem.read_obj(GuestAddress(self.used.0 + 4 + 8 * u64::from(SIZE)))
            .unwrap()
    }
    /// Set the driver's `used_event`, after the available ring's entries.
    fn set_used_event(&self, mem: &GuestMemoryMmap, v: u16) {
        mem.write_obj(v, GuestAddress(self.avail.0 + 4 + 2 * u64::from(SIZE)))
            .unwrap();
    }
}

#[test]
fn tx_rearms_avail_event_and_interrupts_only_past_used_event() {
    let (mut r, mut w) = worker_event_idx(0);
    // The driver wants an interrupt once the third chain is used.
    r.tx.set_used_event(&r.mem, 2);
    r.tx.post(&r.mem, &[(0x10000, 72, false)]);
    w.on_event(TX).unwrap();
    assert_eq!(r.tx.used_idx(&r.mem), 1);
    assert_eq!(r.tx.avail_event(&r.mem), 1, "next kick asked for");
    assert_eq!(r.irqs.count(), 0, "used_event not reached");
    r.tx.post(&r.mem, &[(0x10000, 72, false)]);
    r.tx.post(&r.mem, &[(0x10000, 72, false)]);
    w.on_event(TX).unwrap();
    assert_eq!(r.tx.used_idx(&r.mem), 3);
    assert_eq!(r.tx.avail_event(&r.mem), 3);
    assert_eq!(r.irqs.count(), 1, "used_event passed");
    assert_eq!(r.fake.sent.lock().unwrap().len(), 3);
}

#[test]
fn rx_ring_running_dry_asks_for_the_next_kick() {
    let (mut r, mut w) = worker_event_idx(0);
    let fd = r.fake.fd.as_raw_fd();
    for i in 0..2 {
        r.fake.inbox.lock().unwrap().push_back(frame(60, i));
    }
    r.rx.post(&r.mem, &[(0x20000, 2048, true)]);
    w.on_event(TAP).unwrap();
    assert_eq!(r.rx.used_idx(&r.mem), 1);
    assert_eq!(
        r.rx.avail_event(&r.mem),
        1,
        "dry ring: the next post must kick"
    );
    assert_eq!(w.watch_changes(), vec![(fd, TAP, false)]);
    r.rx.post(&r.mem, &[(0x21000, 2048, true)]);
    w.on_event(RX).unwrap();
    assert_eq!(r.rx.used_idx(&r.mem), 2, "the second frame landed");
    assert_eq!(r.rx.avail_event(&r.mem), 2);
    // used_event 0 (never moved by this driver) was passed by the first
    // frame only.
    assert_eq!(r.irqs.count(), 1);
}

#[test]
fn a_ring_index_running_ahead_neither_hangs_nor_spins() {
    let (r, mut w) = worker_event_idx(0);
    for ring in [&r.rx, &r.tx] {
        r.mem
            .write_obj(SIZE + 5, GuestAddress(ring.avail.0 + 2))
            .unwrap();
    }
    r.fake.inbox.lock().unwrap().push_back(frame(60, 1));
    w.on_event(TX).unwrap();
    w.on_event(RX).unwrap();
    assert_eq!(r.tx.used_idx(&r.mem), 0);
    assert_eq!(r.rx.used_idx(&r.mem), 0);
    assert!(r.fake.sent.lock().unwrap().is_empty());
    assert_eq!(r.fake.inbox.lock().unwrap().len(), 1, "nothing read");
}

/// The device offers EVENT_IDX and turns it on in the queues only when
/// the driver accepts it.
#[test]
fn event_idx_is_offered_and_follows_the_driver() {
    let fake = Fake::new();
    let mut d = NetDevice::new(NetConfig {
        name: "net0".into(),
        mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        backend: fake,
        mtu: None,
        mq: false,
        more: Vec::new(),
    });
    assert_ne!(d.features() & VIRTIO_RING_F_EVENT_IDX, 0);
    for acked in [0, VIRTIO_RING_F_EVENT_IDX] {
        let (mut r, ctx) = rig();
        r.tx.set_used_event(&r.mem, 5);
        d.ack_features(VIRTIO_F_VERSION_1 | acked);
        let mut w = d.activate(ctx).unwrap();
        r.tx.post(&r.mem, &[(0x10000, 72, false)]);
        w.on_event(TX).unwrap();
        let want = if acked == 0 { 1 } else { 0 };
        assert_eq!(r.irqs.count(), want, "acked {acked:#x}");
        d.reset();
    }
}
