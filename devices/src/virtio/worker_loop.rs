//! The event loop a started `Worker` runs on its thread: epoll over the
//! worker's fds plus a stop eventfd, events handed to `on_event`, and the
//! fds it asks to (un)watch added or removed. Owns neither the thread nor
//! its confinement: the VMM's `WorkerHost` spawns it under a seccomp role,
//! a device server process (tools/vfio-user-blk) on a plain thread.

use std::os::fd::AsRawFd;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::Worker;

/// The epoll token of the stop eventfd; worker tokens are `u32`.
const STOP_TOKEN: u64 = u64::MAX;
/// Errors from one worker logged before going quiet: a guest that keeps
/// sending garbage must not flood the host's logs.
const MAX_LOGGED_ERRORS: u32 = 8;

/// An epoll set over `worker`'s fds and `stop`.
pub fn epoll_for(worker: &dyn Worker, stop: &EventFd) -> std::io::Result<Epoll> {
    let epoll = Epoll::new()?;
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
    Ok(epoll)
}

/// Serve `worker` until the stop eventfd fires or epoll fails.
pub fn run(name: &str, epoll: &Epoll, worker: &mut dyn Worker) {
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
