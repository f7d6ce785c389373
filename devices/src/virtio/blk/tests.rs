//! The block worker end to end, without KVM: anonymous guest memory, a mock
//! split queue, a raw image in a temp file, and a recording interrupt.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use casemate_disk::{open_image, OpenOptions};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::request::*;
use super::worker::DONE_TOKEN;
use super::*;
use crate::virtio::{ReadyQueue, VirtioIrq};

mod vmmm_alias {
    pub use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
}

#[derive(Default)]
struct Irqs(AtomicUsize);
impl VirtioIrq for Irqs {
    fn signal_used(&self, _q: u16) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn signal_config(&self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Rig {
    mem: GuestMemoryMmap,
    path: std::path::PathBuf,
    worker: Box<dyn crate::virtio::Worker>,
    irqs: Arc<Irqs>,
    vq_used: GuestAddress,
}

fn rig(name: &str, read_only: bool, chains: &[Vec<(u64, u32, bool)>]) -> Rig {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let path = std::env::temp_dir().join(format!("casemate-blk-{}-{name}.raw", std::process::id()));
    std::fs::write(&path, vec![0u8; 1 << 20]).unwrap();
    let disk: Arc<dyn casemate_disk::DiskImage> =
        Arc::from(open_image(&path, &OpenOptions::default()).unwrap());
    let vq = MockSplitQueue::new(&mem, 16);
    let mut raw = Vec::new();
    for chain in chains {
        let base = raw.len() as u16;
        for (i, &(addr, len, w)) in chain.iter().enumerate() {
            let mut flags = if w { VRING_DESC_F_WRITE as u16 } else { 0 };
            if i + 1 < chain.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            raw.push(RawDescriptor::from(SplitDescriptor::new(
                addr,
                len,
                flags,
                base + i as u16 + 1,
            )));
        }
    }
    vq.add_desc_chains(&raw, 0).unwrap();
    let queue = vq.create_queue().unwrap();
    let vq_used = vq.used_addr();
    let mut dev = BlockDevice::new(BlockConfig {
        name: "blk-test".into(),
        serial: "CASEMATE-TEST".into(),
        disk,
        read_only,
        cache: CacheMode::Writeback,
        num_queues: 1,
    });
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
    let mut r = rig("rw", false, &chains);
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
    ];
    let mut r = rig("evil", false, &chains);
    header(&r.mem, 0x10000, T_IN, 2048);
    header(&r.mem, 0x10100, T_IN, 0);
    header(&r.mem, 0x10200, T_IN, 0);
    r.mem.write_obj(0x77u8, GuestAddress(0x30200)).unwrap();
    r.run(3);
    assert_eq!(r.status(0x30000), S_IOERR);
    assert_eq!(r.status(0x30100), S_IOERR);
    assert_eq!(r.status(0x30200), S_OK);
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
    let mut r = rig("ro", true, &chains);
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
    });
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
