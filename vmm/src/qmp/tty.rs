//! The terminal on stdin, in raw mode while the console runs: keys go to
//! the guest one by one, without the terminal's echo or line editing.
//! As QEMU's stdio chardev (`signal=on`), Ctrl-C still signals the VMM,
//! which ends the VM as a power-off. The saved settings are put back when
//! the guard drops: `builder::run` holds it, so every return (a clean
//! end, an error, a termination signal read from the signalfd) restores
//! them. A SIGKILL cannot, as for QEMU.

use std::os::fd::RawFd;

/// Whether stdin can carry keys: a terminal, pipe, socket or file. Not
/// when it is closed or /dev/null (the usual case under a supervisor):
/// then no console thread is started for it.
pub fn stdin_has_input() -> bool {
    // SAFETY: fstat fills a plain struct for fd 0.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid stat to fill.
    if unsafe { libc::fstat(libc::STDIN_FILENO, &mut st) } != 0 {
        return false;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFREG => true,
        libc::S_IFCHR => {
            // SAFETY: isatty only inspects the fd.
            let tty = unsafe { libc::isatty(libc::STDIN_FILENO) };
            tty == 1
        }
        _ => false,
    }
}

/// Restores the terminal's settings on drop.
pub struct RawTty {
    fd: RawFd,
    saved: libc::termios,
}

impl RawTty {
    /// Raw mode on stdin when it is a terminal; None otherwise.
    pub fn enter() -> Option<Self> {
        let fd = libc::STDIN_FILENO;
        // SAFETY: isatty only inspects the fd.
        if unsafe { libc::isatty(fd) } != 1 {
            return None;
        }
        // SAFETY: termios is plain data; tcgetattr fills it.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the struct.
        unsafe { libc::cfmakeraw(&mut raw) };
        raw.c_lflag |= libc::ISIG;
        // Output stays as the guest writes it (OPOST off, as QEMU).
        // SAFETY: a valid termios for a terminal fd.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            log::warn!(
                "console: cannot put the terminal in raw mode: {}",
                std::io::Error::last_os_error()
            );
            return None;
        }
        Some(Self { fd, saved })
    }
}

impl Drop for RawTty {
    fn drop(&mut self) {
        // SAFETY: puts back the settings read from the same fd.
        if unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) } != 0 {
            log::warn!(
                "console: cannot restore the terminal: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}
