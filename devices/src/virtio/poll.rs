//! Adaptive polling for a worker's event loop: how long the loop busy-waits
//! on its fds before it sleeps, while the worker waits on the guest (a
//! `Worker::awaits_guest` worker). This module owns only the policy; the
//! loop (`worker_loop`) does the waiting.
//!
//! Why poll: a worker that sleeps when its queue runs dry is woken by the
//! guest's next notification, and that wake-up is the dearest hop of a
//! queue-depth-one request. The notifying vCPU's ioeventfd write must
//! reach a sleeping thread on an idle CPU. Measured here (probe guest,
//! 4 KiB random I/O at QD1 on virtio-pci, `cache=none`): reads 7.5k IOPS
//! sleeping, 11.7k with a 40 us poll; writes 6.8k against 9.3k. Polling
//! for the disk's completion instead gained nothing (a 150 us poll, which
//! covers the transfer, did no better than 40 us), so a worker polls only
//! when nothing of its own is in flight.
//!
//! The policy follows QEMU's IOThread `poll-max-ns` (default 32 us), not
//! its rule for adapting. QEMU grows its window when a wait ended within
//! the bound and resets it when one did not. Here a slept wait includes the
//! wake-up, so a guest that answers in 5 us looks like 50 us, and that rule
//! would never grow. So the window starts at the bound and stays there
//! while polling catches the next event. Each miss halves it, and under
//! `MIN_WINDOW` it is off. While off, every `REPROBE`-th wait polls at the
//! bound once more, so a guest that speeds up is noticed. A guest that
//! answers slowly (Linux at QD1 takes an interrupt, ~20-30 us here, before
//! its next request) costs a few halvings and then one bound's worth per
//! `REPROBE` waits.

use std::time::Duration;

/// QEMU's IOThread default `poll-max-ns`.
pub const DEFAULT_POLL_MAX: Duration = Duration::from_nanos(32_768);
/// A window that halves below this is off.
const MIN_WINDOW: Duration = Duration::from_micros(2);
/// While polling is off, one wait in this many polls at the bound again.
const REPROBE: u32 = 32;

/// The polling window of one worker, adapted to how soon its guest answers.
#[derive(Debug, Clone)]
pub struct AdaptivePoll {
    max: Duration,
    window: Duration,
    /// Waits since the window went to zero.
    off_waits: u32,
}

impl AdaptivePoll {
    /// A policy that polls at most `max` per wait; zero never polls.
    pub fn new(max: Duration) -> Self {
        Self {
            max,
            window: max,
            off_waits: 0,
        }
    }

    /// How long the next wait on the guest may poll before it sleeps.
    pub fn window(&mut self) -> Duration {
        if self.window.is_zero() && !self.max.is_zero() {
            self.off_waits += 1;
            if self.off_waits >= REPROBE {
                self.off_waits = 0;
                return self.max;
            }
        }
        self.window
    }

    /// The last wait's outcome: `caught` when polling found the event,
    /// false when the loop had to sleep for it.
    pub fn record(&mut self, caught: bool) {
        if caught {
            self.window = self.max;
            self.off_waits = 0;
        } else if !self.window.is_zero() {
            self.window /= 2;
            if self.window < MIN_WINDOW {
                self.window = Duration::ZERO;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_that_answers_within_the_window_keeps_it() {
        let mut p = AdaptivePoll::new(DEFAULT_POLL_MAX);
        for _ in 0..100 {
            assert_eq!(p.window(), DEFAULT_POLL_MAX);
            p.record(true);
        }
    }

    #[test]
    fn misses_halve_the_window_until_it_is_off_and_a_catch_restores_it() {
        let mut p = AdaptivePoll::new(Duration::from_micros(32));
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(p.window().as_micros());
            p.record(false);
        }
        assert_eq!(seen, [32, 16, 8, 4, 2, 0]);
        assert_eq!(p.window(), Duration::ZERO);
        p.record(true);
        assert_eq!(p.window(), Duration::from_micros(32));
    }

    #[test]
    fn an_off_window_reprobes_at_the_bound_once_in_a_while() {
        let mut p = AdaptivePoll::new(Duration::from_micros(32));
        while !p.window().is_zero() {
            p.record(false);
        }
        let probes = (0..3 * REPROBE)
            .filter(|_| {
                let w = p.window();
                p.record(false);
                !w.is_zero()
            })
            .count();
        assert_eq!(probes, 3);
    }

    #[test]
    fn a_zero_bound_never_polls() {
        let mut p = AdaptivePoll::new(Duration::ZERO);
        for i in 0..100 {
            assert!(p.window().is_zero());
            p.record(i % 2 == 0);
            assert!(p.window().is_zero());
        }
    }
}
