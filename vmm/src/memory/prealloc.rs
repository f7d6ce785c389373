//! Populating guest RAM before the guest runs (`prealloc=on`): picks a
//! method per kind of mapping, splits the work into chunks taken by N
//! threads, and draws a progress line on a terminal for sizes above 1 GiB.
//! Population starts in the background (`Population::start`, on N - 1
//! threads) so the caller can create the VM meanwhile, then becomes the
//! N-th thread in `finish`; nothing may write guest RAM until `finish`
//! returns. N defaults to the CPUs this process may run on. Owns no
//! mappings: the caller keeps them alive until then. Which page size each
//! chunk gets is `steer`'s decision; this module only times the chunks.
//!
//! Which method, and why (4 GiB, 2 host CPUs, warm memory, see
//! tools/membench; this host is shared, so medians of 20 alternating runs):
//! - MADV_POPULATE_WRITE wherever the kernel has it (5.14+), for every kind
//!   of mapping. With THP, 64 MiB chunks on 2 threads: 424 ms wall and
//!   396 ms CPU, against 446 ms and 419 ms for touching each 4 KiB page
//!   from user space (the first write to each 2 MiB faults in a huge page,
//!   the other 511 cost a little) and no better for one write per 2 MiB.
//!   Without THP: 720 ms against 996 ms for touching (a user fault per
//!   4 KiB costs more than the kernel's loop). One 2 GiB call per thread
//!   instead of chunks was slower (360-1500 ms against 200-300 ms in one
//!   run), hence the chunks. It also fails cleanly: hugetlb, file and
//!   shared mappings could SIGBUS on a touch (pool exhausted, a hole on a
//!   full filesystem), where the advice returns an error, reported with
//!   the offset; and it keeps the contents of file-backed RAM.
//! - Without it: MAP_POPULATE for one thread; several threads touch:
//!   writing zeros on fresh private anonymous RAM (one fault per page; it
//!   reads as zeros already), rewriting each page's first byte elsewhere to
//!   keep its contents.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::steer::Steer;
use super::MemoryError;
use crate::config::validate::human_size;

/// How pages get populated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// MADV_POPULATE_WRITE (Linux 5.14+): one syscall per chunk, no signals
    /// on failure (EFAULT/ENOMEM instead of SIGBUS).
    PopulateWrite,
    /// MAP_POPULATE at mmap time: the kernel faults pages in on one thread.
    MapPopulate,
    /// Write a zero byte to every page. Only for fresh private anonymous
    /// memory, which reads as zeros already.
    TouchZero,
    /// Rewrite the first byte of every page with itself (keeps contents).
    Touch,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Self::PopulateWrite => "MADV_POPULATE_WRITE",
            Self::MapPopulate => "MAP_POPULATE",
            Self::TouchZero => "touch",
            Self::Touch => "touch (read-write)",
        }
    }
}

/// Work per chunk: small enough for progress and load balance, large enough
/// that syscall cost vanishes (512 calls for 4 GiB); a multiple of 2, 4 and
/// 8 MiB hugepages (1 GiB pages make one chunk each). MADV_POPULATE_WRITE
/// holds mmap_lock for reading through a call, and every mmap the VM set-up
/// running alongside makes (vCPU run areas, thread stacks) waits for it and
/// then blocks the next readers: with 64 MiB chunks that set-up took 21 ms
/// instead of 9 ms (median of 10, same load).
const CHUNK: usize = 8 << 20;
/// Progress is drawn for preallocations larger than this.
const PROGRESS_ABOVE: u64 = 1 << 30;
/// How often the progress line is redrawn at most.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Whether the kernel knows MADV_POPULATE_WRITE, tried on one scratch page.
pub fn populate_write_supported() -> bool {
    // SAFETY: a fresh private anonymous page, unmapped below; no Rust
    // reference ever points into it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return false;
    }
    // SAFETY: `p` is the page mapped above.
    let ok = unsafe { libc::madvise(p, 4096, libc::MADV_POPULATE_WRITE) } == 0;
    // SAFETY: unmapping the page mapped above, used by nothing else.
    unsafe { libc::munmap(p, 4096) };
    ok
}

/// The method for `threads` threads; `anon_private`: the mapping is fresh
/// MAP_PRIVATE | MAP_ANONYMOUS memory (all zeros). See the module doc for
/// the measurements behind the order.
pub fn choose(anon_private: bool, populate_write: bool, threads: usize) -> Method {
    if populate_write {
        Method::PopulateWrite
    } else if threads <= 1 {
        Method::MapPopulate
    } else if anon_private {
        Method::TouchZero
    } else {
        Method::Touch
    }
}

/// One thread per CPU this process may run on (sched_getaffinity, and the
/// cgroup CPU quota where one is set).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A piece of work: `len` bytes at `addr`, `offset` bytes into guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    addr: usize,
    len: usize,
    offset: u64,
}

/// Split mappings `(addr, len)` into chunks aligned to `page` within each.
fn chunks(maps: &[(usize, usize)], page: usize) -> Vec<Chunk> {
    let step = CHUNK.max(page);
    let mut out = Vec::new();
    let mut offset = 0u64;
    for &(addr, len) in maps {
        let mut off = 0;
        while off < len {
            let n = step.min(len - off);
            out.push(Chunk {
                addr: addr + off,
                len: n,
                offset,
            });
            off += n;
            offset += n as u64;
        }
    }
    out
}

fn touch(addr: usize, len: usize, page: usize, keep: bool) {
    for off in (0..len).step_by(page) {
        let p = (addr + off) as *mut u8;
        if keep {
            // SAFETY: `p` is inside a live guest RAM mapping that nothing
            // writes until population ends; rewriting the byte it holds
            // keeps file-backed contents while forcing a write fault.
            unsafe { p.write_volatile(p.read_volatile()) };
        } else {
            // SAFETY: `p` is inside a live, fresh private anonymous guest
            // RAM mapping that nothing writes until population ends; its
            // bytes read as zero, so writing a zero changes nothing.
            unsafe { p.write_volatile(0) };
        }
    }
}

fn populate_chunk(method: Method, c: Chunk, page: usize) -> std::io::Result<()> {
    match method {
        Method::PopulateWrite => loop {
            // SAFETY: the chunk lies inside a live guest RAM mapping; the
            // advice only faults pages in, leaving their contents.
            let rc = unsafe { libc::madvise(c.addr as *mut _, c.len, libc::MADV_POPULATE_WRITE) };
            if rc == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        },
        // Populated by mmap already.
        Method::MapPopulate => Ok(()),
        // A fault in the middle of a huge page populates all of it, so
        // stepping by 4 KiB costs one fault per huge page plus cheap writes.
        Method::TouchZero => {
            touch(c.addr, c.len, page.min(4096), false);
            Ok(())
        }
        Method::Touch => {
            touch(c.addr, c.len, page.min(4096), true);
            Ok(())
        }
    }
}

/// State shared by the population threads.
struct Shared {
    work: Vec<Chunk>,
    page: usize,
    method: Method,
    total: u64,
    next: AtomicUsize,
    done: AtomicU64,
    failed: Mutex<Option<MemoryError>>,
    /// Huge or small pages per chunk (THP-advised anonymous RAM only).
    steer: Option<Steer>,
}

impl Shared {
    /// Take chunks until none are left or one fails; `tick` runs after
    /// each chunk (the progress line on the finishing thread).
    fn work(&self, mut tick: impl FnMut()) {
        while let Some(&c) = self.work.get(self.next.fetch_add(1, Ordering::Relaxed)) {
            let ticket = self.steer.as_ref().map(|s| (s.begin(), Instant::now()));
            let res = populate_chunk(self.method, c, self.page);
            if let (Some(s), Some((t, at))) = (&self.steer, ticket) {
                s.end(t, c.addr, c.len, at.elapsed());
            }
            if let Err(source) = res {
                let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                f.get_or_insert(MemoryError::Prealloc {
                    method: self.method.name(),
                    offset: c.offset,
                    size: self.total,
                    source,
                });
                // Stop every thread: the VM cannot start anyway.
                self.stop();
                return;
            }
            self.done.fetch_add(c.len as u64, Ordering::Relaxed);
            tick();
        }
    }

    fn stop(&self) {
        self.next.store(self.work.len(), Ordering::Relaxed);
    }
}

/// Population under way on `threads - 1` background threads; the thread
/// that calls `finish` is the last one. Dropping it stops the workers after
/// their current chunk and joins them, so the mappings can go after it.
pub struct Population {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    started: Instant,
    threads: usize,
}

impl Population {
    /// Start populating `maps` with `threads` threads in all. `page` is
    /// the backing page size (a chunk never splits a hugepage). `steer`:
    /// choose huge or small pages per chunk by speed (see `steer`); only
    /// for THP-advised private anonymous RAM.
    pub fn start(
        maps: &[(usize, usize)],
        page: usize,
        method: Method,
        threads: usize,
        steer: bool,
    ) -> Self {
        let work = chunks(maps, page);
        let threads = threads.clamp(1, work.len().max(1));
        let shared = Arc::new(Shared {
            // The window: two chunks per thread, and at least 3 so that
            // its upper median ignores one spike.
            steer: steer.then(|| Steer::new((2 * threads).max(3))),
            total: maps.iter().map(|m| m.1 as u64).sum(),
            work,
            page,
            method,
            next: AtomicUsize::new(0),
            done: AtomicU64::new(0),
            failed: Mutex::new(None),
        });
        let mut workers = Vec::new();
        for i in 1..threads {
            let s = shared.clone();
            match crate::threads::spawn_with_role(
                crate::threads::Role::Prealloc,
                format!("cm-prealloc{i}"),
                move || s.work(|| ()),
            ) {
                Ok(h) => workers.push(h),
                // The finishing thread takes whatever is left.
                Err(e) => log::warn!("prealloc thread {i} did not start ({e}); fewer threads work"),
            }
        }
        Self {
            shared,
            workers,
            started: Instant::now(),
            threads,
        }
    }

    /// Populate the rest on this thread, wait for the workers, and return
    /// the first failure. Guest RAM is fully populated when this is Ok,
    /// which holds the ranges steering filled with small pages.
    pub fn finish(mut self) -> Result<Vec<(usize, usize)>, MemoryError> {
        let s = self.shared.clone();
        let show = s.total > PROGRESS_ABOVE && std::io::stderr().is_terminal();
        let mut progress = Progress::new(s.total, show);
        s.work(|| progress.draw(s.done.load(Ordering::Relaxed)));
        for h in self.workers.drain(..) {
            // A panicking worker aborts the process (panic = abort).
            let _ = h.join();
        }
        progress.end();
        let small = s.steer.as_ref().map(Steer::finish).unwrap_or_default();
        if let Some(e) = s.failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        log::debug!(
            "prealloc: {} with {} x{} in {:?}; {} in ranges that may hold small pages",
            human_size(s.total),
            s.method.name(),
            self.threads,
            self.started.elapsed(),
            human_size(small.iter().map(|r| r.1 as u64).sum())
        );
        Ok(small)
    }
}

impl Drop for Population {
    fn drop(&mut self) {
        self.shared.stop();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        // THP back on for the process, whatever phase steering was in.
        if let Some(s) = &self.shared.steer {
            s.finish();
        }
    }
}

/// The `preallocating N of guest RAM: P%` line on stderr.
struct Progress {
    total: u64,
    show: bool,
    last: Option<(u64, Instant)>,
}

impl Progress {
    fn new(total: u64, show: bool) -> Self {
        Self {
            total,
            show,
            last: None,
        }
    }

    fn draw(&mut self, done: u64) {
        if !self.show || self.last.is_some_and(|(_, t)| t.elapsed() < PROGRESS_EVERY) {
            return;
        }
        let pct = done * 100 / self.total.max(1);
        if self.last.is_some_and(|(p, _)| p == pct) {
            return;
        }
        self.last = Some((pct, Instant::now()));
        let mut e = std::io::stderr();
        let _ = write!(
            e,
            "\rcasemate: preallocating {} of guest RAM: {pct:3}%",
            human_size(self.total)
        );
        let _ = e.flush();
    }

    fn end(&self) {
        if self.last.is_some() {
            eprintln!(
                "\rcasemate: preallocating {} of guest RAM: 100%",
                human_size(self.total)
            );
        }
    }
}

/// Populate every byte of `maps` with `threads` threads and wait for it.
pub fn run(
    maps: &[(usize, usize)],
    page: usize,
    method: Method,
    threads: usize,
) -> Result<(), MemoryError> {
    Population::start(maps, page, method, threads, false)
        .finish()
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_byte_once() {
        let first = 3 * CHUNK + CHUNK / 2;
        let maps = [(0x1000_0000, first), (0x9000_0000, 3 << 20)];
        let c = chunks(&maps, 2 << 20);
        assert_eq!(c.len(), 5);
        assert_eq!(c.iter().map(|x| x.len).sum::<usize>(), first + (3 << 20));
        assert_eq!(c[3].addr, 0x1000_0000 + 3 * CHUNK);
        assert_eq!(c[3].len, CHUNK / 2);
        assert_eq!(c[4].addr, 0x9000_0000);
        assert_eq!(c[4].offset, first as u64, "offsets count across mappings");
        assert_eq!(
            chunks(&maps[..1], 1 << 30).len(),
            1,
            "1 GiB pages stay whole"
        );
    }

    #[test]
    fn method_per_mapping() {
        assert_eq!(choose(true, true, 2), Method::PopulateWrite);
        assert_eq!(choose(false, true, 1), Method::PopulateWrite);
        assert_eq!(choose(false, false, 1), Method::MapPopulate);
        assert_eq!(choose(true, false, 1), Method::MapPopulate);
        assert_eq!(choose(true, false, 4), Method::TouchZero);
        assert_eq!(choose(false, false, 4), Method::Touch);
    }

    /// A private anonymous mapping of `len` bytes, unmapped on drop.
    struct Anon(usize, usize);

    impl Anon {
        fn new(len: usize, thp: bool) -> Self {
            // SAFETY: a fresh anonymous mapping; tests reach it only through
            // raw pointers and slices made below while it is mapped.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            if thp {
                // SAFETY: advice on the mapping made above; a refusal only
                // means small pages.
                unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) };
            }
            Self(p as usize, len)
        }

        /// Resident pages (mincore), of `len / 4096`.
        fn resident(&self) -> usize {
            let mut v = vec![0u8; self.1 / 4096];
            // SAFETY: `v` has one byte per page of the live mapping.
            let rc = unsafe { libc::mincore(self.0 as *mut _, self.1, v.as_mut_ptr()) };
            assert_eq!(rc, 0);
            v.iter().filter(|&&b| b & 1 != 0).count()
        }
    }

    impl Drop for Anon {
        fn drop(&mut self) {
            // SAFETY: unmapping the mapping made in `new`, used by no one now.
            unsafe { libc::munmap(self.0 as *mut _, self.1) };
        }
    }

    #[test]
    fn every_method_populates_every_page() {
        let len = 70 << 20;
        for (method, thp) in [
            (Method::PopulateWrite, false),
            (Method::TouchZero, true),
            (Method::TouchZero, false),
            (Method::Touch, false),
        ] {
            if method == Method::PopulateWrite && !populate_write_supported() {
                continue;
            }
            let m = Anon::new(len, thp);
            run(&[(m.0, len)], 4096, method, 3).unwrap();
            assert_eq!(m.resident(), len / 4096, "{method:?} thp={thp}");
        }
    }

    #[test]
    fn touch_and_populate_write_keep_contents() {
        let len = 8 << 20;
        for method in [Method::PopulateWrite, Method::Touch] {
            if method == Method::PopulateWrite && !populate_write_supported() {
                continue;
            }
            let mut v = vec![7u8; len];
            let addr = (v.as_mut_ptr() as usize).next_multiple_of(4096);
            run(&[(addr, len - 4096)], 4096, method, 3).unwrap();
            assert!(v.iter().all(|&b| b == 7), "{method:?} kept contents");
        }
    }

    #[test]
    fn failure_names_method_and_offset() {
        // A read-only mapping: MADV_POPULATE_WRITE fails with EFAULT.
        if !populate_write_supported() {
            return;
        }
        let len = 4 << 20;
        let m = Anon::new(len, false);
        // SAFETY: dropping write permission on the test's own mapping.
        let rc = unsafe { libc::mprotect(m.0 as *mut _, len, libc::PROT_READ) };
        assert_eq!(rc, 0);
        let e = run(&[(m.0, len)], 4096, Method::PopulateWrite, 2).unwrap_err();
        let t = e.to_string();
        assert!(
            t.contains("MADV_POPULATE_WRITE") && t.contains("offset 0x0"),
            "{t}"
        );
    }

    #[test]
    fn dropping_a_population_joins_its_workers() {
        let len = 256 << 20;
        let m = Anon::new(len, true);
        let p = Population::start(&[(m.0, len)], 4096, Method::TouchZero, 3, false);
        // Every worker holds the shared state until its thread ends.
        let shared = Arc::downgrade(&p.shared);
        drop(p);
        assert!(
            shared.upgrade().is_none(),
            "drop returned while a worker still ran"
        );
        // Workers are gone: unmapping now cannot fault one of them.
        drop(m);
    }
}
