//! Populating guest RAM before the guest runs (`prealloc=on`): picks the
//! fastest method the kernel has, splits the work into chunks taken by N
//! threads, and draws a progress line on a terminal for sizes above 1 GiB.
//! Owns no mappings: the caller keeps them alive while this runs.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use super::MemoryError;
use crate::config::validate::human_size;

/// How pages get populated, fastest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// MADV_POPULATE_WRITE (Linux 5.14+): one syscall per chunk, no signals
    /// on failure (EFAULT/ENOMEM instead of SIGBUS).
    PopulateWrite,
    /// MAP_POPULATE at mmap time: the kernel faults pages in on one thread.
    MapPopulate,
    /// Write every page from user space.
    Touch,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Self::PopulateWrite => "MADV_POPULATE_WRITE",
            Self::MapPopulate => "MAP_POPULATE",
            Self::Touch => "touch",
        }
    }
}

/// Work per chunk: small enough for progress and load balance, large enough
/// that syscall cost vanishes; a multiple of every hugepage size up to 64 MiB.
const CHUNK: usize = 64 << 20;
/// Progress is drawn for preallocations larger than this.
const PROGRESS_ABOVE: u64 = 1 << 30;

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

/// The method for `threads` threads: MAP_POPULATE is single-threaded, so
/// with several threads touching in parallel beats it.
pub fn choose(populate_write: bool, threads: usize) -> Method {
    if populate_write {
        Method::PopulateWrite
    } else if threads <= 1 {
        Method::MapPopulate
    } else {
        Method::Touch
    }
}

/// One thread per CPU this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Split mappings `(addr, len)` into chunks aligned to `page` within each.
fn chunks(maps: &[(usize, usize)], page: usize) -> Vec<(usize, usize)> {
    let step = CHUNK.max(page);
    let mut out = Vec::new();
    for &(addr, len) in maps {
        let mut off = 0;
        while off < len {
            let n = step.min(len - off);
            out.push((addr + off, n));
            off += n;
        }
    }
    out
}

fn populate_chunk(method: Method, addr: usize, len: usize, page: usize) -> std::io::Result<()> {
    match method {
        Method::PopulateWrite => loop {
            // SAFETY: the chunk lies inside a live guest RAM mapping; the
            // advice only faults pages in, leaving their contents.
            let rc = unsafe { libc::madvise(addr as *mut _, len, libc::MADV_POPULATE_WRITE) };
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
        Method::Touch => {
            for off in (0..len).step_by(page) {
                let p = (addr + off) as *mut u8;
                // SAFETY: `p` is inside a live guest RAM mapping no guest
                // runs on yet; rewriting the byte it holds keeps file-backed
                // contents while forcing a write fault.
                unsafe { p.write_volatile(p.read_volatile()) };
            }
            Ok(())
        }
    }
}

/// Populate every byte of `maps` with `threads` threads. `page` is the
/// backing page size (a chunk never splits a hugepage).
pub fn run(
    maps: &[(usize, usize)],
    page: usize,
    method: Method,
    threads: usize,
) -> Result<(), MemoryError> {
    let work = chunks(maps, page);
    let total: u64 = maps.iter().map(|m| m.1 as u64).sum();
    let next = AtomicUsize::new(0);
    let done = AtomicU64::new(0);
    let failed: Mutex<Option<MemoryError>> = Mutex::new(None);
    let threads = threads.clamp(1, work.len().max(1));
    let show = total > PROGRESS_ABOVE && std::io::stderr().is_terminal();
    let (tx, rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        for i in 0..threads {
            let tx = tx.clone();
            let (work, next, done, failed) = (&work, &next, &done, &failed);
            let body = move || {
                // Dropping `tx` when the worker ends wakes the progress loop.
                let _tx = tx;
                while let Some(&(addr, len)) = work.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if let Err(source) = populate_chunk(method, addr, len, page) {
                        let offset = work
                            .iter()
                            .take_while(|c| c.0 != addr)
                            .map(|c| c.1 as u64)
                            .sum();
                        let mut f = failed.lock().unwrap_or_else(|p| p.into_inner());
                        f.get_or_insert(MemoryError::Prealloc {
                            method: method.name(),
                            offset,
                            size: total,
                            source,
                        });
                        // Stop every worker: the VM cannot start anyway.
                        next.store(work.len(), Ordering::Relaxed);
                        return;
                    }
                    done.fetch_add(len as u64, Ordering::Relaxed);
                }
            };
            if let Err(e) = std::thread::Builder::new()
                .name(format!("cm-prealloc{i}"))
                .spawn_scoped(s, body)
            {
                log::warn!("prealloc thread {i} did not start ({e}); fewer threads work");
            }
        }
        drop(tx);
        let mut last = None;
        // Each worker drops its sender when done: Disconnected means all ended.
        while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_millis(100))
        {
            if show {
                let pct = done.load(Ordering::Relaxed) * 100 / total.max(1);
                if last != Some(pct) {
                    last = Some(pct);
                    let mut e = std::io::stderr();
                    let _ = write!(
                        e,
                        "\rcasemate: preallocating {} of guest RAM: {pct:3}%",
                        human_size(total)
                    );
                    let _ = e.flush();
                }
            }
        }
        if last.is_some() {
            eprintln!(
                "\rcasemate: preallocating {} of guest RAM: 100%",
                human_size(total)
            );
        }
    });
    if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    // Chunks no worker took (a thread that could not start) run here.
    let rest = next.load(Ordering::Relaxed).min(work.len());
    for &(addr, len) in &work[rest..] {
        populate_chunk(method, addr, len, page).map_err(|source| MemoryError::Prealloc {
            method: method.name(),
            offset: (addr - work[0].0) as u64,
            size: total,
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_byte_once() {
        let maps = [(0x1000_0000, 200 << 20), (0x9000_0000, 3 << 20)];
        let c = chunks(&maps, 2 << 20);
        assert_eq!(c.len(), 5);
        assert_eq!(c.iter().map(|x| x.1).sum::<usize>(), (203 << 20));
        assert_eq!(c[3], (0x1000_0000 + (192 << 20), 8 << 20));
        assert_eq!(
            chunks(&maps[..1], 1 << 30).len(),
            1,
            "1 GiB pages stay whole"
        );
    }

    #[test]
    fn method_order() {
        assert_eq!(choose(true, 1), Method::PopulateWrite);
        assert_eq!(choose(false, 1), Method::MapPopulate);
        assert_eq!(choose(false, 4), Method::Touch);
    }

    #[test]
    fn every_method_populates_anonymous_memory() {
        let len = 8 << 20;
        for method in [Method::PopulateWrite, Method::Touch] {
            if method == Method::PopulateWrite && !populate_write_supported() {
                continue;
            }
            let mut v = vec![7u8; len];
            let addr = v.as_mut_ptr() as usize & !4095;
            run(&[(addr, len - 4096)], 4096, method, 3).unwrap();
            assert!(v.iter().all(|&b| b == 7), "{method:?} kept contents");
        }
    }
}
