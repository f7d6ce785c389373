//! The block worker end to end, without KVM: anonymous guest memory, a mock
//! split queue, a raw image in a temp file, and a recording interrupt.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use casemate_disk::{open_image, OpenOptions};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::request::*;
use super::worker::DONE_TOKEN;
use super::*;
use crate::virtio::ReadyQueue;

mod vmmm_alias {
    pub use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
}

type Irqs = crate::virtio::testing::CountingVirtioIrq;

/// Both engines: every worker test runs with each, and checks it got it.
const ENGINES: [(EngineChoice, EngineKind); 2] = [
    (EngineChoice::Threads, EngineKind::Threads),
    (EngineChoice::Uring, EngineKind::Uring),
];

struct Rig {
    mem: GuestMemoryMmap,
    path: std::path::PathBuf,
    worker: Box<dyn crate::virtio::Worker>,
    irqs: Arc<Irqs>,
    vq_used: GuestAddress,
}

#[derive(Clone, Copy)]
struct Opts {
    engine: EngineChoice,
    read_only: bool,
    cache: CacheMode,
    zeroes: ZeroPolicy,
    event_idx: bool,
}

impl Opts {
    fn new(engine: EngineChoice) -> Self {
        Opts {
            engine,
            read_only: false,
            cache: CacheMode::Writeback,
            // The tests below check that discards clear their ranges.
            zeroes: ZeroPolicy {
                unmap: true,
                ..ZeroPolicy::default()
            },
            event_idx: false,
        }
    }
}

fn rig(name: &str, read_only: bool, chains: &[Vec<(u64, u32, bool)>]) -> Vec<Rig> {
    ENGINES
        .iter()
        .map(|&(engine, kind)| {
            let o = Opts {
                read_only,
                ..Opts::new(engine)
            };
            rig_with(&format!("{name}-{kind:?}"), o, kind, chains)
        })
        .collect()
}

fn rig_with(name: &str, o: Opts, kind: EngineKind, chains: &[Vec<(u64, u32, bool)>]) -> Rig {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let path = std::env::temp_dir().join(format!("casemate-blk-{}-{name}.raw", std::process::id()));
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    let opts = OpenOptions {
        direct: o.cache == CacheMode::None,
        ..OpenOptions::default()
    };
    let disk: Arc<dyn casemate_disk::DiskImage> = Arc::from(open_image(&path, &opts).unwrap());
    let vq = MockSplitQueue::new(&mem, 64);
    let raw = crate::virtio::testing::chain_descriptors(chains);
    vq.add_desc_chains(&raw, 0).unwrap();
    let queue = vq.create_queue().unwrap();
    let vq_used = vq.used_addr();
    let mut dev = BlockDevice::new(BlockConfig {
        name: "blk-test".into(),
        serial: "CASEMATE-TEST".into(),
        disk,
        read_only: o.read_only,
        cache: o.cache,
        num_queues: 1,
        zeroes: o.zeroes,
        poll_max: std::time::Duration::ZERO,
    });
    dev.set_engine(o.engine);
    if o.event_idx {
        dev.ack_features(dev.features());
    }
    let irqs = Arc::new(Irqs::default());
    let notify = vmmm_alias::EventFd::new(vmmm_alias::EFD_NONBLOCK).unwrap();
    let ctx = StartContext {
        mem: mem.clone(),
        queues: vec![ReadyQueue {
            index: 0,
            queue,
            notify,
        }],
        irq: irqs.clone(),
        needs_reset: Arc::new(AtomicBool::new(false)),
    };
    let worker = dev.activate(ctx).unwrap();
    assert_eq!(dev.engine_kind(), Some(kind), "{name}: engine");
    Rig {
        mem,
        path,
        worker,
        irqs,
        vq_used,
    }
}

impl Rig {
    /// Kick the queue and wait (poll(2), not a sleep) for `n` completions.
    fn run(&mut self, n: u16) {
        self.worker.on_event(0).unwrap();
        let done_fd = self
            .worker
            .fds()
            .iter()
            .find(|(_, t)| *t == DONE_TOKEN)
            .unwrap()
            .0;
        while self.used_idx() < n {
            let mut p = libc::pollfd {
                fd: done_fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd on our stack, for the call's duration.
            let r = unsafe { libc::poll(&mut p, 1, 10_000) };
            assert!(r > 0, "no completion within 10 s");
            self.worker.on_event(DONE_TOKEN).unwrap();
        }
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(self.vq_used.unchecked_add(2)).unwrap()
    }

    fn status(&self, addr: u64) -> u8 {
        self.mem.read_obj(GuestAddress(addr)).unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn header(mem: &GuestMemoryMmap, at: u64, kind: u32, sector: u64) {
    mem.write_obj(kind, GuestAddress(at)).unwrap();
    mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
}

#[test]
fn write_then_read_reaches_the_image_and_back() {
    let chains = vec![
        vec![
            (0x10000, 16, false),
            (0x20000, 1024, false),
            (0x30000, 1, true),
        ],
        vec![(0x10100, 16, false), (0x30100, 1, true)],
    ];
    for mut r in rig("rw", false, &chains) {
        header(&r.mem, 0x10000, T_OUT, 3);
        r.mem
            .write_slice(&[0xab; 1024], GuestAddress(0x20000))
            .unwrap();
        header(&r.mem, 0x10100, T_FLUSH, 0);
        r.mem.write_obj(0xffu8, GuestAddress(0x30000)).unwrap();
        r.run(2);
        assert_eq!(r.status(0x30000), S_OK);
        assert_eq!(r.status(0x30100), S_OK);
        let file = std::fs::read(&r.path).unwrap();
        assert!(file[3 * 512..3 * 512 + 1024].iter().all(|&b| b == 0xab));
        assert!(
            file[..3 * 512].iter().all(|&b| b == 0),
            "nothing outside the request"
        );
        assert!(
            file[5 * 512..].iter().all(|&b| b == 0),
            "nothing outside the request"
        );
        assert!(r.irqs.0.load(Ordering::SeqCst) >= 1);
    }
}

#[test]
fn malformed_requests_fail_and_the_device_carries_on() {
    let chains = vec![
        // Read past the end of the 1 MiB disk.
        vec![
            (0x10000, 16, false),
            (0x20000, 512, true),
            (0x30000, 1, true),
        ],
        // Data buffer far outside guest RAM.
        vec![
            (0x10100, 16, false),
            (0x4000_0000, 512, true),
            (0x30100, 1, true),
        ],
        // A valid read afterwards.
        vec![
            (0x10200, 16, false),
            (0x20200, 512, true),
            (0x30200, 1, true),
        ],
        // A write that starts inside the disk and runs past its end.
        vec![
            (0x10300, 16, false),
            (0x20400, 1024, false),
            (0x30300, 1, true),
        ],
    ];
    for mut r in rig("evil", false, &chains) {
        header(&r.mem, 0x10000, T_IN, 2048);
        header(&r.mem, 0x10100, T_IN, 0);
        header(&r.mem, 0x10200, T_IN, 0);
        header(&r.mem, 0x10300, T_OUT, 2047);
        r.mem.write_obj(0x77u8, GuestAddress(0x30200)).unwrap();
        r.mem
            .write_slice(&[0x5a; 1024], GuestAddress(0x20400))
            .unwrap();
        r.run(4);
        assert_eq!(r.status(0x30000), S_IOERR);
        assert_eq!(r.status(0x30100), S_IOERR);
        assert_eq!(r.status(0x30200), S_OK);
        assert_eq!(r.status(0x30300), S_IOERR);
        let file = std::fs::read(&r.path).unwrap();
        assert_eq!(file.len(), 1 << 20, "the image did not grow");
        assert!(file.iter().all(|&b| b == 0), "nothing was written");
    }
}

#[test]
fn read_only_refuses_writes_and_get_id_answers() {
    let chains = vec![
        vec![
            (0x10000, 16, false),
            (0x20000, 512, false),
            (0x30000, 1, true),
        ],
        vec![
            (0x10100, 16, false),
            (0x20200, 20, true),
            (0x30100, 1, true),
        ],
    ];
    for mut r in rig("ro", true, &chains) {
        header(&r.mem, 0x10000, T_OUT, 0);
        r.mem
            .write_slice(&[0xcd; 512], GuestAddress(0x20000))
            .unwrap();
        header(&r.mem, 0x10100, T_GET_ID, 0);
        r.run(2);
        assert_eq!(r.status(0x30000), S_IOERR);
        assert!(
            std::fs::read(&r.path).unwrap().iter().all(|&b| b == 0),
            "image untouched"
        );
        assert_eq!(r.status(0x30100), S_OK);
        let mut id = [0u8; 13];
        r.mem.read_slice(&mut id, GuestAddress(0x20200)).unwrap();
        assert_eq!(&id, b"CASEMATE-TEST");
    }
}

/// Segments of odd sizes (a sector split 100 + 412) land at the right file
/// offsets, and a read with a different segmentation brings them back.
#[test]
fn multi_segment_requests_land_at_their_file_offsets() {
    let chains = vec![
        vec![
            (0x10000, 16, false),
            (0x20000, 100, false),
            (0x21000, 412, false),
            (0x22000, 2048, false),
            (0x30000, 1, true),
        ],
        vec![
            (0x10100, 16, false),
            (0x40000, 1536, true),
            (0x41000, 1024, true),
            (0x30100, 1, true),
        ],
    ];
    let data: Vec<u8> = (0..2560u32).map(|i| (i % 251) as u8).collect();
    for mut r in rig("segs", false, &chains) {
        // The read's sectors are filled through the file beforehand: both
        // chains are in flight at once.
        let mut file = vec![0u8; 1 << 20];
        file[30 * 512..30 * 512 + 2560].copy_from_slice(&data);
        std::fs::write(&r.path, &file).unwrap();
        header(&r.mem, 0x10000, T_OUT, 9);
        r.mem
            .write_slice(&data[..100], GuestAddress(0x20000))
            .unwrap();
        r.mem
            .write_slice(&data[100..512], GuestAddress(0x21000))
            .unwrap();
        r.mem
            .write_slice(&data[512..], GuestAddress(0x22000))
            .unwrap();
        header(&r.mem, 0x10100, T_IN, 30);
        r.run(2);
        assert_eq!(r.status(0x30000), S_OK);
        assert_eq!(r.status(0x30100), S_OK);
        let after = std::fs::read(&r.path).unwrap();
        assert!(after[9 * 512..9 * 512 + 2560] == data[..], "write landed");
        assert!(after[..9 * 512].iter().all(|&b| b == 0));
        assert!(after[9 * 512 + 2560..30 * 512].iter().all(|&b| b == 0));
        let mut back = vec![0u8; 2560];
        r.mem
            .read_slice(&mut back[..1536], GuestAddress(0x40000))
            .unwrap();
        r.mem
            .read_slice(&mut back[1536..], GuestAddress(0x41000))
            .unwrap();
        assert!(back == data, "read came back in segment order");
    }
}

/// Discard punches (reads back zeros on file systems that punch holes, as
/// ext4 and tmpfs do), write-zeroes zeroes; bytes around them stay.
#[test]
fn discard_and_write_zeroes_clear_their_ranges_only() {
    let chains = vec![
        vec![
            (0x10000, 16, false),
            (0x20000, 16, false),
            (0x30000, 1, true),
        ],
        vec![
            (0x10100, 16, false),
            (0x20100, 32, false),
            (0x30100, 1, true),
        ],
    ];
    for mut r in rig("trim", false, &chains) {
        std::fs::write(&r.path, vec![0xeeu8; 1 << 20]).unwrap();
        let seg = |m: &GuestMemoryMmap, at: u64, sector: u64, count: u32| {
            m.write_obj(sector, GuestAddress(at)).unwrap();
            m.write_obj(count, GuestAddress(at + 8)).unwrap();
            m.write_obj(0u32, GuestAddress(at + 12)).unwrap();
        };
        header(&r.mem, 0x10000, T_DISCARD, 0);
        seg(&r.mem, 0x20000, 16, 8);
        header(&r.mem, 0x10100, T_WRITE_ZEROES, 0);
        seg(&r.mem, 0x20100, 40, 3);
        seg(&r.mem, 0x20110, 100, 1);
        r.run(2);
        assert_eq!(r.status(0x30000), S_OK);
        assert_eq!(r.status(0x30100), S_OK);
        let f = std::fs::read(&r.path).unwrap();
        let zero = |a: u64, n: u64| (a * 512..(a + n) * 512).all(|i| f[i as usize] == 0);
        let kept = |a: u64, n: u64| (a * 512..(a + n) * 512).all(|i| f[i as usize] == 0xee);
        assert!(zero(16, 8) && zero(40, 3) && zero(100, 1));
        assert!(kept(0, 16) && kept(24, 16) && kept(43, 57) && kept(101, 100));
    }
}

/// `discard=ignore` (QEMU's default): a discard completes and changes
/// nothing, a zero write keeps its range allocated. `detect-zeroes=on`: a
/// write of zeros over a hole allocates nothing.
#[test]
fn discard_ignore_keeps_data_and_detect_zeroes_skips_holes() {
    use std::os::unix::fs::MetadataExt;
    let chains = vec![
        vec![
            (0x10000, 16, false),
            (0x20000, 16, false),
            (0x30000, 1, true),
        ],
        vec![
            (0x10100, 16, false),
            (0x20100, 16, false),
            (0x30100, 1, true),
        ],
        // 4 KiB of zeros (guest RAM starts zeroed) at sector 1024.
        vec![
            (0x10200, 16, false),
            (0x50000, 4096, false),
            (0x30200, 1, true),
        ],
    ];
    for &(engine, kind) in &ENGINES {
        let o = Opts {
            zeroes: ZeroPolicy {
                unmap: false,
                detect_zeroes: DetectZeroes::On,
            },
            ..Opts::new(engine)
        };
        let mut r = rig_with(&format!("ignore-{kind:?}"), o, kind, &chains);
        // 64 KiB of data, then a hole to 1 MiB.
        std::fs::write(&r.path, vec![0xeeu8; 64 << 10]).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&r.path)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let blocks = std::fs::metadata(&r.path).unwrap().blocks();
        let seg = |m: &GuestMemoryMmap, at: u64, sector: u64, count: u32| {
            m.write_obj(sector, GuestAddress(at)).unwrap();
            m.write_obj(count, GuestAddress(at + 8)).unwrap();
            m.write_obj(0u32, GuestAddress(at + 12)).unwrap();
        };
        header(&r.mem, 0x10000, T_DISCARD, 0);
        seg(&r.mem, 0x20000, 16, 8);
        header(&r.mem, 0x10100, T_WRITE_ZEROES, 0);
        seg(&r.mem, 0x20100, 40, 3);
        header(&r.mem, 0x10200, T_OUT, 1024);
        r.run(3);
        for s in [0x30000, 0x30100, 0x30200] {
            assert_eq!(r.status(s), S_OK, "{kind:?}");
        }
        let f = std::fs::read(&r.path).unwrap();
        let byte = |sector: u64| f[sector as usize * 512];
        assert_eq!(byte(16), 0xee, "{kind:?}: discard=ignore changed data");
        assert_eq!(byte(40), 0, "{kind:?}: write-zeroes did not zero");
        assert_eq!(
            std::fs::metadata(&r.path).unwrap().blocks(),
            blocks,
            "{kind:?}: a zero write over a hole allocated, or write-zeroes freed"
        );
    }
}

/// With cache=writethrough a write is durable when it completes (pool:
/// write then fdatasync; io_uring: RWF_DSYNC); here we can check that it is
/// in the file and that FLUSH still succeeds. cache=unsafe makes FLUSH a
/// no-op that still answers OK; cache=none runs O_DIRECT, where the
/// sector-aligned buffers go straight to the kernel and odd ones bounce.
#[test]
fn cache_modes_complete_writes_and_flushes() {
    let chains = vec![
        vec![
            (0x10000, 16, false),
            (0x20000, 4096, false),
            (0x30000, 1, true),
        ],
        vec![(0x10100, 16, false), (0x30100, 1, true)],
        vec![
            (0x10200, 16, false),
            (0x24001, 511, false),
            (0x25000, 1, false),
            (0x30200, 1, true),
        ],
    ];
    for cache in [CacheMode::Writethrough, CacheMode::Unsafe, CacheMode::None] {
        for (engine, kind) in ENGINES {
            let o = Opts {
                cache,
                ..Opts::new(engine)
            };
            let mut r = rig_with(&format!("cache-{cache:?}-{kind:?}"), o, kind, &chains);
            header(&r.mem, 0x10000, T_OUT, 8);
            r.mem
                .write_slice(&[0x42; 4096], GuestAddress(0x20000))
                .unwrap();
            header(&r.mem, 0x10100, T_FLUSH, 0);
            header(&r.mem, 0x10200, T_OUT, 100);
            r.mem
                .write_slice(&[0x17; 511], GuestAddress(0x24001))
                .unwrap();
            r.mem.write_obj(0x18u8, GuestAddress(0x25000)).unwrap();
            r.run(3);
            for st in [0x30000, 0x30100, 0x30200] {
                assert_eq!(r.status(st), S_OK, "{cache:?} {kind:?} status at {st:#x}");
            }
            let f = std::fs::read(&r.path).unwrap();
            assert!(f[8 * 512..16 * 512].iter().all(|&b| b == 0x42));
            assert!(f[100 * 512..100 * 512 + 511].iter().all(|&b| b == 0x17));
            assert_eq!(f[100 * 512 + 511], 0x18);
        }
    }
}

/// A FLUSH's sector field is meaningless; a huge one must not trip any
/// arithmetic (it did not in the pool, and must not in the ring).
#[test]
fn flush_with_a_wild_sector_succeeds() {
    let chains = vec![vec![(0x10000, 16, false), (0x30000, 1, true)]];
    for mut r in rig("wildflush", false, &chains) {
        header(&r.mem, 0x10000, T_FLUSH, u64::MAX);
        r.run(1);
        assert_eq!(r.status(0x30000), S_OK);
    }
}

#[test]
fn config_space_reports_capacity_and_limits() {
    let r = rig(
        "cfg",
        false,
        &[vec![(0x10000, 16, false), (0x30000, 1, true)]],
    );
    drop(r);
    let path = std::env::temp_dir().join(format!("casemate-blk-{}-cfg2.raw", std::process::id()));
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    let disk: Arc<dyn casemate_disk::DiskImage> =
        Arc::from(open_image(&path, &OpenOptions::default()).unwrap());
    let dev = BlockDevice::new(BlockConfig {
        name: "b".into(),
        serial: String::new(),
        disk,
        read_only: false,
        cache: CacheMode::Writeback,
        num_queues: 2,
        zeroes: ZeroPolicy::default(),
        poll_max: std::time::Duration::ZERO,
    });
    assert_ne!(dev.features() & crate::virtio::VIRTIO_RING_F_EVENT_IDX, 0);
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), 2048);
    let mut nq = [0u8; 2];
    dev.read_config(34, &mut nq);
    assert_eq!(u16::from_le_bytes(nq), 2);
    assert_ne!(dev.features() & F_MQ, 0);
    let mut past = [0xffu8; 4];
    dev.read_config(1000, &mut past);
    assert_eq!(past, [0; 4]);
    let _ = std::fs::remove_file(&path);
}

/// More requests than one chunk: all complete, in chunks, and the guest's
/// notifications are back on when the worker goes idle (or the guest would
/// never kick again).
#[test]
fn a_long_batch_is_served_in_chunks_and_notifications_come_back_on() {
    let n = 20u64;
    let chains: Vec<Vec<(u64, u32, bool)>> = (0..n)
        .map(|i| {
            vec![
                (0x10000 + i * 0x100, 16, false),
                (0x40000 + i * 0x1000, 512, true),
                (0x30000 + i * 0x10, 1, true),
            ]
        })
        .collect();
    for mut r in rig("chunks", false, &chains) {
        let mut file = vec![0u8; 1 << 20];
        for i in 0..n as usize {
            file[i * 512..(i + 1) * 512].fill(i as u8 + 1);
        }
        std::fs::write(&r.path, &file).unwrap();
        for i in 0..n {
            header(&r.mem, 0x10000 + i * 0x100, T_IN, i);
            r.mem
                .write_obj(0xffu8, GuestAddress(0x30000 + i * 0x10))
                .unwrap();
        }
        r.run(n as u16);
        for i in 0..n {
            assert_eq!(r.status(0x30000 + i * 0x10), S_OK, "request {i}");
            let b: u8 = r
                .mem
                .read_obj(GuestAddress(0x40000 + i * 0x1000 + 511))
                .unwrap();
            assert_eq!(b, i as u8 + 1, "request {i} data");
        }
        let used_flags: u16 = r.mem.read_obj(r.vq_used).unwrap();
        assert_eq!(used_flags, 0, "VRING_USED_F_NO_NOTIFY cleared when idle");
        let irqs = r.irqs.0.load(Ordering::SeqCst);
        assert!(
            (1..=n as usize).contains(&irqs),
            "{irqs} interrupts for {n} requests"
        );
    }
}

/// With EVENT_IDX the guest kicks only when its index passes
/// `avail_event`: an idle worker must have written it up to what it
/// served, on both engines.
#[test]
fn with_event_idx_an_idle_worker_asks_for_the_next_kick() {
    let n = 12u64;
    let chains: Vec<Vec<(u64, u32, bool)>> = (0..n)
        .map(|i| {
            vec![
                (0x10000 + i * 0x100, 16, false),
                (0x40000 + i * 0x1000, 512, true),
                (0x30000 + i * 0x10, 1, true),
            ]
        })
        .collect();
    for &(engine, kind) in &ENGINES {
        let o = Opts {
            event_idx: true,
            ..Opts::new(engine)
        };
        let mut r = rig_with(&format!("event-idx-{kind:?}"), o, kind, &chains);
        for i in 0..n {
            header(&r.mem, 0x10000 + i * 0x100, T_IN, i);
        }
        r.run(n as u16);
        // avail_event follows the used ring's entries (64 of them).
        let avail_event: u16 = r.mem.read_obj(r.vq_used.unchecked_add(4 + 8 * 64)).unwrap();
        assert_eq!(avail_event, n as u16, "{kind:?}");
        let used_flags: u16 = r.mem.read_obj(r.vq_used).unwrap();
        assert_eq!(
            used_flags, 0,
            "{kind:?}: flags untouched with event indexes"
        );
    }
}
