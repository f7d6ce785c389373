//! Page-kind steering for `prealloc=on` of THP-advised private anonymous
//! RAM: while populating, measure how fast huge and small pages come, and
//! take small ones while they are clearly faster. Owns the policy (pure,
//! unit-tested) and the process-wide switch that applies it; not the
//! chunks, the threads or the later collapse back into huge pages
//! (`collapse`).
//!
//! Why: a huge page needs a free 2 MiB block, a small one any free page.
//! Where free memory is backed lazily underneath (this host's outer layer
//! reclaims free blocks of 2 MiB and up, see tools/membench), every 2 MiB
//! block is "cold" after an idle spell and costs ~20 ms per 8 MiB to
//! populate, while the free fragments under 2 MiB (2 GiB of them here)
//! were never reclaimed and populate in ~2 ms. Measured on 4 GiB, one
//! thread, cold: huge pages 8.8 s, small 5.0-5.7 s (fragments first, then
//! split blocks, slower than huge pages per byte); taking fragments while
//! they last and huge pages after is faster than both. On warm memory huge
//! pages populate at ~0.1 ns per byte and are never questioned.
//!
//! The policy: huge pages first; when a window of them is slow, a window of
//! small ones; small pages stay while twice as fast at first and faster
//! after; slow huge pages get small ones tried again every few windows.
//!
//! How: `PR_SET_THP_DISABLE` makes the process's faults take small pages
//! even in MADV_HUGEPAGE ranges. It is one flag per process, so all
//! population threads are in one phase at a time; a sample that straddles
//! a switch is not counted. The ranges keep MADV_HUGEPAGE, so what went in
//! small can be collapsed later. QEMU has no equivalent: its prealloc always
//! takes what the fault path gives.

use std::sync::Mutex;
use std::time::Duration;

/// Which pages the next chunk gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Huge,
    Small,
}

/// Small pages are taken only when at least this many times faster: the
/// guest lacks huge-page backing until the collapse, so a near tie goes to
/// huge pages.
const SMALL_WINS_BY: f64 = 2.0;

/// ns per byte at or below which huge pages are not questioned: small
/// pages cost the same zeroing plus a fault per 4 KiB (~0.06 ns/B even on
/// fast hosts), so they cannot be twice as fast as huge pages populating at
/// 5 GB/s or better (warm memory here: 0.08-0.14 ns/B huge, ~0.3 small;
/// cold: 2-3 for both). Saves the probe's small chunks, and the collapse
/// after them, on a warm start.
const HUGE_FAST_ENOUGH: f64 = 0.2;

/// Slow huge pages get small ones tried again after this many windows,
/// whatever the last small estimate said (a failed try costs one window).
const REPROBE_AFTER: usize = 8;

/// The last few rates (ns per byte) of one kind.
#[derive(Debug)]
struct Window {
    rates: Vec<f64>,
    cap: usize,
}

impl Window {
    fn push(&mut self, rate: f64) {
        if self.rates.len() == self.cap {
            self.rates.remove(0);
        }
        self.rates.push(rate);
    }

    fn full(&self) -> bool {
        self.rates.len() == self.cap
    }

    /// The upper median: in a window of 3 or more, one slow chunk (a spike
    /// on a shared host) does not move it.
    fn estimate(&self) -> Option<f64> {
        let mut v = self.rates.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }
}

/// The decision, from (kind, bytes, time) samples: the current kind runs
/// for a full window, then is compared with the other kind's last window.
/// Both kinds' speeds change while populating (a few warm huge blocks
/// first; the fragments run out), so the comparison never stops, and a
/// switch starts the new kind's window afresh.
#[derive(Debug)]
pub struct Policy {
    kind: Kind,
    huge: Window,
    small: Window,
    /// Small pages have had a full window since the switch to them.
    confirmed: bool,
    /// Samples since the last switch.
    since: usize,
}

impl Policy {
    /// `window`: samples per decision (at least 1).
    pub fn new(window: usize) -> Self {
        let w = || Window {
            rates: Vec::new(),
            cap: window.max(1),
        };
        Self {
            kind: Kind::Huge,
            huge: w(),
            small: w(),
            confirmed: false,
            since: 0,
        }
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Count one chunk populated with `kind`; returns the kind for the
    /// next chunks.
    pub fn record(&mut self, kind: Kind, bytes: usize, took: Duration) -> Kind {
        if kind != self.kind || bytes == 0 {
            return self.kind;
        }
        let rate = took.as_nanos() as f64 / bytes as f64;
        let next = match kind {
            Kind::Huge => {
                self.huge.push(rate);
                let huge = self.huge.estimate().unwrap_or(rate);
                self.since += 1;
                // Small pages never measured, or not for a while (the
                // estimate may be from before the fragments were found, or
                // freed memory may have come back): try them.
                let stale = self.since >= REPROBE_AFTER * self.huge.cap;
                let small_wins = self
                    .small
                    .estimate()
                    .is_none_or(|s| stale || s * SMALL_WINS_BY <= huge);
                if self.huge.full() && small_wins && huge > HUGE_FAST_ENOUGH {
                    Kind::Small
                } else {
                    Kind::Huge
                }
            }
            Kind::Small => {
                self.small.push(rate);
                let small = self.small.estimate().unwrap_or(rate);
                let huge = self.huge.estimate().unwrap_or(f64::INFINITY);
                // The first full window after a switch must show small
                // pages twice as fast; after that, staying only needs them
                // faster: the gap keeps the choice from flapping.
                let stay = if self.confirmed {
                    small <= huge
                } else {
                    small * SMALL_WINS_BY <= huge
                };
                if !self.small.full() || stay {
                    self.confirmed |= self.small.full();
                    Kind::Small
                } else {
                    Kind::Huge
                }
            }
        };
        if next != self.kind {
            self.kind = next;
            self.confirmed = false;
            self.since = 0;
            match next {
                Kind::Huge => self.huge.rates.clear(),
                Kind::Small => self.small.rates.clear(),
            }
        }
        self.kind
    }

    /// The current estimates (huge, small), ns per byte, for the log.
    fn rates(&self) -> (f64, f64) {
        let r = |w: &Window| w.estimate().unwrap_or(f64::NAN);
        (r(&self.huge), r(&self.small))
    }
}

/// The process-wide THP switch: on with `Kind::Huge`, off with `Small`.
fn apply(kind: Kind) -> std::io::Result<()> {
    let off = libc::c_ulong::from(kind == Kind::Small);
    // SAFETY: PR_SET_THP_DISABLE only changes which page size later faults
    // in this process allocate; no memory is touched.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, off, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether THP is already off for this process (a parent's prctl is
/// inherited): then there is nothing to steer, and it must stay off.
pub fn thp_disabled_already() -> bool {
    // SAFETY: a query with no pointers.
    unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) != 0 }
}

/// A chunk's ticket: the kind it was started with, and the phase count
/// then, so a sample that straddles a switch is dropped.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    kind: Kind,
    generation: u64,
}

#[derive(Debug)]
struct State {
    policy: Policy,
    generation: u64,
    /// Steering has stopped (a switch failed, or population is over).
    off: bool,
    /// The process's THP switch is off now (the last successful prctl).
    thp_off: bool,
    /// `(addr, len)` of chunks that may hold small pages.
    small: Vec<(usize, usize)>,
}

/// Steering shared by the population threads.
#[derive(Debug)]
pub struct Steer {
    state: Mutex<State>,
}

impl Steer {
    pub fn new(probe: usize) -> Self {
        Self {
            state: Mutex::new(State {
                policy: Policy::new(probe),
                generation: 0,
                off: false,
                thp_off: false,
                small: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn begin(&self) -> Ticket {
        let s = self.lock();
        Ticket {
            kind: if s.off { Kind::Huge } else { s.policy.kind() },
            generation: s.generation,
        }
    }

    /// The chunk `(addr, len)` started with `t` took `took`.
    pub fn end(&self, t: Ticket, addr: usize, len: usize, took: Duration) {
        let mut s = self.lock();
        if t.kind == Kind::Small || t.generation != s.generation {
            s.small.push((addr, len));
        }
        if s.off || t.generation != s.generation {
            return;
        }
        let before = s.policy.kind();
        let rates = s.policy.rates();
        let next = s.policy.record(t.kind, len, took);
        log::trace!("prealloc steer: {:?} {len} bytes in {took:?}", t.kind);
        if next != before {
            log::debug!(
                "prealloc steer: {next:?} pages from here (ns per byte before the last \
                 {:?} chunk of {:.2}: huge {:.2}, small {:.2})",
                t.kind,
                took.as_nanos() as f64 / len as f64,
                rates.0,
                rates.1,
            );
            match apply(next) {
                Ok(()) => s.thp_off = next == Kind::Small,
                Err(e) => {
                    log::warn!("prealloc: PR_SET_THP_DISABLE refused ({e}); huge pages only");
                    s.off = true;
                    if s.thp_off && apply(Kind::Huge).is_ok() {
                        s.thp_off = false;
                    }
                }
            }
            s.generation += 1;
        }
    }

    /// Population is over: THP back on; returns the chunks that may hold
    /// small pages.
    pub fn finish(&self) -> Vec<(usize, usize)> {
        let mut s = self.lock();
        if s.thp_off {
            match apply(Kind::Huge) {
                Ok(()) => s.thp_off = false,
                Err(e) => log::warn!("prealloc: THP could not be turned back on ({e})"),
            }
        }
        s.off = true;
        std::mem::take(&mut s.small)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_micros(n * 100)
    }

    const MB8: usize = 8 << 20;

    /// Run 40 chunks, each kind's times (tenths of ms per 8 MiB) taken in
    /// turn from its own list (the last one repeats); returns the kinds.
    fn run(p: &mut Policy, huge: &[u64], small: &[u64]) -> Vec<Kind> {
        let (mut h, mut s) = (0, 0);
        let mut used = Vec::new();
        for _ in 0..40 {
            let k = p.kind();
            used.push(k);
            let t = match k {
                Kind::Huge => {
                    h += 1;
                    huge[(h - 1).min(huge.len() - 1)]
                }
                Kind::Small => {
                    s += 1;
                    small[(s - 1).min(small.len() - 1)]
                }
            };
            p.record(k, MB8, ms(t));
        }
        used
    }

    fn count(used: &[Kind], k: Kind) -> usize {
        used.iter().filter(|&&x| x == k).count()
    }

    #[test]
    fn warm_memory_keeps_huge_pages_after_a_probe() {
        let mut p = Policy::new(2);
        let used = run(&mut p, &[25], &[50]);
        assert_eq!(
            used[..4],
            [Kind::Huge, Kind::Huge, Kind::Small, Kind::Small]
        );
        assert_eq!(used[4..20], [Kind::Huge; 16], "{used:?}");
        // Only the probe and the tries every 8 windows.
        assert_eq!(count(&used, Kind::Small), 6, "{used:?}");
    }

    #[test]
    fn cold_memory_takes_fragments_then_goes_back_to_huge() {
        let mut p = Policy::new(2);
        // Small pages fast for 10 chunks, then slower than huge ones.
        let mut small = vec![23; 10];
        small.push(210);
        let used = run(&mut p, &[195], &small);
        // The first slow one ends it (a window of 2 has the slow one as
        // its upper median).
        assert_eq!(used[2..13], [Kind::Small; 11], "{used:?}");
        assert_eq!(used[13..29], [Kind::Huge; 16], "{used:?}");
        // A try after 8 windows finds them still slow.
        assert_eq!(used[29..31], [Kind::Small; 2], "{used:?}");
        assert_eq!(used[31..], [Kind::Huge; 9], "{used:?}");
    }

    #[test]
    fn huge_pages_turning_cold_send_it_to_small_ones() {
        // A few warm 2 MiB blocks first (too fast to question), then cold
        // ones.
        let mut p = Policy::new(2);
        let used = run(&mut p, &[8, 8, 8, 8, 195], &[28, 28, 23]);
        assert_eq!(used[..5], [Kind::Huge; 5], "{used:?}");
        assert_eq!(used[5..], [Kind::Small; 35], "{used:?}");
    }

    #[test]
    fn one_slow_chunk_in_a_window_changes_nothing() {
        let mut p = Policy::new(4);
        let used = run(&mut p, &[10, 10, 300, 10], &[30]);
        assert_eq!(count(&used, Kind::Small), 0, "{used:?}");
    }

    #[test]
    fn fast_huge_pages_are_never_questioned() {
        let mut p = Policy::new(2);
        // 1.6 ms per 8 MiB: 0.19 ns per byte.
        let used = run(&mut p, &[16], &[1]);
        assert_eq!(count(&used, Kind::Small), 0, "{used:?}");
    }

    #[test]
    fn small_pages_stay_while_faster_once_chosen() {
        let mut p = Policy::new(2);
        // Twice as fast at first, then only a little faster: no flapping.
        let used = run(&mut p, &[100], &[40, 40, 80]);
        assert_eq!(count(&used, Kind::Small), 38, "{used:?}");
    }

    #[test]
    fn small_pages_are_tried_again_while_huge_ones_are_slow() {
        let mut p = Policy::new(2);
        // Small pages slow at the probe, fast later (fragments found).
        let used = run(&mut p, &[100], &[90, 90, 20]);
        assert_eq!(
            used[..4],
            [Kind::Huge, Kind::Huge, Kind::Small, Kind::Small]
        );
        assert_eq!(used[4..20], [Kind::Huge; 16], "{used:?}");
        assert_eq!(used[20..], [Kind::Small; 20], "{used:?}");
    }

    #[test]
    fn a_near_tie_goes_to_huge_pages() {
        let mut p = Policy::new(3);
        let used = run(&mut p, &[20], &[12]);
        // The probe and one try, each a window long.
        assert_eq!(count(&used, Kind::Small), 6, "{used:?}");
    }

    #[test]
    fn samples_of_the_other_kind_are_ignored() {
        let mut p = Policy::new(1);
        assert_eq!(p.record(Kind::Small, MB8, ms(1)), Kind::Huge);
        assert_eq!(p.record(Kind::Huge, MB8, ms(100)), Kind::Small);
        assert_eq!(p.record(Kind::Huge, MB8, ms(1)), Kind::Small);
        assert_eq!(p.record(Kind::Small, MB8, ms(2)), Kind::Small);
    }

    #[test]
    fn straddling_chunks_count_as_small_and_are_not_sampled() {
        let _only = crate::memory::THP_SWITCH
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let s = Steer::new(1);
        let a = s.begin();
        let b = s.begin();
        assert_eq!(a.kind, Kind::Huge);
        // `a` ends slow: the policy moves to probing small pages.
        s.end(a, 0x1000, MB8, ms(100));
        assert_eq!(s.begin().kind, Kind::Small);
        // `b` started before the switch: it may hold small pages, and its
        // (fast) time must not decide anything.
        s.end(b, 0x2000, MB8, ms(1));
        assert_eq!(s.begin().kind, Kind::Small);
        assert_eq!(s.finish(), vec![(0x2000, MB8)]);
        assert!(!thp_disabled_already(), "finish turns THP back on");
    }
}
