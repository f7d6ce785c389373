//! The io_uring engine for raw images: READV/WRITEV at `sector * 512` on the
//! image's fd with iovecs that point straight into guest memory (no bounce
//! copy, no thread hop), FSYNC(DATASYNC) for FLUSH, `RWF_DSYNC` on writes in
//! writethrough mode, completions announced through an eventfd registered
//! with the ring. It runs entirely on the device's worker thread.
//!
//! Raw only, because only there is a guest offset a file offset
//! (`DiskImage::raw_file`). What it does not submit itself goes to a
//! one-thread pool sharing the same eventfd and the same `Executor` as the
//! thread-pool engine, so those paths keep their exact semantics: GET_ID,
//! discard and write-zeroes (whose hole-punching and zero-writing fallbacks
//! live in `casemate-disk`), writes on a read-only device, zero-length and
//! oversized requests, and O_DIRECT requests whose guest buffers are not
//! aligned as the file requires (checked before submitting; an EINVAL that
//! still comes back from an O_DIRECT file sends the request there too).
//!
//! Short transfers are resubmitted for the remainder; a write that makes no
//! progress fails with IOERR; a read that hits the end of the file reads the
//! rest as zeros, as `RawImage::read_at` does. Dropping the engine waits for
//! every request the kernel holds, so no kernel write reaches guest memory
//! after the worker is gone.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use casemate_disk::{DirectAlign, RawFile};
use io_uring::{opcode, squeue, types, IoUring};
use vm_memory::{Address, Bytes, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use super::exec::Executor;
use super::pool::ThreadPool;
use super::{CacheMode, Done, Job, MAX_REQUEST};
use crate::virtio::blk::request::*;

/// Ring sizes: at least this many entries, at most that many.
const MIN_ENTRIES: u32 = 64;
const MAX_ENTRIES: u32 = 4096;
/// The kernel's limit on iovecs per READV/WRITEV.
const IOV_MAX: usize = 1024;
/// EINTR/EAGAIN completions resubmitted before the request fails.
const MAX_RETRIES: u8 = 8;
/// Submission attempts that find the kernel short of resources before
/// `kick` gives up and reports the error.
const MAX_BUSY_TRIES: u32 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum UringSetupError {
    #[error("cannot set up an io_uring of {entries} entries")]
    Ring {
        entries: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot register the completion eventfd with the ring")]
    RegisterEventFd {
        #[source]
        source: io::Error,
    },
    #[error("cannot start the fallback I/O thread")]
    Fallback {
        #[source]
        source: io::Error,
    },
}

/// One `struct iovec` as the kernel reads it. The host address is kept as
/// an integer so that the engine stays `Send`; the layout is `iovec`'s.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HostIov {
    base: usize,
    len: usize,
}

const _: () = assert!(
    std::mem::size_of::<HostIov>() == std::mem::size_of::<libc::iovec>()
        && std::mem::align_of::<HostIov>() == std::mem::align_of::<libc::iovec>()
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum OpKind {
    #[default]
    Read,
    Write,
    Flush,
}

/// One request in the ring. Slots are reused, iovec buffers with them.
#[derive(Default)]
struct Op {
    /// `Some` while the kernel may hold an SQE of this slot.
    job: Option<Job>,
    kind: OpKind,
    iov: Vec<HostIov>,
    /// First iovec not fully transferred yet.
    first: usize,
    /// Bytes transferred so far.
    done: u64,
    retries: u8,
}

pub struct UringEngine {
    ring: IoUring,
    /// Holds the guest memory mapping and, through `disk`, the fd: both
    /// outlive every SQE because `Drop` drains the ring first.
    exec: Arc<Executor>,
    fd: RawFd,
    direct: Option<DirectAlign>,
    write_flags: i32,
    evt: Arc<EventFd>,
    ops: Vec<Op>,
    free: Vec<usize>,
    in_flight: usize,
    /// Completions not yet handed to the worker.
    ready: Vec<Done>,
    cqes: Vec<(u64, i32)>,
    bounced: u64,
    fallback: ThreadPool,
}

impl UringEngine {
    /// A ring for up to `max_in_flight` requests on `file`, the raw file of
    /// `exec.disk`, completions signalled on `evt`.
    pub fn new(
        exec: Arc<Executor>,
        file: RawFile,
        evt: Arc<EventFd>,
        max_in_flight: usize,
    ) -> Result<Self, UringSetupError> {
        let entries = u32::try_from(max_in_flight.max(1))
            .unwrap_or(MAX_ENTRIES)
            .clamp(MIN_ENTRIES, MAX_ENTRIES)
            .next_power_of_two();
        // The completion queue is twice the submission queue and never holds
        // more than `entries` completions (one SQE per slot at a time), so it
        // cannot overflow.
        let ring =
            IoUring::new(entries).map_err(|source| UringSetupError::Ring { entries, source })?;
        ring.submitter()
            .register_eventfd(evt.as_raw_fd())
            .map_err(|source| UringSetupError::RegisterEventFd { source })?;
        let fallback = ThreadPool::new(exec.clone(), 1, evt.clone())
            .map_err(|source| UringSetupError::Fallback { source })?;
        Ok(Self {
            ring,
            fd: file.fd,
            direct: file.direct,
            write_flags: write_flags(exec.cache),
            exec,
            evt,
            ops: (0..entries).map(|_| Op::default()).collect(),
            free: (0..entries as usize).rev().collect(),
            in_flight: 0,
            ready: Vec::new(),
            cqes: Vec::new(),
            bounced: 0,
            fallback,
        })
    }

    pub fn entries(&self) -> usize {
        self.ops.len()
    }

    /// Requests sent to the fallback thread so far.
    pub fn bounced(&self) -> u64 {
        self.bounced
    }

    pub fn done_evt(&self) -> &EventFd {
        &self.evt
    }

    /// Queue `job`: as an SQE (started by `kick`), on the fallback thread,
    /// or completed at once (FLUSH with cache=unsafe).
    pub fn submit(&mut self, job: Job) {
        let kind = match job.req.kind {
            T_IN => OpKind::Read,
            T_OUT if !self.exec.read_only => OpKind::Write,
            T_FLUSH if self.exec.cache == CacheMode::Unsafe => return self.finish(job, S_OK, 0),
            // A read-only image's flush is a no-op in `DiskImage::flush`.
            T_FLUSH if !self.exec.disk.is_read_only() => OpKind::Flush,
            _ => return self.bounce(job),
        };
        let Some(idx) = self.free.pop() else {
            return self.bounce(job);
        };
        let op = &mut self.ops[idx];
        op.iov.clear();
        (op.kind, op.first, op.done, op.retries) = (kind, 0, 0, 0);
        if kind != OpKind::Flush {
            let r = &job.req;
            let usable = r.data_len > 0
                && r.data_len <= MAX_REQUEST
                && build_iov(
                    &self.exec.mem,
                    &r.data,
                    self.direct,
                    r.sector.wrapping_mul(SECTOR),
                    &mut op.iov,
                );
            if !usable {
                self.free.push(idx);
                return self.bounce(job);
            }
        }
        op.job = Some(job);
        self.in_flight += 1;
        self.push(idx);
    }

    /// Hand every queued SQE to the kernel in one `io_uring_enter`.
    pub fn kick(&mut self) -> io::Result<()> {
        if !self.ready.is_empty() {
            // Completed without the ring: make sure the worker looks.
            let _ = self.evt.write(1);
        }
        self.submit_pending()
    }

    /// Append every completion available now to `out`, resubmitting the
    /// remainder of short transfers on the way.
    pub fn take_done(&mut self, out: &mut Vec<Done>) -> io::Result<()> {
        let mut r = Ok(());
        loop {
            if !self.reap() {
                break;
            }
            // Resubmissions (short transfers, retries) go out at once;
            // buffered I/O often completes inside the submit call.
            if let Err(e) = self.submit_pending() {
                r = Err(e);
                break;
            }
        }
        self.fallback.take_done(out);
        out.append(&mut self.ready);
        r
    }

    fn sqe(&self, idx: usize) -> Option<squeue::Entry> {
        let op = &self.ops[idx];
        let job = op.job.as_ref()?;
        let fd = types::Fd(self.fd);
        // Parsing bounded `sector * 512 + data_len` by the capacity for
        // reads and writes; a FLUSH's sector is unused.
        let offset = job.req.sector.wrapping_mul(SECTOR).wrapping_add(op.done);
        let iov = op.iov[op.first..].as_ptr().cast::<libc::iovec>();
        let n = (op.iov.len() - op.first) as u32;
        let e = match op.kind {
            OpKind::Flush => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            OpKind::Read => opcode::Readv::new(fd, iov, n).offset(offset).build(),
            OpKind::Write => opcode::Writev::new(fd, iov, n)
                .offset(offset)
                .rw_flags(self.write_flags)
                .build(),
        };
        Some(e.user_data(idx as u64))
    }

    /// Queue the SQE for slot `idx` (new, or the remainder of a short one).
    fn push(&mut self, idx: usize) {
        let Some(entry) = self.sqe(idx) else { return };
        for _ in 0..2 {
            // SAFETY: the SQE points at `self.ops[idx].iov`, whose heap buffer
            // is neither touched nor freed until this slot's completion is
            // reaped (slots are only recycled in `release`, after their CQE);
            // the iovecs point into guest memory that `self.exec.mem` keeps
            // mapped; the fd belongs to `self.exec.disk`, kept open by the
            // same Arc. `Drop` waits for every slot's completion before any of
            // these can be released.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // Cannot happen (one SQE per slot, as many slots as entries),
            // but a full queue only needs draining into the kernel.
            if let Err(e) = self.ring.submit() {
                log::debug!("{}: io_uring submit failed: {e}", self.exec.name);
            }
        }
        self.complete(idx, S_IOERR, 0, -libc::EBUSY);
    }

    fn submit_pending(&mut self) -> io::Result<()> {
        let mut busy = 0;
        while !self.ring.submission().is_empty() {
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) => match e.raw_os_error() {
                    Some(libc::EINTR) => {}
                    Some(libc::EAGAIN | libc::EBUSY) if busy < MAX_BUSY_TRIES => {
                        // Short of resources: completions free them.
                        busy += 1;
                        if !self.reap() {
                            std::thread::yield_now();
                        }
                    }
                    _ => return Err(e),
                },
            }
        }
        Ok(())
    }

    /// Handle every completion in the ring; false if there was none.
    fn reap(&mut self) -> bool {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
        for &(ud, res) in &cqes {
            self.on_cqe(ud as usize, res);
        }
        let any = !cqes.is_empty();
        self.cqes = cqes;
        any
    }

    fn on_cqe(&mut self, idx: usize, res: i32) {
        let Some(op) = self.ops.get_mut(idx) else {
            return;
        };
        let Some(job) = op.job.as_ref() else { return };
        let total = job.req.data_len;
        if op.kind == OpKind::Flush {
            let status = if res >= 0 { S_OK } else { S_IOERR };
            return self.complete(idx, status, 0, res);
        }
        if res < 0 {
            let errno = -res;
            if matches!(errno, libc::EINTR | libc::EAGAIN) && op.retries < MAX_RETRIES {
                op.retries += 1;
                return self.push(idx);
            }
            if errno == libc::EINVAL && self.direct.is_some() {
                // O_DIRECT refused our alignment guess: bounce it instead.
                if let Some(job) = self.release(idx) {
                    self.bounce(job);
                }
                return;
            }
            return self.complete(idx, S_IOERR, 0, res);
        }
        let n = (res as u64).min(total - op.done);
        if n == 0 {
            if op.kind == OpKind::Write {
                return self.complete(idx, S_IOERR, 0, -libc::EIO);
            }
            // End of file: the rest reads as zeros, as in RawImage::read_at.
            let ok = zero_fill(&self.exec.mem, &job.req.data, op.done);
            let status = if ok { S_OK } else { S_IOERR };
            return self.complete(idx, status, total as u32, res);
        }
        op.done += n;
        if op.done == total {
            let written = if op.kind == OpKind::Read {
                total as u32
            } else {
                0
            };
            return self.complete(idx, S_OK, written, res);
        }
        advance(&mut op.iov, &mut op.first, n);
        op.retries = 0;
        self.push(idx);
    }

    /// Free slot `idx`; its job, if it had one.
    fn release(&mut self, idx: usize) -> Option<Job> {
        let job = self.ops.get_mut(idx)?.job.take()?;
        self.free.push(idx);
        self.in_flight -= 1;
        Some(job)
    }

    fn complete(&mut self, idx: usize, status: u8, written: u32, res: i32) {
        let Some(job) = self.release(idx) else { return };
        if status != S_OK {
            log::debug!(
                "{}: request type {} at sector {} failed: {}",
                self.exec.name,
                job.req.kind,
                job.req.sector,
                io::Error::from_raw_os_error(-res)
            );
        }
        self.finish(job, status, written);
    }

    /// Write the status byte and queue the completion for the worker.
    fn finish(&mut self, job: Job, status: u8, written: u32) {
        let len = match self.exec.mem.write_obj(status, job.req.status) {
            Ok(()) => written + 1,
            Err(_) => 0,
        };
        self.ready.push(Done {
            slot: job.slot,
            head: job.head,
            len,
        });
    }

    fn bounce(&mut self, job: Job) {
        self.bounced += 1;
        self.fallback.submit(job);
    }
}

impl Drop for UringEngine {
    fn drop(&mut self) {
        // Wait (no cancel: reads and writes of regular files run to the end
        // anyway) until the kernel has returned every slot. Short transfers
        // are not resubmitted: the device is going away.
        let mut warned = false;
        while self.in_flight > 0 {
            if let Err(e) = self.ring.submit_and_wait(1) {
                if e.raw_os_error() != Some(libc::EINTR) {
                    if !warned {
                        log::warn!(
                            "{}: waiting for {} io_uring requests: {e}",
                            self.exec.name,
                            self.in_flight
                        );
                        warned = true;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
            let done: Vec<u64> = self.ring.completion().map(|c| c.user_data()).collect();
            for ud in done {
                self.release(ud as usize);
            }
        }
        // The fallback pool joins its thread when it drops, after this.
    }
}

/// `RWF_DSYNC` in writethrough mode: a write completes once it is durable,
/// as the pool's write-then-fdatasync does.
fn write_flags(cache: CacheMode) -> i32 {
    if cache == CacheMode::Writethrough {
        libc::RWF_DSYNC
    } else {
        0
    }
}

/// The host iovecs for `bufs` (parsed, so inside guest RAM), split where a
/// buffer crosses memory regions. False when they cannot go to the kernel
/// as they are: not mapped, too many, or not aligned as O_DIRECT needs.
fn build_iov(
    mem: &GuestMemoryMmap,
    bufs: &[Buf],
    direct: Option<DirectAlign>,
    offset: u64,
    out: &mut Vec<HostIov>,
) -> bool {
    if direct.is_some_and(|a| !offset.is_multiple_of(u64::from(a.offset))) {
        return false;
    }
    for b in bufs {
        let len = b.len as usize;
        let in_one_region = mem.to_region_addr(b.addr).and_then(|(r, off)| {
            let fits = off.raw_value() + u64::from(b.len) <= r.len();
            fits.then(|| r.get_host_address(off).ok()).flatten()
        });
        let pieces: &mut dyn Iterator<Item = Option<HostIov>> = match in_one_region {
            // Nearly always: the buffer lies in one region.
            Some(p) => &mut std::iter::once(Some(HostIov {
                base: p as usize,
                len,
            })),
            None => &mut GuestMemoryBackend::get_slices(mem, b.addr, len).map(|s| {
                s.ok().map(|s| HostIov {
                    base: s.ptr_guard_mut().as_ptr() as usize,
                    len: s.len(),
                })
            }),
        };
        for iov in pieces {
            let Some(iov) = iov else { return false };
            if iov.len == 0 {
                continue;
            }
            let aligned = |a: DirectAlign| {
                iov.base.is_multiple_of(a.mem as usize) && iov.len.is_multiple_of(a.offset as usize)
            };
            if direct.is_some_and(|a| !aligned(a)) || out.len() == IOV_MAX {
                return false;
            }
            out.push(iov);
        }
    }
    true
}

/// Drop the first `n` bytes (fewer than the total) from `iov[*first..]`.
fn advance(iov: &mut [HostIov], first: &mut usize, mut n: u64) {
    while let Some(v) = iov.get_mut(*first) {
        if n < v.len as u64 {
            v.base += n as usize;
            v.len -= n as usize;
            return;
        }
        n -= v.len as u64;
        *first += 1;
    }
}

/// Zero the guest buffers from byte `from` of the request's data on.
fn zero_fill(mem: &GuestMemoryMmap, bufs: &[Buf], mut from: u64) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    for b in bufs {
        let len = u64::from(b.len);
        if from >= len {
            from -= len;
            continue;
        }
        let (mut at, end) = (b.addr.0 + from, b.addr.0 + len);
        from = 0;
        while at < end {
            let n = (end - at).min(ZEROS.len() as u64) as usize;
            if mem
                .write_slice(&ZEROS[..n], vm_memory::GuestAddress(at))
                .is_err()
            {
                return false;
            }
            at += n as u64;
        }
    }
    true
}

#[cfg(test)]
mod tests;
