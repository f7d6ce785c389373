//! Process control that QEMU users expect: `-daemonize` (detach once set
//! up) and `-pidfile` (the pid, written and locked for the process's
//! life, removed when it ends).
//!
//! Both fork, and fork only where that is safe: `daemonize` before any
//! thread exists; the `Remover` (pid file, monitor sockets) is a child
//! that only makes async-signal-safe calls. It exists because the VMM
//! itself cannot unlink anything once Landlock confines it: it waits for
//! the VMM to end (its pipe's other end closes) and removes each file only
//! if it is still the one the VMM made (same device and inode), so a file
//! a newer VM made in its place is left alone.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("-daemonize: {0}")]
    Daemonize(&'static str, #[source] io::Error),
    #[error("cannot create pid file {path}")]
    PidOpen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("Cannot lock pid file {path}: another VM holds it")]
    PidLocked {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write pid file {path}")]
    PidWrite {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The detached child's link to the parent waiting in the foreground.
pub struct Daemon {
    ready: OwnedFd,
}

/// Fork. The parent waits until the child calls `Daemon::ready` (exit 0)
/// or ends first (exit 1, the child's error is on stderr), and never
/// returns. The child starts a new session. Call before any thread starts.
pub fn daemonize() -> Result<Daemon, ProcessError> {
    let (r, w) = pipe().map_err(|e| ProcessError::Daemonize("pipe", e))?;
    // SAFETY: no thread exists yet (see the doc), so the child is a full
    // copy of a single-threaded process.
    match unsafe { libc::fork() } {
        -1 => Err(ProcessError::Daemonize("fork", io::Error::last_os_error())),
        0 => {
            drop(r);
            // SAFETY: setsid has no memory effects.
            unsafe { libc::setsid() };
            Ok(Daemon { ready: w })
        }
        _ => {
            drop(w);
            let mut b = [0u8; 1];
            // SAFETY: reads one byte into `b`.
            let n = unsafe { libc::read(r.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
            std::process::exit(if n == 1 && b[0] == 0 { 0 } else { 1 });
        }
    }
}

impl Daemon {
    /// Set-up is done: the standard streams go to /dev/null (opened
    /// here, before confinement) and the parent exits 0.
    pub fn ready(self) -> Result<(), ProcessError> {
        let null = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| ProcessError::Daemonize("opening /dev/null", e))?;
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard fds, which this process owns.
            if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
                return Err(ProcessError::Daemonize(
                    "redirecting stdio",
                    io::Error::last_os_error(),
                ));
            }
        }
        // SAFETY: writes one byte from a live buffer.
        unsafe { libc::write(self.ready.as_raw_fd(), [0u8].as_ptr().cast(), 1) };
        Ok(())
    }
}

/// A written pid file, locked while it is held (see `Remover` for its
/// removal).
pub struct PidFile {
    _file: File,
}

/// Create `path`, lock it as QEMU does (a write lock on the whole file:
/// a second VM with the same pid file is refused), write the pid.
pub fn pidfile(path: &Path) -> Result<PidFile, ProcessError> {
    let p = || path.to_path_buf();
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| ProcessError::PidOpen { path: p(), source })?;
    // SAFETY: lockf on an fd we own.
    if unsafe { libc::lockf(file.as_raw_fd(), libc::F_TLOCK, 0) } != 0 {
        return Err(ProcessError::PidLocked {
            path: p(),
            source: io::Error::last_os_error(),
        });
    }
    let write = |f: &mut File| -> io::Result<()> {
        f.set_len(0)?;
        writeln!(f, "{}", std::process::id())?;
        f.flush()
    };
    write(&mut file).map_err(|source| ProcessError::PidWrite { path: p(), source })?;
    Ok(PidFile { _file: file })
}

/// Removes files when the process ends: the pid file and the monitors'
/// unix sockets (QEMU removes both). Dropping it (process exit) closes
/// the pipe that wakes the forked child.
pub struct Remover {
    _wake: OwnedFd,
}

/// One path to remove, with the identity it had when we made it.
struct Target {
    path: CString,
    dev: u64,
    ino: u64,
}

impl Remover {
    /// Fork the remover for `paths` (each must exist now). The child makes
    /// only async-signal-safe calls, so forking after threads started is
    /// safe.
    pub fn spawn(paths: &[&Path]) -> io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let mut targets = Vec::new();
        for p in paths {
            let m = std::fs::symlink_metadata(p)?;
            targets.push(Target {
                path: CString::new(p.as_os_str().as_bytes())
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?,
                dev: m.dev(),
                ino: m.ino(),
            });
        }
        let (r, w) = pipe()?;
        let rfd = r.as_raw_fd();
        // SAFETY: the child runs `remover`, which makes only
        // async-signal-safe calls on data prepared before the fork.
        match unsafe { libc::fork() } {
            -1 => Err(io::Error::last_os_error()),
            0 => remover(rfd, &targets),
            _ => {
                drop(r);
                Ok(Self { _wake: w })
            }
        }
    }
}

/// The remover's body, in the forked child.
fn remover(rfd: libc::c_int, targets: &[Target]) -> ! {
    let keep = rfd as u32;
    // SAFETY: closing fds of this child process only.
    unsafe {
        libc::syscall(libc::SYS_close_range, 0, keep - 1, 0);
        libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0);
    }
    let mut b = [0u8; 1];
    loop {
        // SAFETY: reads at most one byte into `b`.
        let n = unsafe { libc::read(rfd, b.as_mut_ptr().cast(), 1) };
        if n >= 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    for t in targets {
        // SAFETY: stat is plain data; zero is a valid value.
        let mut now: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: lstat fills `now`; the path is a live C string.
        let same = unsafe { libc::lstat(t.path.as_ptr(), &mut now) } == 0
            && (now.st_dev, now.st_ino) == (t.dev, t.ino);
        if same {
            // SAFETY: unlinks a path given as a live C string.
            unsafe { libc::unlink(t.path.as_ptr()) };
        }
    }
    // SAFETY: ends this child without running the parent's exit handlers.
    unsafe { libc::_exit(0) }
}
