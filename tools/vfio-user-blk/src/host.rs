//! Threads for the served device: the virtio worker (`WorkerHost`, an
//! epoll loop per started worker, stopped through an eventfd) and the
//! INTx re-raise after the client's unmask signal.
//!
//! The loop itself is the VMM's (`virtio::worker_loop`), on plain threads
//! without seccomp roles: this process has no KVM and no guest to protect
//! from, only its image.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use casemate_devices::virtio::{worker_loop, Worker, WorkerHost};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

struct Running {
    stop: EventFd,
    thread: JoinHandle<()>,
}

#[derive(Default)]
pub struct Threads {
    next: AtomicU64,
    running: Mutex<HashMap<u64, Running>>,
}

impl Threads {
    pub fn stop_all(&self) {
        let all: Vec<u64> = self.lock().keys().copied().collect();
        for id in all {
            self.stop(id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl WorkerHost for Threads {
    fn start(&self, name: String, mut worker: Box<dyn Worker>) -> std::io::Result<u64> {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let epoll = worker_loop::epoll_for(worker.as_ref(), &stop)?;
        let thread = std::thread::Builder::new()
            .name(format!("vfu-{name}"))
            .spawn(move || worker_loop::run(&name, &epoll, worker.as_mut()))?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Running { stop, thread });
        Ok(id)
    }

    fn stop(&self, id: u64) {
        let r = self.lock().remove(&id);
        if let Some(r) = r {
            let _ = r.stop.write(1);
            let _ = r.thread.join();
        }
    }
}

/// Re-raise INTx after each unmask signal while the line is still high
/// (the client's unmask fd is KVM's resample fd: signalled at the guest's
/// EOI). Ends when `quit` is signalled.
pub fn intx_resampler(
    mut unmask: File,
    quit: Arc<EventFd>,
    still_high: impl Fn() -> bool + Send + 'static,
    raise: impl Fn() + Send + 'static,
) -> std::io::Result<JoinHandle<()>> {
    let epoll = Epoll::new()?;
    epoll.ctl(
        ControlOperation::Add,
        unmask.as_raw_fd(),
        EpollEvent::new(EventSet::IN, 0),
    )?;
    epoll.ctl(
        ControlOperation::Add,
        quit.as_raw_fd(),
        EpollEvent::new(EventSet::IN, 1),
    )?;
    std::thread::Builder::new()
        .name("vfu-intx".into())
        .spawn(move || {
            let mut ev = vec![EpollEvent::default(); 2];
            loop {
                let Ok(n) = epoll.wait(-1, &mut ev) else {
                    return;
                };
                for e in &ev[..n] {
                    if e.data() == 1 {
                        return;
                    }
                    let mut b = [0u8; 8];
                    let _ = unmask.read(&mut b);
                    if still_high() {
                        raise();
                    }
                }
            }
        })
}
