//! COM1's output on stdout, written straight to fd 1 (no std buffering:
//! the UART sends a byte per exit anyway). A full stdout (a pipe nobody
//! reads) blocks the vCPU, as it blocks QEMU, so the guest is held back
//! rather than losing its console; but when the write is interrupted by
//! a kick (stop, reset, quit, a pause for a snapshot) the byte is dropped
//! and counted instead of retried, so the vCPU can answer the host: a
//! stalled reader never keeps the VM from stopping or quitting.
//! Owns only that policy; where the console goes is `console`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Console bytes dropped this run (stdout is one per process).
static DROPPED: AtomicU64 = AtomicU64::new(0);
static WARNED: AtomicBool = AtomicBool::new(false);

/// Bytes of guest console output dropped so far.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// See the module doc; writes to `fd` (1, or a pipe in tests).
pub struct StdoutWriter {
    fd: libc::c_int,
}

impl StdoutWriter {
    pub fn stdout() -> Self {
        Self {
            fd: libc::STDOUT_FILENO,
        }
    }
}

impl Write for StdoutWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // SAFETY: writes at most `buf.len()` bytes from `buf`.
        let n = unsafe { libc::write(self.fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
        // A kick: the host wants this vCPU; the bytes go.
        DROPPED.fetch_add(buf.len() as u64, Ordering::Relaxed);
        if !WARNED.swap(true, Ordering::Relaxed) {
            log::warn!(
                "console: stdout is full (nobody reads it); output is dropped while the VM is stopped or ends"
            );
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reach_the_fd() {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills `fds` with two new fds.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        let mut w = StdoutWriter { fd: fds[1] };
        w.write_all(b"abc").unwrap();
        let mut got = [0u8; 3];
        // SAFETY: reads 3 bytes into `got`.
        let n = unsafe { libc::read(fds[0], got.as_mut_ptr().cast(), 3) };
        assert_eq!(n, 3);
        assert_eq!(&got, b"abc");
        // SAFETY: closing the fds this test made.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
}
