//! Giving guest RAM its huge pages back after `steer` populated some of it
//! with small ones: one background thread at the lowest priority runs
//! MADV_COLLAPSE (Linux 6.1+) over those ranges, 2 MiB at a time, while
//! the guest runs, starting `DELAY` after population. Owns that thread; not the mappings, which must outlive
//! it (dropping a `Collapser` stops and joins it after the current call).
//!
//! Without this the ranges still carry MADV_HUGEPAGE and khugepaged would
//! collapse them, but at its default pace (16 MiB every 10 s) that takes
//! most of an hour for a few GiB. A collapse copies 2 MiB under the
//! kernel's locks, which KVM follows through its MMU notifier, exactly as
//! it does for khugepaged; nice 19 keeps it out of the guest's way. Each
//! one holds mmap_lock for writing for a few ms, and while it ran from the
//! start the VMM's own start-up (guest load, vCPU set-up) took 31 ms
//! instead of 2 ms: hence the delay, which lets the guest start first.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const HUGE: usize = 2 << 20;

/// How long after population the collapse starts.
const DELAY: Duration = Duration::from_secs(1);

/// The background collapse; stops and joins on drop.
#[derive(Debug)]
pub struct Collapser {
    /// Dropping it (disconnecting) stops the thread, even mid-delay.
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<Outcome>>,
}

/// What a finished (or stopped) collapse did, in 2 MiB pieces.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Outcome {
    done: usize,
    refused: usize,
    /// EINVAL: no MADV_COLLAPSE in this kernel, or THP off for the process.
    unsupported: bool,
}

/// The 2 MiB-aligned pieces of `ranges`, in order.
fn pieces(ranges: &[(usize, usize)]) -> Vec<usize> {
    let mut out = Vec::new();
    for &(addr, len) in ranges {
        let mut a = addr.next_multiple_of(HUGE);
        while a + HUGE <= addr + len {
            out.push(a);
            a += HUGE;
        }
    }
    out
}

fn run(pieces: Vec<usize>, stop: &Receiver<()>, delay: Duration) -> Outcome {
    let mut o = Outcome::default();
    if stop.recv_timeout(delay) != Err(RecvTimeoutError::Timeout) {
        return o;
    }
    // SAFETY: lowers this thread's own priority; no memory involved.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    let t0 = Instant::now();
    for a in &pieces {
        if stop.try_recv() != Err(TryRecvError::Empty) {
            break;
        }
        // SAFETY: `a..a+2MiB` lies in guest RAM, which outlives this thread
        // (the owner joins it before unmapping); collapsing keeps the
        // contents and only changes how they are mapped.
        let rc = unsafe { libc::madvise(*a as *mut _, HUGE, libc::MADV_COLLAPSE) };
        if rc == 0 {
            o.done += 1;
            continue;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EINVAL) {
            // No MADV_COLLAPSE (Linux < 6.1), or THP off for this process.
            log::debug!("THP collapse: refused ({e}); left to khugepaged, if THP is on");
            o.unsupported = true;
            return o;
        }
        // EAGAIN/ENOMEM: no free huge page now; khugepaged may do it later.
        o.refused += 1;
    }
    log::info!(
        "THP collapse: {} MiB of {} MiB of small-page guest RAM in huge pages after {:?} \
         ({} pieces refused)",
        o.done * 2,
        pieces.len() * 2,
        t0.elapsed(),
        o.refused
    );
    o
}

impl Collapser {
    /// Start collapsing `ranges` (addr, len) of live guest RAM; None when
    /// there is nothing to do or the thread cannot start.
    pub fn start(ranges: &[(usize, usize)]) -> Option<Self> {
        Self::start_after(ranges, DELAY)
    }

    fn start_after(ranges: &[(usize, usize)], delay: Duration) -> Option<Self> {
        let work = pieces(ranges);
        if work.is_empty() {
            return None;
        }
        let (stop, rx) = mpsc::channel();
        match crate::threads::spawn_with_role(
            crate::threads::Role::Collapse,
            "cm-thp-collapse".into(),
            move || run(work, &rx, delay),
        ) {
            Ok(h) => Some(Self {
                stop: Some(stop),
                thread: Some(h),
            }),
            Err(e) => {
                log::warn!("THP collapse thread did not start ({e}); khugepaged will do it");
                None
            }
        }
    }
}

impl Drop for Collapser {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_whole_aligned_huge_pages() {
        let p = pieces(&[(HUGE + 4096, 3 * HUGE), (10 * HUGE, 2 * HUGE)]);
        assert_eq!(p, vec![2 * HUGE, 3 * HUGE, 10 * HUGE, 11 * HUGE]);
        assert!(pieces(&[(4096, HUGE)]).is_empty());
    }

    /// AnonHugePages of the mapping holding `addr`, from /proc/self/smaps
    /// (other tests in this process map THP too, so not the rollup).
    fn anon_huge_kib(addr: usize) -> u64 {
        let s = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for l in s.lines() {
            if let Some((range, _)) = l.split_once(' ') {
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) =
                        (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                    {
                        inside = (lo..hi).contains(&addr);
                        continue;
                    }
                }
            }
            if let Some(v) = l.strip_prefix("AnonHugePages:").filter(|_| inside) {
                return v.trim().trim_end_matches("kB").trim().parse().unwrap();
            }
        }
        panic!("no mapping holds {addr:#x}")
    }

    #[test]
    fn dropping_stops_it_during_the_delay() {
        let t = Instant::now();
        let c = Collapser::start_after(&[(0, 4 * HUGE)], Duration::from_secs(600));
        drop(c);
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "drop waited out the delay"
        );
    }

    #[test]
    fn small_pages_become_huge_ones() {
        let _only = crate::memory::THP_SWITCH
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let len = 16 << 20;
        // SAFETY: a fresh anonymous mapping only this test uses, unmapped
        // at the end after the collapser is joined.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len + HUGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let a = (p as usize).next_multiple_of(HUGE);
        // SAFETY: `a..a+len` lies in the mapping above. NOHUGEPAGE then
        // HUGEPAGE: populated with small pages, eligible for collapse.
        unsafe {
            libc::madvise(a as *mut _, len, libc::MADV_NOHUGEPAGE);
            std::ptr::write_bytes(a as *mut u8, 0x5a, len);
            libc::madvise(a as *mut _, len, libc::MADV_HUGEPAGE);
        }
        assert_eq!(anon_huge_kib(a), 0, "populated with small pages");
        let mut c = Collapser::start_after(&[(a, len)], Duration::ZERO).expect("work to do");
        let o = c.thread.take().unwrap().join().unwrap();
        let huge = anon_huge_kib(a);
        // SAFETY: reading the test's own mapping, now idle.
        let kept = unsafe { std::slice::from_raw_parts(a as *const u8, len) };
        assert!(kept.iter().all(|&b| b == 0x5a), "contents survive");
        // SAFETY: unmapping the mapping made above; no thread uses it now.
        unsafe { libc::munmap(p, len + HUGE) };
        if o.unsupported {
            eprintln!("SKIP collapse check: MADV_COLLAPSE refused (Linux < 6.1, or THP off)");
            return;
        }
        assert_eq!(o.done + o.refused, 8, "{o:?}");
        assert_eq!(huge, o.done as u64 * 2048, "{o:?}");
        if o.done == 0 {
            // EAGAIN: the host had no free 2 MiB block for any piece.
            eprintln!("collapse: every piece refused (no free huge page on this host now)");
        }
    }
}
