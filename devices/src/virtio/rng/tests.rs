//! The rng worker without KVM: anonymous guest memory, a mock split queue,
//! a counting source and a recording interrupt.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::virtio::ReadyQueue;

type Irqs = crate::virtio::testing::CountingVirtioIrq;

/// Writes 0xa5 and counts what it gave out.
#[derive(Default)]
struct Fives(AtomicUsize);
impl EntropySource for Fives {
    fn fill(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        buf.fill(0xa5);
        self.0.fetch_add(buf.len(), Ordering::SeqCst);
        Ok(buf.len())
    }
}

struct Rig {
    mem: GuestMemoryMmap,
    worker: Box<dyn Worker>,
    irqs: Arc<Irqs>,
    used: GuestAddress,
    source: Arc<Fives>,
}

/// Chains of (addr, len, device-writable) descriptors.
fn rig(chains: &[Vec<(u64, u32, bool)>], limit: Option<RateLimit>) -> Rig {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let vq = MockSplitQueue::new(&mem, 16);
    let raw = crate::virtio::testing::chain_descriptors(chains);
    vq.add_desc_chains(&raw, 0).unwrap();
    let queue = vq.create_queue().unwrap();
    let source = Arc::new(Fives::default());
    let mut dev = RngDevice::new(RngConfig {
        name: "rng-test".into(),
        source: source.clone(),
        limit,
    });
    let irqs = Arc::new(Irqs::default());
    let ctx = StartContext {
        mem: mem.clone(),
        queues: vec![ReadyQueue {
            index: 0,
            queue,
            notify: EventFd::new(EFD_NONBLOCK).unwrap(),
        }],
        irq: irqs.clone(),
        needs_reset: Arc::new(AtomicBool::new(false)),
    };
    let worker = dev.activate(ctx).unwrap();
    let used = vq.used_addr();
    drop(vq);
    Rig {
        mem,
        worker,
        irqs,
        used,
        source,
    }
}

impl Rig {
    fn used_idx(&self) -> u16 {
        self.mem.read_obj(self.used.unchecked_add(2)).unwrap()
    }
    /// (id, len) of used element `i`.
    fn used(&self, i: u64) -> (u32, u32) {
        let at = self.used.unchecked_add(4 + 8 * i);
        (
            self.mem.read_obj(at).unwrap(),
            self.mem.read_obj(at.unchecked_add(4)).unwrap(),
        )
    }
}

#[test]
fn fills_writable_buffers_and_reports_the_length() {
    let mut r = rig(&[vec![(0x8000, 64, true), (0x9000, 32, true)]], None);
    r.worker.on_event(0).unwrap();
    assert_eq!(r.used_idx(), 1);
    assert_eq!(r.used(0), (0, 96));
    let mut b = [0u8; 96];
    r.mem
        .read_slice(&mut b[..64], GuestAddress(0x8000))
        .unwrap();
    r.mem
        .read_slice(&mut b[64..], GuestAddress(0x9000))
        .unwrap();
    assert!(b.iter().all(|&x| x == 0xa5));
    assert_eq!(r.irqs.0.load(Ordering::SeqCst), 1);
}

#[test]
fn malformed_chains_are_returned_empty_and_the_device_goes_on() {
    let mut r = rig(
        &[
            vec![(0x8000, 16, false)],
            vec![(0xfff_0000, 16, true)],
            vec![(0xa000, 8, true)],
        ],
        None,
    );
    r.worker.on_event(0).unwrap();
    assert_eq!(r.used_idx(), 3);
    assert_eq!(r.used(0).1, 0, "device-readable buffer");
    assert_eq!(r.used(1).1, 0, "outside guest RAM");
    assert_eq!(r.used(2).1, 8, "a good one after them");
}

#[test]
fn rate_limit_holds_requests_until_the_next_period() {
    let limit = RateLimit {
        bytes: 64,
        period: std::time::Duration::from_secs(3600),
    };
    let mut r = rig(
        &[vec![(0x8000, 48, true)], vec![(0x9000, 48, true)]],
        Some(limit),
    );
    r.worker.on_event(0).unwrap();
    // 48 bytes, then 16 (what is left of the budget), then the ring waits.
    assert_eq!(r.used_idx(), 2);
    assert_eq!(r.used(0).1, 48);
    assert_eq!(r.used(1).1, 16);
    assert_eq!(r.source.0.load(Ordering::SeqCst), 64);
    let fds = r.worker.fds();
    assert_eq!(fds.len(), 2, "queue and rate-limit timer");
}

#[test]
fn a_source_with_nothing_to_give_returns_nothing_instead_of_blocking() {
    // A pipe nobody writes to: a blocking read would wedge the worker.
    let mut fds = [0; 2];
    // SAFETY: pipe writes two fds into the array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both fds were just created and are owned here.
    let (r, _w) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    let src = RngSource::file("pipe".into(), r).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(src.fill(&mut buf).unwrap(), 0);
    use std::io::Write;
    (&_w).write_all(b"abc").unwrap();
    assert_eq!(src.fill(&mut buf).unwrap(), 3);
}
