//! Threads for the served device: the virtio worker (`WorkerHost`, an
//! epoll loop per started worker, stopped through an eventfd) and the
//! INTx re-raise after the client's unmask signal.
//!
//! A small copy of the VMM's worker loop without its seccomp roles: this
//! process has no KVM and no guest to protect from, only its image.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use casemate_devices::virtio::{Worker, WorkerHost};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const STOP: u64 = u64::MAX;

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

fn run(name: &str, epoll: &Epoll, worker: &mut dyn Worker) {
    let mut events = vec![EpollEvent::default(); 16];
    let mut warned = 0;
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::error!("{name}: epoll failed, worker stops: {e}");
                return;
            }
        };
        for ev in &events[..n] {
            if ev.data() == STOP {
                return;
            }
            if let Err(e) = worker.on_event(ev.data() as u32) {
                if warned < 8 {
                    warned += 1;
                    log::warn!("{e}");
                }
            }
            for (fd, token, watch) in worker.watch_changes() {
                let op = if watch {
                    ControlOperation::Add
                } else {
                    ControlOperation::Delete
                };
                let _ = epoll.ctl(op, fd, EpollEvent::new(EventSet::IN, token.into()));
            }
        }
    }
}

impl WorkerHost for Threads {
    fn start(&self, name: String, mut worker: Box<dyn Worker>) -> std::io::Result<u64> {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP),
        )?;
        for (fd, token) in worker.fds() {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token.into()),
            )?;
        }
        let thread = std::thread::Builder::new()
            .name(format!("vfu-{name}"))
            .spawn(move || run(&name, &epoll, worker.as_mut()))?;
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
