//! Pausing and resuming every vCPU (QMP `stop`/`cont`, `-S`), kept for the
//! whole process so that a guest reboot keeps the run state, as QEMU does.
//!
//! Each vCPU thread registers itself while it runs and parks on a condvar
//! at the top of its loop while the VM is paused. `stop` kicks every
//! registered thread out of KVM_RUN (holding the lock, so no thread is
//! kicked after it unregistered) and waits, bounded, until each has
//! parked: after `stop` returns no guest instruction runs. A boot that
//! ends (its stop flag) releases parked vCPUs through `wake`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::kick;

/// How long `stop` waits for vCPUs to park (one may be finishing an exit
/// the control thread is serving).
const PARK_WAIT: Duration = Duration::from_secs(2);

/// The VM's run state as QMP reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// `-S`: never started yet.
    Prelaunch,
    Running,
    Paused,
}

impl RunStatus {
    /// QMP's `RunState` name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Prelaunch => "prelaunch",
            Self::Running => "running",
            Self::Paused => "paused",
        }
    }
}

/// One registered vCPU thread.
#[derive(Debug, Clone, Copy)]
pub struct VcpuThread {
    pub index: u32,
    /// The kernel thread id (QMP `thread-id`).
    pub tid: i32,
    pthread: libc::pthread_t,
}

struct Inner {
    status: RunStatus,
    threads: Vec<VcpuThread>,
    parked: usize,
}

pub struct Pause {
    inner: Mutex<Inner>,
    cv: Condvar,
}

impl Pause {
    /// `paused`: start in `prelaunch` (-S).
    pub fn new(paused: bool) -> Self {
        Self {
            inner: Mutex::new(Inner {
                status: if paused {
                    RunStatus::Prelaunch
                } else {
                    RunStatus::Running
                },
                threads: Vec::new(),
                parked: 0,
            }),
            cv: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> RunStatus {
        self.lock().status
    }

    /// The vCPU threads running now, by index.
    pub fn threads(&self) -> Vec<VcpuThread> {
        let mut t = self.lock().threads.clone();
        t.sort_by_key(|v| v.index);
        t
    }

    /// Called by a vCPU thread when it starts.
    pub fn register(&self, index: u32) {
        // SAFETY: gettid and pthread_self only return the caller's ids.
        let (tid, pthread) = unsafe { (libc::gettid(), libc::pthread_self()) };
        self.lock().threads.push(VcpuThread {
            index,
            tid,
            pthread,
        });
    }

    /// Called by a vCPU thread before it ends.
    pub fn unregister(&self, index: u32) {
        self.lock().threads.retain(|t| t.index != index);
        self.cv.notify_all();
    }

    /// At the top of a vCPU's loop: wait here while paused, unless the
    /// boot is ending.
    pub fn park_if_paused(&self, stop: &AtomicBool) {
        let mut g = self.lock();
        if g.status == RunStatus::Running || stop.load(Ordering::Acquire) {
            return;
        }
        g.parked += 1;
        self.cv.notify_all();
        while g.status != RunStatus::Running && !stop.load(Ordering::Acquire) {
            g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner());
        }
        g.parked -= 1;
    }

    /// Pause every vCPU and wait until they are out of the guest. Returns
    /// false when the state was already paused (no STOP event then).
    pub fn stop(&self) -> bool {
        let mut g = self.lock();
        if g.status != RunStatus::Running {
            return false;
        }
        g.status = RunStatus::Paused;
        for t in &g.threads {
            kick::kick_pthread(t.pthread);
        }
        let deadline = Instant::now() + PARK_WAIT;
        while g.parked < g.threads.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                log::warn!("stop: a vCPU did not leave the guest within {PARK_WAIT:?}");
                break;
            }
            g = self
                .cv
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Resume. Returns false when it was already running.
    pub fn cont(&self) -> bool {
        let mut g = self.lock();
        if g.status == RunStatus::Running {
            return false;
        }
        g.status = RunStatus::Running;
        self.cv.notify_all();
        true
    }

    /// Wake parked vCPUs so they see their boot's stop flag.
    pub fn wake(&self) {
        let _g = self.lock();
        self.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_parked_thread_runs_again_on_cont_and_leaves_on_stop_flag() {
        let p = Arc::new(Pause::new(true));
        assert_eq!(p.status(), RunStatus::Prelaunch);
        let stop = Arc::new(AtomicBool::new(false));
        let (p2, s2) = (p.clone(), stop.clone());
        let h = std::thread::spawn(move || {
            p2.register(0);
            p2.park_if_paused(&s2);
            p2.unregister(0);
        });
        assert!(p.cont());
        assert!(!p.cont(), "already running");
        h.join().unwrap();
        assert_eq!(p.status(), RunStatus::Running);

        // Paused again with nobody registered: stop does not wait.
        assert!(p.stop());
        assert!(!p.stop());
        assert_eq!(p.status(), RunStatus::Paused);
        let (p3, s3) = (p.clone(), stop.clone());
        let h = std::thread::spawn(move || p3.park_if_paused(&s3));
        stop.store(true, Ordering::Release);
        p.wake();
        h.join().unwrap();
    }
}
