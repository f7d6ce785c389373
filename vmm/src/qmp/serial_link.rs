//! COM1 on a socket or a pty (`-serial unix:...|tcp:...|pty`,
//! `-serial chardev:ID`): the one connected peer is the console.
//!
//! Owns the listening socket or the pty pair (opened at start-up, before
//! the process is confined) and the current peer. The vCPU writes the
//! guest's output through `LinkWriter`, never blocking: while no client
//! is connected, or while it does not read, bytes are dropped and counted
//! (one warning, then a debug line per million). The monitor thread
//! (`server`) accepts the client and reads its input into COM1 the way
//! it feeds keys from stdin. It does not own COM1 nor the poll loop.
//!
//! The pty is made by hand with libc (posix_openpt and friends): the few
//! calls do not justify a crate, and the slave side is kept open here (in
//! raw mode) so that the master never reports a hang-up busy-loop while
//! no client has the pty open, and no line discipline alters the bytes.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::listen::{self, ListenError, Listener};
use crate::config::Endpoint;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("serial chardev")]
    Listen(#[from] ListenError),
    #[error("serial pty: {op} failed")]
    Pty {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

enum Source {
    Listener(Listener),
    /// The pty's slave side, held open; the master is the peer.
    Pty {
        slave: File,
    },
}

/// The console's far end.
pub struct SerialLink {
    source: Source,
    peer: Mutex<Option<OwnedFd>>,
    dropped: AtomicU64,
    warned: AtomicBool,
}

impl SerialLink {
    /// A listening unix or tcp socket (server=on, wait=off).
    pub fn listen(e: &Endpoint) -> Result<Arc<Self>, LinkError> {
        Ok(Arc::new(Self::new(
            Source::Listener(listen::listen(e)?),
            None,
        )))
    }

    /// A new pty, in raw mode; prints its name on stdout as QEMU does.
    pub fn pty() -> Result<Arc<Self>, LinkError> {
        let err = |op| {
            let source = std::io::Error::last_os_error();
            LinkError::Pty { op, source }
        };
        let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC | libc::O_NONBLOCK;
        // SAFETY: posix_openpt returns a new fd or -1; no memory is passed.
        let master = unsafe { libc::posix_openpt(flags) };
        if master < 0 {
            return Err(err("posix_openpt"));
        }
        // SAFETY: `master` is a fresh fd that nothing else owns.
        let master = unsafe { OwnedFd::from_raw_fd(master) };
        // SAFETY: grantpt/unlockpt take the master fd only.
        if unsafe { libc::grantpt(master.as_raw_fd()) } != 0 {
            return Err(err("grantpt"));
        }
        // SAFETY: as above.
        if unsafe { libc::unlockpt(master.as_raw_fd()) } != 0 {
            return Err(err("unlockpt"));
        }
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: ptsname_r writes a NUL-terminated name of at most
        // `name.len()` bytes into `name`.
        if unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) } != 0 {
            return Err(err("ptsname_r"));
        }
        // SAFETY: ptsname_r succeeded, so `name` holds a C string.
        let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .into_owned();
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&path)
            .map_err(|source| LinkError::Pty {
                op: "opening the slave",
                source,
            })?;
        raw_mode(&slave).map_err(|source| LinkError::Pty {
            op: "raw mode",
            source,
        })?;
        // QEMU's words, on stdout as QEMU 7.2 prints them (qemu_printf):
        // scripts parse them to find the pty.
        println!("char device redirected to {path} (label serial0)");
        Ok(Arc::new(Self::new(Source::Pty { slave }, Some(master))))
    }

    fn new(source: Source, peer: Option<OwnedFd>) -> Self {
        Self {
            source,
            peer: Mutex::new(peer),
            dropped: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        }
    }

    /// At exit: closing a pty's master hangs its slave up, and the kernel
    /// then discards whatever the client has not read yet (the last lines
    /// of the guest's console). Waits while the client keeps reading, at
    /// most 3 s, and gives up after 500 ms in which it read nothing (no
    /// client, or one that stopped): a pty nobody attached costs its VM
    /// half a second at exit. A busy host can hold a reading client off
    /// the CPU for a good part of that (a test reader on two cores shared
    /// with two VMs lost the probe's last line with no wait at all).
    /// Sockets keep their data past close and need no wait.
    pub fn drain(&self) {
        let Source::Pty { slave } = &self.source else {
            return;
        };
        let start = std::time::Instant::now();
        let (mut last, mut progress) = (usize::MAX, start);
        loop {
            let mut queued: libc::c_int = 0;
            // SAFETY: FIONREAD writes one int, the bytes the slave side
            // holds unread.
            if unsafe { libc::ioctl(slave.as_raw_fd(), libc::FIONREAD, &mut queued) } != 0 {
                return;
            }
            let queued = queued.max(0) as usize;
            let now = std::time::Instant::now();
            if queued == 0
                || now - start > std::time::Duration::from_secs(3)
                || (queued >= last && now - progress > std::time::Duration::from_millis(500))
            {
                return;
            }
            if queued < last {
                (last, progress) = (queued, now);
            }
            // Main's seccomp filter has poll, not nanosleep.
            // SAFETY: poll with no fds only waits for the timeout.
            unsafe { libc::poll(std::ptr::null_mut(), 0, 5) };
        }
    }

    /// A writer for COM1's output.
    pub fn writer(self: &Arc<Self>) -> LinkWriter {
        LinkWriter(self.clone())
    }

    /// Guest output bytes dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<OwnedFd>> {
        self.peer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fd the monitor thread polls and what for: the peer to read
    /// when `want_input`, else the listener while none is connected.
    pub fn poll_fd(&self, want_input: bool) -> RawFd {
        let peer = self.lock();
        match (&*peer, &self.source) {
            (Some(p), _) if want_input => p.as_raw_fd(),
            (Some(_), _) => -1,
            (None, Source::Listener(l)) => listen::raw_fd(l),
            (None, Source::Pty { .. }) => -1,
        }
    }

    /// The poll said the fd is ready: accept a client, or read input
    /// into `buf`. Returns the bytes read.
    pub fn ready(&self, buf: &mut [u8]) -> usize {
        let mut peer = self.lock();
        let Some(p) = peer.as_ref() else {
            if let Source::Listener(l) = &self.source {
                *peer = listen::accept_fd(l);
            }
            return 0;
        };
        // SAFETY: reads at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::read(p.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            return n as usize;
        }
        let e = std::io::Error::last_os_error();
        let again = n < 0
            && matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            );
        if !again && matches!(self.source, Source::Listener(_)) {
            // The client left: the next one may connect.
            *peer = None;
        }
        0
    }

    fn write_out(&self, buf: &[u8]) {
        let peer = self.lock();
        let sent = match &*peer {
            // SAFETY: writes at most `buf.len()` bytes from `buf` to a
            // non-blocking fd this link owns.
            Some(p) => unsafe { libc::write(p.as_raw_fd(), buf.as_ptr().cast(), buf.len()) },
            None => 0,
        };
        drop(peer);
        let lost = buf.len() - sent.max(0) as usize;
        if lost == 0 {
            return;
        }
        let before = self.dropped.fetch_add(lost as u64, Ordering::Relaxed);
        if !self.warned.swap(true, Ordering::Relaxed) {
            log::warn!("serial: no client reads the console; its output is dropped (counted)");
        } else if before / 1_000_000 != (before + lost as u64) / 1_000_000 {
            log::debug!("serial: {} console bytes dropped", before + lost as u64);
        }
    }
}

/// COM1's output to the link; never blocks and never fails.
pub struct LinkWriter(Arc<SerialLink>);

impl Write for LinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_out(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// cfmakeraw on the pty: bytes pass unchanged, nothing is echoed.
fn raw_mode(f: &File) -> std::io::Result<()> {
    // SAFETY: termios is plain data; tcgetattr fills it.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid termios for the fd's attributes.
    if unsafe { libc::tcgetattr(f.as_raw_fd(), &mut t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: cfmakeraw only edits `t`.
    unsafe { libc::cfmakeraw(&mut t) };
    // SAFETY: sets the attributes from a valid termios.
    if unsafe { libc::tcsetattr(f.as_raw_fd(), libc::TCSANOW, &t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    #[test]
    fn output_without_a_reader_is_dropped_and_counted_never_blocking() {
        let link = Arc::new(SerialLink::new(Source::Listener(Listener::Stdio), None));
        let mut w = link.writer();
        assert_eq!(w.write(b"nobody").unwrap(), 6);
        assert_eq!(link.dropped(), 6);

        let (ours, mut theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        *link.lock() = Some(OwnedFd::from(ours));
        w.write_all(b"seen").unwrap();
        let mut got = [0u8; 4];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"seen");
        // A peer that stops reading: the socket fills, the rest is dropped,
        // and every write still returns at once.
        let chunk = [b'x'; 4096];
        for _ in 0..1024 {
            w.write_all(&chunk).unwrap();
        }
        assert!(link.dropped() > 6, "dropped {}", link.dropped());
    }
}
