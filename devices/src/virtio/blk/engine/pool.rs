//! The thread-pool engine: a few threads (`cm-<dev>-ioN`) that run parsed
//! requests through `Executor` in parallel, so that a queue depth of 32 is
//! served concurrently on any image format and any kernel, then post
//! completions back to the worker through the shared completion eventfd.
//!
//! A departure from "devices never spawn threads": the pool is this
//! backend's asynchronous engine where io_uring cannot serve (qcow2, or no
//! io_uring). It is created at activation and joined on drop, so a reset
//! returns only after every in-flight request has finished.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use vm_memory::Bytes;
use vmm_sys_util::eventfd::EventFd;

use super::exec::Executor;
use super::{Done, Job};

pub struct ThreadPool {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    done: Arc<Mutex<Vec<Done>>>,
    evt: Arc<EventFd>,
}

impl ThreadPool {
    /// `threads` threads (at least one) signalling `evt` on each completion.
    pub fn new(exec: Arc<Executor>, threads: usize, evt: Arc<EventFd>) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let done = Arc::new(Mutex::new(Vec::new()));
        let mut pool = Self {
            tx: Some(tx),
            threads: Vec::new(),
            done,
            evt,
        };
        for n in 0..threads.max(1) {
            let (rx, done, evt, exec) = (
                rx.clone(),
                pool.done.clone(),
                pool.evt.clone(),
                exec.clone(),
            );
            // On a spawn failure `pool` drops here, joining what started.
            let h = crate::threads::spawn_with_role(
                crate::threads::Role::IoHelper,
                format!("cm-{}-io{n}", exec.name),
                move || serve(&rx, &exec, &done, &evt),
            )?;
            pool.threads.push(h);
        }
        Ok(pool)
    }

    pub fn submit(&self, job: Job) {
        if let Some(tx) = &self.tx {
            // Send fails only once every pool thread is gone, i.e. never
            // while the pool lives.
            let _ = tx.send(job);
        }
    }

    pub fn done_evt(&self) -> &EventFd {
        &self.evt
    }

    /// Append the completions posted so far to `out`.
    pub fn take_done(&self, out: &mut Vec<Done>) {
        out.append(&mut self.done.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

fn serve(rx: &Mutex<Receiver<Job>>, exec: &Executor, done: &Mutex<Vec<Done>>, evt: &EventFd) {
    let mut scratch = Vec::new();
    loop {
        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        let (status, written) = exec.run(&job.req, &mut scratch);
        let len = match exec.mem.write_obj(status, job.req.status) {
            Ok(()) => written + 1,
            Err(_) => 0,
        };
        done.lock().unwrap_or_else(|p| p.into_inner()).push(Done {
            slot: job.slot,
            head: job.head,
            len,
        });
        let _ = evt.write(1);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
