//! Where entropy comes from: a host file or device opened once per
//! process (QEMU's `rng-random`, default /dev/urandom; an inherited fd
//! works the same), or the kernel's getrandom(2) (`rng-builtin`). A short
//! read is fine: the device reports how many bytes it wrote.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

/// Fills buffers with random bytes.
pub trait EntropySource: Send + Sync {
    /// Fill the start of `buf`; returns how many bytes were written.
    fn fill(&self, buf: &mut [u8]) -> std::io::Result<usize>;
}

/// See the module doc.
pub enum RngSource {
    File { path: PathBuf, file: File },
    Getrandom,
}

impl RngSource {
    /// A source reading `file` (opened once, by path or inherited), made
    /// non-blocking (see `fill`).
    pub fn file(path: PathBuf, file: File) -> std::io::Result<Self> {
        // SAFETY: F_GETFL/F_SETFL only read and set the descriptor's flags.
        let ok = unsafe {
            let fl = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            fl >= 0 && libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK) == 0
        };
        if !ok {
            return Err(std::io::Error::last_os_error());
        }
        Ok(RngSource::File { path, file })
    }
}

impl EntropySource for RngSource {
    fn fill(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            // A plain read: files, character devices and pipes alike. The
            // descriptor is made non-blocking at construction, so a source
            // with nothing to give (a FIFO, /dev/hwrng, an old kernel's
            // /dev/random) returns 0 bytes to the guest instead of wedging
            // the worker, whose stop eventfd would then go unread.
            RngSource::File { file, .. } => loop {
                match (&*file).read(buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(0),
                    r => return r,
                }
            },
            RngSource::Getrandom => loop {
                // SAFETY: `buf` is valid for writes of its length for the
                // duration of the call.
                let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n >= 0 {
                    return Ok(n as usize);
                }
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            },
        }
    }
}

impl std::fmt::Debug for RngSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RngSource::File { path, .. } => write!(f, "{}", path.display()),
            RngSource::Getrandom => write!(f, "getrandom"),
        }
    }
}
