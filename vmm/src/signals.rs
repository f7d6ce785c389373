//! Termination signals (SIGTERM, SIGINT, SIGHUP) end the VM as QEMU does:
//! as a power-off, so that devices drain and every image is flushed, then
//! one line on stderr and exit 0. The process blocks them before any
//! thread starts (every thread inherits the mask) and reads them from a
//! signalfd on the main thread, which forwards them to the control loop;
//! without that, the default action would kill the process with qcow2
//! metadata still in memory.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The signals that end the VM.
pub const TERMINATING: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// A termination request: which signal, and who sent it (0: the kernel
/// or unknown, e.g. a terminal's Ctrl-C reports the sender as 0 too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Termination {
    pub signal: i32,
    pub pid: u32,
}

impl Termination {
    /// QEMU's wording, `terminating on signal 15 from pid 123`, without
    /// QEMU's `(bash)`: the sender's name is in /proc, and a confined VMM
    /// opens no file after start-up.
    pub fn describe(&self) -> String {
        if self.pid == 0 {
            return format!("terminating on signal {}", self.signal);
        }
        format!(
            "terminating on signal {} from pid {}",
            self.signal, self.pid
        )
    }
}

/// The blocked termination signals, readable from a signalfd.
#[derive(Debug)]
pub struct TermSignals {
    fd: OwnedFd,
}

fn term_set() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set; sigaddset only writes it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in TERMINATING {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

impl TermSignals {
    /// Block the signals on the calling thread (threads it starts later
    /// inherit that) and open a signalfd for them. Call before any VMM
    /// thread starts: a thread that does not block them would take the
    /// default action for the whole process.
    pub fn block() -> io::Result<Self> {
        Self::block_for(false)
    }

    /// As `block`; `daemon`: SIGHUP is ignored instead (QEMU's
    /// `-daemonize`: a daemon has no terminal to hang up).
    pub fn block_for(daemon: bool) -> io::Result<Self> {
        let mut set = term_set();
        if daemon {
            // SAFETY: the set is initialised; SIG_IGN needs no handler.
            unsafe {
                libc::sigdelset(&mut set, libc::SIGHUP);
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
            }
        }
        // SAFETY: `set` is a valid, initialised signal set.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        // SAFETY: a new signalfd for a valid set; the fd is ours to own.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by signalfd and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Self { fd })
    }

    /// A pending termination signal, if any (never blocks).
    pub fn take(&self) -> Option<Termination> {
        // SAFETY: signalfd_siginfo is plain data; zero is a valid value.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let len = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reads at most `len` bytes into `info`, which is `len` long.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                std::ptr::addr_of_mut!(info).cast(),
                len,
            )
        };
        (n == len as isize).then_some(Termination {
            signal: info.ssi_signo as i32,
            pid: info.ssi_pid,
        })
    }
}

impl AsRawFd for TermSignals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Wait until one of `fds` is readable (EINTR retried: the vCPU kick
/// signal may land on any thread that does not block it). Returns which
/// ones are.
pub fn wait_readable(fds: &[RawFd]) -> io::Result<Vec<bool>> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `polls` is a valid array of `polls.len()` pollfds.
        let rc = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) };
        if rc >= 0 {
            return Ok(polls.iter().map(|p| p.revents != 0).collect());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_signal_is_read_with_its_sender() {
        // On a thread of its own: the mask stays with that thread and the
        // signal is directed at it, so the test runner is not affected.
        std::thread::spawn(|| {
            let s = TermSignals::block().unwrap();
            assert_eq!(s.take(), None, "nothing pending yet");
            // SAFETY: signals this thread, which blocks SIGHUP.
            let rc = unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGHUP) };
            assert_eq!(rc, 0);
            let ready = wait_readable(&[s.as_raw_fd()]).unwrap();
            assert_eq!(ready, vec![true]);
            let t = s.take().expect("SIGHUP pending");
            assert_eq!(t.signal, libc::SIGHUP);
            assert_eq!(t.pid, std::process::id());
            assert!(t
                .describe()
                .starts_with("terminating on signal 1 from pid "));
        })
        .join()
        .unwrap();
    }
}
