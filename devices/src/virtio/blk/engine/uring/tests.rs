//! The io_uring engine driven directly, without a queue: iovecs split at
//! guest-memory region boundaries, short reads at the end of the file,
//! O_DIRECT alignment and its bounce fallback, flush and cache modes,
//! errors, what bounces, the engine choice, and a drop that waits for a
//! request the kernel still holds.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use casemate_disk::{open_image, DiskError, DiskImage, Format, OpenOptions};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EFD_NONBLOCK;

use super::iov::*;
use super::*;
use crate::virtio::blk::engine::{EngineChoice, EngineKind, EngineParams, IoEngine, ZeroPolicy};

struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str, bytes: &[u8]) -> Self {
        let p =
            std::env::temp_dir().join(format!("casemate-uring-{tag}-{}.img", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        Tmp(p)
    }

    /// An engine on this file opened read-write and buffered, for a
    /// writable device: what most tests need.
    fn engine(&self, m: &GuestMemoryMmap, cache: CacheMode) -> UringEngine {
        engine(exec(self.open(false, false).unwrap(), m, cache, false))
    }

    fn open(&self, read_only: bool, direct: bool) -> Result<Arc<dyn DiskImage>, DiskError> {
        let o = OpenOptions {
            read_only,
            direct,
            ..OpenOptions::default()
        };
        open_image(&self.0, &o).map(Arc::from)
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20), (GuestAddress(1 << 20), 1 << 20)])
        .unwrap()
}

fn exec(disk: Arc<dyn DiskImage>, mem: &GuestMemoryMmap, cache: CacheMode, ro: bool) -> Executor {
    let mut id = [0u8; ID_LEN];
    id[..4].copy_from_slice(b"URNG");
    Executor {
        disk,
        mem: mem.clone(),
        cache,
        read_only: ro,
        zeroes: ZeroPolicy {
            unmap: true,
            ..ZeroPolicy::default()
        },
        id,
        name: "uring-test".into(),
    }
}

fn engine(exec: Executor) -> UringEngine {
    let file = exec.disk.raw_file().expect("a raw image");
    let evt = Arc::new(EventFd::new(EFD_NONBLOCK).unwrap());
    UringEngine::new(Arc::new(exec), file, evt, 64).unwrap()
}

fn job(kind: u32, sector: u64, bufs: &[(u64, u32)], status: u64) -> Job {
    let data: Vec<Buf> = bufs
        .iter()
        .map(|&(a, len)| Buf {
            addr: GuestAddress(a),
            len,
        })
        .collect();
    Job {
        slot: 0,
        head: status as u16,
        req: Request {
            kind,
            sector,
            data_len: data.iter().map(|b| u64::from(b.len)).sum(),
            data,
            status: GuestAddress(status),
        },
    }
}

/// Kick, then wait (poll on the eventfd) until `n` completions are in.
fn wait(e: &mut UringEngine, n: usize) -> Vec<Done> {
    e.kick().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    loop {
        e.take_done(&mut out).unwrap();
        if out.len() >= n {
            return out;
        }
        assert!(Instant::now() < deadline, "no completion within 10 s");
        let mut p = libc::pollfd {
            fd: e.done_evt().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on our stack, for the call's duration.
        unsafe { libc::poll(&mut p, 1, 100) };
        let _ = e.done_evt().read();
    }
}

fn status(m: &GuestMemoryMmap, at: u64) -> u8 {
    m.read_obj(GuestAddress(at)).unwrap()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

#[test]
fn iovecs_split_where_a_buffer_crosses_regions() {
    let m = mem();
    let mut iov = Vec::new();
    let bufs = [
        Buf {
            addr: GuestAddress((1 << 20) - 1024),
            len: 4096,
        },
        Buf {
            addr: GuestAddress(0x100),
            len: 0,
        },
    ];
    assert!(build_iov(&m, &bufs, None, 0, &mut iov));
    assert_eq!(iov.len(), 2);
    assert_eq!((iov[0].len, iov[1].len), (1024, 3072));
    // O_DIRECT: 512-byte alignment holds, 4 KiB memory alignment does not
    // (the buffer starts 1 KiB before a page), nor an odd file offset; then
    // the request bounces.
    let a = DirectAlign {
        mem: 512,
        offset: 512,
    };
    iov.clear();
    assert!(build_iov(&m, &bufs, Some(a), 4096, &mut iov));
    let a4k = DirectAlign {
        mem: 4096,
        offset: 512,
    };
    iov.clear();
    assert!(!build_iov(&m, &bufs, Some(a4k), 0, &mut iov));
    iov.clear();
    assert!(!build_iov(&m, &bufs[1..], Some(a), 100, &mut iov));
}

#[test]
fn a_write_and_a_read_across_regions_land_at_their_offsets() {
    let t = Tmp::new("regions", &vec![0u8; 1 << 20]);
    let m = mem();
    let mut e = t.engine(&m, CacheMode::Writeback);
    let data = pattern(4096 + 512, 3);
    m.write_slice(&data[..4096], GuestAddress((1 << 20) - 1024))
        .unwrap();
    m.write_slice(&data[4096..], GuestAddress(0x8000)).unwrap();
    e.submit(job(
        T_OUT,
        5,
        &[((1 << 20) - 1024, 4096), (0x8000, 512)],
        0x100,
    ));
    let d = wait(&mut e, 1);
    assert_eq!((d[0].head, d[0].len), (0x100, 1));
    assert_eq!(status(&m, 0x100), S_OK);
    let f = std::fs::read(&t.0).unwrap();
    assert!(f[5 * 512..5 * 512 + data.len()] == data[..]);
    assert!(f[..5 * 512].iter().all(|&b| b == 0));
    e.submit(job(
        T_IN,
        5,
        &[(0x20000, 512), ((1 << 20) + 0x1000, 4096)],
        0x101,
    ));
    let d = wait(&mut e, 1);
    assert_eq!(d[0].len, 4608 + 1, "bytes written to the guest + status");
    let mut back = vec![0u8; data.len()];
    m.read_slice(&mut back[..512], GuestAddress(0x20000))
        .unwrap();
    m.read_slice(&mut back[512..], GuestAddress((1 << 20) + 0x1000))
        .unwrap();
    assert!(back == data);
    assert_eq!(e.bounced(), 0, "both went through the ring");
}

#[test]
fn advance_skips_whole_and_partial_iovecs() {
    let mut iov = vec![
        HostIov {
            base: 1000,
            len: 100,
        },
        HostIov {
            base: 5000,
            len: 300,
        },
    ];
    let mut first = 0;
    advance(&mut iov, &mut first, 100);
    assert_eq!((first, iov[1].base, iov[1].len), (1, 5000, 300));
    advance(&mut iov, &mut first, 44);
    assert_eq!((first, iov[1].base, iov[1].len), (1, 5044, 256));
}

/// The file shrank under the image (its size is cached): the kernel returns
/// a short read, the remainder is resubmitted and hits the end of the file,
/// and the rest reads as zeros, as `RawImage::read_at` does.
#[test]
fn a_read_past_the_end_of_the_file_is_completed_with_zeros() {
    let data = pattern(64 << 10, 9);
    let t = Tmp::new("eof", &data);
    let m = mem();
    let disk = t.open(false, false).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&t.0)
        .unwrap()
        .set_len(6244)
        .unwrap();
    let mut e = engine(exec(disk, &m, CacheMode::Writeback, false));
    m.write_slice(&[0xff; 16384], GuestAddress(0x40000))
        .unwrap();
    e.submit(job(T_IN, 0, &[(0x40000, 16384)], 0x100));
    let d = wait(&mut e, 1);
    assert_eq!(status(&m, 0x100), S_OK);
    assert_eq!(d[0].len, 16384 + 1);
    let mut back = vec![0u8; 16384];
    m.read_slice(&mut back, GuestAddress(0x40000)).unwrap();
    assert!(back[..6244] == data[..6244]);
    assert!(back[6244..].iter().all(|&b| b == 0));
}

#[test]
fn o_direct_sends_aligned_requests_to_the_ring_and_bounces_the_rest() {
    let t = Tmp::new("direct", &vec![0u8; 1 << 20]);
    let Ok(disk) = t.open(false, true) else {
        eprintln!("skipped: the temp dir's file system refuses O_DIRECT");
        return;
    };
    let m = mem();
    let mut e = engine(exec(disk, &m, CacheMode::None, false));
    m.write_slice(&[0x61; 4096], GuestAddress(0x20000)).unwrap();
    e.submit(job(T_OUT, 8, &[(0x20000, 4096)], 0x100));
    wait(&mut e, 1);
    assert_eq!((status(&m, 0x100), e.bounced()), (S_OK, 0));
    m.write_slice(&[0x62; 511], GuestAddress(0x30001)).unwrap();
    m.write_obj(0x63u8, GuestAddress(0x31000)).unwrap();
    e.submit(job(T_OUT, 1, &[(0x30001, 511), (0x31000, 1)], 0x101));
    wait(&mut e, 1);
    assert_eq!((status(&m, 0x101), e.bounced()), (S_OK, 1));
    let f = std::fs::read(&t.0).unwrap();
    assert!(f[8 * 512..16 * 512].iter().all(|&b| b == 0x61));
    assert!(f[512..1023].iter().all(|&b| b == 0x62));
    assert_eq!(f[1023], 0x63);
}

/// Writethrough: a write completes only after an fdatasync that started
/// after it finished; writes that finish together share one fdatasync.
#[test]
fn writethrough_writes_complete_after_a_shared_fdatasync() {
    let t = Tmp::new("wt", &vec![0u8; 1 << 20]);
    let m = mem();
    let mut e = t.engine(&m, CacheMode::Writethrough);
    m.write_slice(&[0x77; 1024], GuestAddress(0x20000)).unwrap();
    e.submit(job(T_OUT, 2, &[(0x20000, 1024)], 0x100));
    let d = wait(&mut e, 1);
    assert_eq!((status(&m, 0x100), d[0].len), (S_OK, 1));
    assert_eq!(e.transfers(), 2, "the write, then its fdatasync");
    let f = std::fs::read(&t.0).unwrap();
    assert!(f[1024..2048].iter().all(|&b| b == 0x77));
    // Eight writes far apart (no merging): each needs a sync after it, but
    // not one each.
    for i in 0..8u64 {
        e.submit(job(
            T_OUT,
            100 + 10 * i,
            &[(0x30000 + i * 0x1000, 512)],
            0x200 + i,
        ));
    }
    let d = wait(&mut e, 8);
    assert_eq!(d.len(), 8);
    let syncs = e.transfers() - 2 - 8;
    assert!((1..=8).contains(&syncs), "{syncs} fdatasyncs for 8 writes");
    for i in 0..8 {
        assert_eq!(status(&m, 0x200 + i), S_OK);
    }
    // A read in writethrough mode needs no sync.
    let before = e.transfers();
    e.submit(job(T_IN, 2, &[(0x40000, 1024)], 0x300));
    wait(&mut e, 1);
    assert_eq!(e.transfers(), before + 1);
}

#[test]
fn flush_uses_the_ring_and_an_unsafe_flush_completes_at_once() {
    let t = Tmp::new("flush", &vec![0u8; 1 << 16]);
    let m = mem();
    let mut e = t.engine(&m, CacheMode::Writeback);
    e.submit(job(T_FLUSH, 0, &[], 0x100));
    wait(&mut e, 1);
    assert_eq!((status(&m, 0x100), e.bounced()), (S_OK, 0));
    // Close the first image: a second writer of the same file is refused
    // by the image lock, as QEMU refuses it.
    drop(e);

    let mut e = t.engine(&m, CacheMode::Unsafe);
    m.write_obj(0xffu8, GuestAddress(0x101)).unwrap();
    e.submit(job(T_FLUSH, 0, &[], 0x101));
    let mut out = Vec::new();
    e.take_done(&mut out).unwrap();
    assert_eq!(out.len(), 1, "completed without the kernel");
    assert_eq!(status(&m, 0x101), S_OK);
}

#[test]
fn kernel_errors_complete_with_ioerr() {
    // The device thinks it may write, the image fd is O_RDONLY: EBADF.
    let t = Tmp::new("ebadf", &vec![0u8; 1 << 16]);
    let m = mem();
    let mut e = engine(exec(
        t.open(true, false).unwrap(),
        &m,
        CacheMode::Writeback,
        false,
    ));
    e.submit(job(T_OUT, 0, &[(0x20000, 512)], 0x100));
    let d = wait(&mut e, 1);
    assert_eq!((status(&m, 0x100), d[0].len), (S_IOERR, 1));
}

#[test]
fn get_id_and_read_only_writes_take_the_pool_path() {
    let t = Tmp::new("bounce", &vec![0u8; 1 << 16]);
    let m = mem();
    let mut e = engine(exec(
        t.open(true, false).unwrap(),
        &m,
        CacheMode::Writeback,
        true,
    ));
    e.submit(job(T_GET_ID, 0, &[(0x20000, 20)], 0x100));
    e.submit(job(T_OUT, 0, &[(0x21000, 512)], 0x101));
    let d = wait(&mut e, 2);
    assert_eq!(e.bounced(), 2);
    assert_eq!((status(&m, 0x100), status(&m, 0x101)), (S_OK, S_IOERR));
    let id_done = d.iter().find(|d| d.head == 0x100).unwrap();
    assert_eq!(id_done.len, 20 + 1);
    let mut id = [0u8; 4];
    m.read_slice(&mut id, GuestAddress(0x20000)).unwrap();
    assert_eq!(&id, b"URNG");
}

/// A "disk" whose fd is a socket: a read waits in the kernel until the test
/// writes to the other end, so the drop below really has one to wait for.
#[derive(Debug)]
struct SocketDisk(OwnedFd);

impl DiskImage for SocketDisk {
    fn virtual_size(&self) -> u64 {
        1 << 20
    }
    fn read_at(&self, _: &mut [u8], _: u64) -> Result<(), DiskError> {
        Err(unsupported())
    }
    fn write_at(&self, _: &[u8], _: u64) -> Result<(), DiskError> {
        Err(unsupported())
    }
    fn flush(&self) -> Result<(), DiskError> {
        Ok(())
    }
    fn discard(&self, _: u64, _: u64) -> Result<(), DiskError> {
        Err(unsupported())
    }
    fn write_zeroes(&self, _: u64, _: u64) -> Result<(), DiskError> {
        Err(unsupported())
    }
    fn is_read_only(&self) -> bool {
        false
    }
    fn format(&self) -> Format {
        Format::Raw
    }
    fn resize(&self, _: u64) -> Result<(), DiskError> {
        Err(unsupported())
    }
    fn raw_file(&self) -> Option<RawFile> {
        Some(RawFile {
            fd: self.0.as_raw_fd(),
            direct: None,
        })
    }
}

fn unsupported() -> DiskError {
    DiskError::Unsupported {
        what: "this",
        format: "socket",
    }
}

#[test]
fn drop_returns_only_after_the_kernel_finished_every_request() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let m = mem();
    let disk: Arc<dyn DiskImage> = Arc::new(SocketDisk(OwnedFd::from(ours)));
    let mut e = engine(exec(disk, &m, CacheMode::Writeback, false));
    e.submit(job(T_IN, 0, &[(0x20000, 4096)], 0x100));
    e.kick().unwrap();
    let mut out = Vec::new();
    e.take_done(&mut out).unwrap();
    assert!(out.is_empty(), "the read waits for data");
    // Drop on another thread and watch it: it must block (sleep in the
    // kernel) with the request still in flight, and return only after the
    // data arrives. No timing assumption: a drop that does not wait is
    // seen finished before the write, whatever the load.
    let (tx, rx) = std::sync::mpsc::channel();
    let dropper = std::thread::spawn(move || {
        // SAFETY: gettid has no side effects.
        tx.send(unsafe { libc::gettid() }).unwrap();
        drop(e);
        Instant::now()
    });
    let tid = rx.recv().unwrap();
    let state = || {
        std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(") ").next().map(|r| r.starts_with('S')))
            .unwrap_or(false)
    };
    while !state() {
        assert!(
            !dropper.is_finished(),
            "drop returned with a request in flight"
        );
        std::thread::yield_now();
    }
    assert!(
        !dropper.is_finished(),
        "drop returned with a request in flight"
    );
    let written = Instant::now();
    let sent = (&theirs).write_all(&[0x5a; 4096]).is_ok();
    let dropped = dropper.join().unwrap();
    assert!(sent, "the image fd was closed with a request in flight");
    assert!(
        dropped >= written,
        "drop returned before the kernel's write"
    );
    assert_eq!(m.read_obj::<u8>(GuestAddress(0x20000)).unwrap(), 0x5a);
}

#[test]
fn the_engine_choice_follows_disk_and_override() {
    assert_eq!(EngineChoice::parse("threads"), Some(EngineChoice::Threads));
    assert_eq!(EngineChoice::parse("uring"), Some(EngineChoice::Uring));
    assert_eq!(EngineChoice::parse(""), Some(EngineChoice::Auto));
    assert_eq!(EngineChoice::parse("fast"), None);
    let raw = Tmp::new("choice-raw", &vec![0u8; 1 << 16]);
    let q = Tmp::new("choice-q", &[]);
    casemate_disk::qcow2::create(
        &q.0,
        &casemate_disk::Qcow2CreateOptions {
            size: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    let m = mem();
    let cases = [
        (&raw, EngineChoice::Auto, EngineKind::Uring),
        (&raw, EngineChoice::Threads, EngineKind::Threads),
        (&q, EngineChoice::Uring, EngineKind::Threads),
        (&q, EngineChoice::Auto, EngineKind::Threads),
    ];
    for (img, choice, want) in cases {
        let x = Arc::new(exec(
            img.open(false, false).unwrap(),
            &m,
            CacheMode::Writeback,
            false,
        ));
        let p = EngineParams {
            choice,
            threads: 2,
            max_in_flight: 256,
        };
        assert_eq!(IoEngine::start(x, &p).unwrap().kind(), want, "{choice:?}");
    }
}

#[test]
fn adjacent_requests_share_one_transfer_and_others_do_not() {
    let data = pattern(64 << 10, 5);
    let t = Tmp::new("merge", &data);
    let m = mem();
    let mut e = t.engine(&m, CacheMode::Writeback);
    // Four adjacent reads (one of two segments), then one elsewhere, then a
    // write adjacent to the last read (another kind: not merged).
    e.submit(job(T_IN, 0, &[(0x20000, 512)], 0x100));
    e.submit(job(T_IN, 1, &[(0x21000, 256), (0x22000, 256)], 0x101));
    e.submit(job(T_IN, 2, &[(0x23000, 1024)], 0x102));
    e.submit(job(T_IN, 4, &[(0x24000, 512)], 0x103));
    e.submit(job(T_IN, 40, &[(0x25000, 512)], 0x104));
    m.write_slice(&[0xc3; 512], GuestAddress(0x26000)).unwrap();
    e.submit(job(T_OUT, 41, &[(0x26000, 512)], 0x105));
    let d = wait(&mut e, 6);
    assert_eq!(
        e.transfers(),
        3,
        "sectors 0-4 in one read, 40, and the write"
    );
    for st in 0x100..=0x105 {
        assert_eq!(status(&m, st), S_OK, "status {st:#x}");
    }
    let len_of = |h: u16| d.iter().find(|d| d.head == h).unwrap().len;
    assert_eq!(
        (len_of(0x100), len_of(0x102), len_of(0x105)),
        (513, 1025, 1)
    );
    let read = |a: u64, n: usize| {
        let mut v = vec![0u8; n];
        m.read_slice(&mut v, GuestAddress(a)).unwrap();
        v
    };
    assert!(read(0x20000, 512) == data[..512]);
    assert!(read(0x21000, 256) == data[512..768]);
    assert!(read(0x22000, 256) == data[768..1024]);
    assert!(read(0x23000, 1024) == data[1024..2048]);
    assert!(read(0x24000, 512) == data[2048..2560]);
    assert!(read(0x25000, 512) == data[40 * 512..41 * 512]);
    let f = std::fs::read(&t.0).unwrap();
    assert!(f[41 * 512..42 * 512].iter().all(|&b| b == 0xc3));
}

/// A merged transfer that fails is split and each request retried alone;
/// here every write fails (the fd is read-only), each with its own IOERR.
#[test]
fn a_failed_merged_transfer_is_retried_request_by_request() {
    let t = Tmp::new("split", &vec![0u8; 1 << 16]);
    let m = mem();
    let mut e = engine(exec(
        t.open(true, false).unwrap(),
        &m,
        CacheMode::Writeback,
        false,
    ));
    for i in 0..3u64 {
        e.submit(job(T_OUT, i, &[(0x20000 + i * 0x1000, 512)], 0x100 + i));
    }
    let d = wait(&mut e, 3);
    assert_eq!(e.transfers(), 1 + 3);
    assert_eq!(d.len(), 3);
    for i in 0..3 {
        assert_eq!(status(&m, 0x100 + i), S_IOERR);
    }
}

/// With inline writes paused (as after a throttled write), writes go
/// through the ring (io-wq) and land the same, merged, short or not.
#[test]
fn writes_through_the_ring_land_like_inline_ones() {
    for cache in [CacheMode::Writeback, CacheMode::Writethrough] {
        let t = Tmp::new("ringw", &vec![0u8; 1 << 20]);
        let m = mem();
        let mut e = t.engine(&m, cache);
        e.pause_inline_writes();
        let data = pattern(8192, 11);
        m.write_slice(&data[..4096], GuestAddress((1 << 20) - 1024))
            .unwrap();
        m.write_slice(&data[4096..], GuestAddress(0x50000)).unwrap();
        e.submit(job(T_OUT, 20, &[((1 << 20) - 1024, 4096)], 0x100));
        e.submit(job(T_OUT, 28, &[(0x50000, 4096)], 0x101));
        wait(&mut e, 2);
        assert_eq!((status(&m, 0x100), status(&m, 0x101)), (S_OK, S_OK));
        let syncs = u64::from(cache == CacheMode::Writethrough);
        assert_eq!(e.transfers(), 1 + syncs, "{cache:?}: one merged write");
        let f = std::fs::read(&t.0).unwrap();
        assert!(f[20 * 512..20 * 512 + 8192] == data[..], "{cache:?}");
    }
}

#[test]
fn a_slow_inline_write_pauses_inline_writes_with_backoff() {
    let t = Tmp::new("backoff", &vec![0u8; 1 << 16]);
    let m = mem();
    let mut e = t.engine(&m, CacheMode::Writeback);
    assert!(e.inline_ok());
    e.note_inline_time(Duration::from_micros(100));
    assert!(e.inline_ok(), "a fast write changes nothing");
    e.note_inline_time(Duration::from_millis(30));
    assert!(!e.inline_ok());
    assert_eq!(e.inline_pause, INLINE_PAUSE);
    e.note_inline_time(Duration::from_millis(30));
    assert_eq!(e.inline_pause, INLINE_PAUSE * 2, "slow again: longer pause");
    for _ in 0..10 {
        e.note_inline_time(Duration::from_millis(30));
    }
    assert_eq!(e.inline_pause, INLINE_PAUSE_MAX);
    // O_DIRECT files never write inline.
    let d = Tmp::new("backoff-d", &vec![0u8; 1 << 16]);
    if let Ok(disk) = d.open(false, true) {
        let e = engine(exec(disk, &m, CacheMode::None, false));
        assert!(!e.inline_ok());
    }
}

/// O_DIRECT: a write alone in its kick with nothing in flight runs inline;
/// one that shares its kick with another transfer, or follows a flush, goes
/// through the ring; the data lands either way.
#[test]
fn a_lone_o_direct_write_runs_inline_and_company_sends_it_to_the_ring() {
    let t = Tmp::new("lone", &vec![0u8; 1 << 20]);
    let Ok(disk) = t.open(false, true) else {
        eprintln!("skipped: the temp dir's file system refuses O_DIRECT");
        return;
    };
    let m = mem();
    let mut e = engine(exec(disk, &m, CacheMode::None, false));
    for (i, seed) in [(0u64, 1u8), (1, 2), (2, 3), (3, 4)] {
        m.write_slice(&pattern(4096, seed), GuestAddress(0x20000 + i * 0x1000))
            .unwrap();
    }
    e.submit(job(T_OUT, 8, &[(0x20000, 4096)], 0x100));
    wait(&mut e, 1);
    assert_eq!(
        (status(&m, 0x100), e.inlined(), e.transfers()),
        (S_OK, 1, 1)
    );
    // Two writes that do not merge: both in the ring.
    e.submit(job(T_OUT, 64, &[(0x21000, 4096)], 0x101));
    e.submit(job(T_OUT, 128, &[(0x22000, 4096)], 0x102));
    wait(&mut e, 2);
    assert_eq!(e.inlined(), 1, "a write with company goes to the ring");
    // A write then a flush in one kick: the flush must not pass it.
    e.submit(job(T_OUT, 256, &[(0x23000, 4096)], 0x103));
    e.submit(job(T_FLUSH, 0, &[], 0x104));
    wait(&mut e, 2);
    assert_eq!(e.inlined(), 1);
    assert_eq!((status(&m, 0x103), status(&m, 0x104)), (S_OK, S_OK));
    let f = std::fs::read(&t.0).unwrap();
    for (sector, seed) in [(8usize, 1u8), (64, 2), (128, 3), (256, 4)] {
        assert!(
            f[sector * 512..sector * 512 + 4096] == pattern(4096, seed)[..],
            "sector {sector}"
        );
    }
    // A lone write that queued up while one ran inline (the worker did not
    // go idle in between) goes to the ring; after `idle`, inline again.
    e.idle();
    e.submit(job(T_OUT, 8, &[(0x20000, 4096)], 0x105));
    wait(&mut e, 1);
    assert_eq!(e.inlined(), 2);
    e.submit(job(T_OUT, 16, &[(0x21000, 4096)], 0x106));
    wait(&mut e, 1);
    assert_eq!((status(&m, 0x106), e.inlined()), (S_OK, 2));
    e.idle();
    e.submit(job(T_OUT, 24, &[(0x22000, 4096)], 0x107));
    wait(&mut e, 1);
    assert_eq!((status(&m, 0x107), e.inlined()), (S_OK, 3));
}
