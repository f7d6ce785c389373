//! The raw kernel methods the VMMs are measured against: populate an
//! anonymous mapping by touching, MAP_POPULATE or MADV_POPULATE_WRITE, on 1
//! or N threads, with or without THP, or from the 2 MiB hugetlb pool. Each
//! run maps, populates (timed) and unmaps in this process. Threads take
//! 64 MiB chunks from a shared counter (as Casemate's prealloc does): a
//! static split was slower for MADV_POPULATE_WRITE here, and the baseline
//! should be the best each method can do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Write one byte per 4 KiB page.
    Touch,
    /// Write one byte per 2 MiB (one fault per THP), then
    /// MADV_POPULATE_WRITE over the chunk for pages THP did not cover.
    TouchHuge,
    MapPopulate,
    PopulateWrite,
}

#[derive(Debug, Clone, Copy)]
pub struct Raw {
    pub how: How,
    pub threads: usize,
    pub thp: bool,
    pub hugetlb: bool,
}

const CHUNK: usize = 64 << 20;
const HUGE: usize = 2 << 20;

struct Map(*mut u8, usize);

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmapping a mapping this module made and nothing else uses.
        unsafe { libc::munmap(self.0.cast(), self.1) };
    }
}

fn map(size: usize, extra: i32) -> anyhow::Result<Map> {
    // SAFETY: a fresh anonymous mapping; only raw pointers ever reach it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        anyhow::bail!("mmap {size} bytes: {}", std::io::Error::last_os_error());
    }
    Ok(Map(p.cast(), size))
}

fn populate_write(addr: usize, len: usize) -> anyhow::Result<()> {
    // SAFETY: the range is inside a mapping owned by the caller.
    if unsafe { libc::madvise(addr as *mut _, len, libc::MADV_POPULATE_WRITE) } != 0 {
        anyhow::bail!("MADV_POPULATE_WRITE: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn touch(addr: usize, len: usize, step: usize) {
    for off in (0..len).step_by(step) {
        // SAFETY: inside a private anonymous mapping owned by the caller.
        unsafe { ((addr + off) as *mut u8).write_volatile(1) };
    }
}

fn populate(addr: usize, len: usize, how: How) -> anyhow::Result<()> {
    match how {
        How::PopulateWrite => populate_write(addr, len)?,
        How::Touch => touch(addr, len, 4096),
        How::TouchHuge => {
            touch(addr, len, HUGE);
            populate_write(addr, len)?;
        }
        How::MapPopulate => {}
    }
    Ok(())
}

impl Raw {
    pub fn name(&self) -> String {
        let how = match self.how {
            How::Touch => "touch",
            How::TouchHuge => "touch-2M",
            How::MapPopulate => "MAP_POPULATE",
            How::PopulateWrite => "POPULATE_WRITE",
        };
        let mut n = format!("raw {how} x{}", self.threads);
        if self.thp {
            n.push_str(" +THP");
        }
        if self.hugetlb {
            n = format!("raw hugetlb-2M {how} x{}", self.threads);
        }
        n
    }

    /// Map, populate and unmap `size` bytes; returns the time from mmap to
    /// populated.
    pub fn run(&self, size: usize) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        let mut extra = 0;
        if self.how == How::MapPopulate {
            extra |= libc::MAP_POPULATE;
        }
        if self.hugetlb {
            extra |= libc::MAP_HUGETLB | libc::MAP_HUGE_2MB;
        } else {
            extra |= libc::MAP_NORESERVE;
        }
        let m = map(size, extra)?;
        if self.thp {
            // SAFETY: advice on the mapping made above.
            unsafe { libc::madvise(m.0.cast(), size, libc::MADV_HUGEPAGE) };
        }
        let base = m.0 as usize;
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| -> anyhow::Result<()> {
            let hs: Vec<_> = (0..self.threads)
                .map(|_| {
                    let next = &next;
                    s.spawn(move || -> anyhow::Result<()> {
                        loop {
                            let start = next.fetch_add(1, Ordering::Relaxed) * CHUNK;
                            if start >= size {
                                return Ok(());
                            }
                            populate(base + start, CHUNK.min(size - start), self.how)?;
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join()
                    .map_err(|_| anyhow::anyhow!("populate thread panicked"))??;
            }
            Ok(())
        })?;
        let t = t0.elapsed();
        drop(m);
        Ok(t)
    }
}
