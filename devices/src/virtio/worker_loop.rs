//! The event loop a started `Worker` runs on its thread: epoll over the
//! worker's fds plus a stop eventfd, events handed to `on_event`, and the
//! fds it asks to (un)watch added or removed; while the worker waits on
//! the guest, it polls before it sleeps (`poll`). Owns neither the thread nor
//! its confinement: the VMM's `WorkerHost` spawns it under a seccomp role,
//! a device server process (tools/vfio-user-blk) on a plain thread.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::poll::AdaptivePoll;
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
    let mut poll = AdaptivePoll::new(worker.poll_max());
    loop {
        let polls = worker.awaits_guest();
        let window = if polls { poll.window() } else { Duration::ZERO };
        let n = match wait(epoll, &mut events, window) {
            Ok((n, caught)) => {
                if polls {
                    poll.record(caught);
                }
                n
            }
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

/// Wait for events: polling for up to `window` first, then sleeping. True
/// with the count when polling caught them.
fn wait(
    epoll: &Epoll,
    events: &mut [EpollEvent],
    window: Duration,
) -> std::io::Result<(usize, bool)> {
    if !window.is_zero() {
        let start = Instant::now();
        loop {
            let n = epoll.wait(0, events)?;
            if n > 0 {
                return Ok((n, true));
            }
            if start.elapsed() >= window {
                break;
            }
            std::hint::spin_loop();
        }
    }
    Ok((epoll.wait(-1, events)?, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    fn ready_epoll() -> (Epoll, EventFd) {
        let evt = EventFd::new(EFD_NONBLOCK).unwrap();
        let epoll = Epoll::new().unwrap();
        let ev = EpollEvent::new(EventSet::IN, 7);
        epoll
            .ctl(ControlOperation::Add, evt.as_raw_fd(), ev)
            .unwrap();
        evt.write(1).unwrap();
        (epoll, evt)
    }

    #[test]
    fn a_window_catches_an_event_by_polling() {
        let (epoll, _evt) = ready_epoll();
        let mut events = [EpollEvent::default(); 4];
        let (n, caught) = wait(&epoll, &mut events, Duration::from_micros(32)).unwrap();
        assert_eq!((n, caught, events[0].data()), (1, true, 7));
    }

    #[test]
    fn no_window_sleeps_for_the_event() {
        let (epoll, _evt) = ready_epoll();
        let mut events = [EpollEvent::default(); 4];
        let (n, caught) = wait(&epoll, &mut events, Duration::ZERO).unwrap();
        assert_eq!((n, caught), (1, false));
    }
}
