//! Where entropy comes from: a host file or device opened once per
//! process (QEMU's `rng-random`, default /dev/urandom; an inherited fd
//! works the same), or the kernel's getrandom(2) (`rng-builtin`). A short
//! read is fine: the device reports how many bytes it wrote.

use std::fs::File;
use std::os::unix::fs::FileExt;
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

impl EntropySource for RngSource {
    fn fill(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            // read_at ignores the offset on character devices and pipes,
            // and lets several workers share one open file.
            RngSource::File { file, .. } => loop {
                match file.read_at(buf, 0) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
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
