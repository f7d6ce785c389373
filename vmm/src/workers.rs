//! The VMM's `WorkerHost`: each started device worker gets a thread
//! (`cm-<device>`) running an epoll loop over the worker's fds plus a stop
//! eventfd. `stop` signals and joins, so after it returns the device's
//! queues are untouched; dropping the host stops every worker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use casemate_devices::virtio::{Worker, WorkerHost};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::threads::{spawn_with_role, Role};

const STOP_TOKEN: u64 = u64::MAX;
/// Errors from one worker logged before going quiet: a guest that keeps
/// sending garbage must not flood the host's logs.
const MAX_LOGGED_ERRORS: u32 = 8;

struct Running {
    stop: Arc<EventFd>,
    thread: JoinHandle<()>,
}

#[derive(Default)]
pub struct Workers {
    next: AtomicU64,
    running: Mutex<HashMap<u64, Running>>,
}

impl Workers {
    pub fn stop_all(&self) {
        let all: Vec<Running> = self.lock().drain().map(|(_, r)| r).collect();
        for r in all {
            finish(r);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn finish(r: Running) {
    let _ = r.stop.write(1);
    let _ = r.thread.join();
}

fn run(name: &str, epoll: &Epoll, worker: &mut dyn Worker) {
    let mut events = vec![EpollEvent::default(); 16];
    let mut logged = 0;
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
            if ev.data() == STOP_TOKEN {
                return;
            }
            if let Err(e) = worker.on_event(ev.data() as u32) {
                if logged < MAX_LOGGED_ERRORS {
                    logged += 1;
                    log::warn!("{e}");
                }
            }
            for (fd, token, watch) in worker.watch_changes() {
                let (op, what) = if watch {
                    (ControlOperation::Add, "watching")
                } else {
                    (ControlOperation::Delete, "unwatching")
                };
                let ev = EpollEvent::new(EventSet::IN, token.into());
                if let Err(e) = epoll.ctl(op, fd, ev) {
                    log::warn!("{name}: {what} fd {fd}: {e}");
                }
            }
        }
    }
}

/// The device kind of a worker named `<kind><n>` (`blk0` -> `blk`), which
/// picks its thread role.
fn kind_of(name: &str) -> &'static str {
    match name.trim_end_matches(|c: char| c.is_ascii_digit()) {
        "blk" => "blk",
        "rng" => "rng",
        "net" => "net",
        "intx" => "intx",
        "gpu" => "gpu",
        "vga" => "vga",
        _ => "other",
    }
}

impl WorkerHost for Workers {
    fn start(&self, name: String, mut worker: Box<dyn Worker>) -> std::io::Result<u64> {
        let stop = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        let epoll = Epoll::new()?;
        use std::os::fd::AsRawFd;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP_TOKEN),
        )?;
        for (fd, token) in worker.fds() {
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, token.into()),
            )?;
        }
        let thread = spawn_with_role(
            Role::Worker(kind_of(&name)),
            format!("cm-{name}"),
            move || run(&name, &epoll, worker.as_mut()),
        )?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, Running { stop, thread });
        Ok(id)
    }

    fn stop(&self, id: u64) {
        let r = self.lock().remove(&id);
        if let Some(r) = r {
            finish(r);
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop_all();
    }
}
