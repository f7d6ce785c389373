//! The VMM's `WorkerHost`: each started device worker gets a thread
//! (`cm-<device>`) running an epoll loop over the worker's fds plus a stop
//! eventfd. `stop` signals and joins, so after it returns the device's
//! queues are untouched; dropping the host stops every worker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use casemate_devices::virtio::{worker_loop, Worker, WorkerHost};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::threads::{spawn_with_role, Role};

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
        let epoll = worker_loop::epoll_for(worker.as_ref(), &stop)?;
        let thread = spawn_with_role(
            Role::Worker(kind_of(&name)),
            format!("cm-{name}"),
            move || worker_loop::run(&name, &epoll, worker.as_mut()),
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
