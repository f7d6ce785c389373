//! `-netdev bridge` as QEMU does it: a privileged helper (Debian's
//! `/usr/lib/qemu/qemu-bridge-helper` by default) creates a tap, attaches
//! it to the bridge its ACL file (`/etc/qemu/bridge.conf`: `allow br0`,
//! `deny`, default deny) allows, and passes the tap fd back over a UNIX
//! socketpair with SCM_RIGHTS. The VMM therefore never needs
//! CAP_NET_ADMIN; from then on the fd is a tap like any other.
//!
//! Runs once at start-up, before any sandbox applies (it forks and execs).

use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::tap::{Tap, TapError};

/// Where Debian's QEMU installs the helper (QEMU's own default path).
pub const DEFAULT_HELPER: &str = "/usr/lib/qemu/qemu-bridge-helper";

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("bridge {br}: helper {helper} is not installed (apt-get install qemu-system-x86, or give helper=PATH)")]
    HelperMissing { br: String, helper: PathBuf },
    #[error("bridge {br}: {what}")]
    Io {
        br: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("bridge {br}: helper {helper} failed ({status}): {stderr}")]
    Refused {
        br: String,
        helper: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("bridge {br}: helper {helper} exited without passing a tap fd")]
    NoFd { br: String, helper: PathBuf },
    #[error("bridge {br}: the helper's fd")]
    Tap {
        br: String,
        #[source]
        source: TapError,
    },
}

/// Runs `helper --use-vnet --br=BR --fd=N` and returns the tap it made.
pub fn open(br: &str, helper: Option<&Path>) -> Result<Tap, BridgeError> {
    let helper = helper.unwrap_or(Path::new(DEFAULT_HELPER)).to_path_buf();
    let io_err = |what| {
        let br = br.to_string();
        move |source| BridgeError::Io { br, what, source }
    };
    if !helper.exists() {
        return Err(BridgeError::HelperMissing {
            br: br.into(),
            helper,
        });
    }
    let (ours, theirs) = socketpair().map_err(io_err("creating the helper's socketpair"))?;
    let child_fd = theirs.as_raw_fd();
    let mut cmd = Command::new(&helper);
    cmd.arg("--use-vnet")
        .arg(format!("--br={br}"))
        .arg(format!("--fd={child_fd}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and calls
    // only fcntl, which is async-signal-safe. It clears CLOEXEC on the
    // helper's end of the socketpair so that exactly that fd survives exec
    // (the pair is made CLOEXEC so no other child inherits it).
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(child_fd, libc::F_SETFD, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(io_err("starting the helper"))?;
    // Our copy of the helper's end must go, or recv_fd never sees EOF when
    // the helper exits without sending.
    drop(theirs);
    let fd = recv_fd(ours.as_raw_fd());
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        // Best effort: the message only explains a failure.
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(io_err("waiting for the helper"))?;
    if !status.success() {
        return Err(BridgeError::Refused {
            br: br.into(),
            helper,
            status,
            stderr: stderr.trim().to_string(),
        });
    }
    let fd = match fd {
        Ok(Some(fd)) => fd,
        Ok(None) => {
            return Err(BridgeError::NoFd {
                br: br.into(),
                helper,
            })
        }
        Err(e) => return Err(io_err("receiving the tap fd")(e)),
    };
    Tap::from_fd(fd).map_err(|source| BridgeError::Tap {
        br: br.into(),
        source,
    })
}

fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut sv = [0 as RawFd; 2];
    // SAFETY: socketpair writes two fds into `sv`, which has room for two.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) })
}

/// One message from the helper: a byte with an SCM_RIGHTS fd. None: the
/// helper closed its end without sending one.
fn recv_fd(sock: RawFd) -> io::Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut cbuf = [0u64; 8];
    loop {
        // SAFETY: msghdr is plain old data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        // SAFETY: msg points at live buffers (`byte`, `cbuf`) of the sizes
        // it states; MSG_CMSG_CLOEXEC keeps the fd from later children.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(None);
        }
        // SAFETY: the CMSG_* helpers walk the control buffer recvmsg just
        // filled, within msg_controllen.
        let mut c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !c.is_null() {
            // SAFETY: `c` points at a complete cmsghdr inside `cbuf`.
            let h = unsafe { &*c };
            if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
                // SAFETY: an SCM_RIGHTS payload holds at least one int; the
                // kernel installed the fd in this process, so we own it.
                let fd = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>()) };
                // SAFETY: as above: a fresh fd nobody else owns.
                return Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }));
            }
            // SAFETY: as for CMSG_FIRSTHDR.
            c = unsafe { libc::CMSG_NXTHDR(&msg, c) };
        }
        // A byte without an fd: keep reading until one comes or EOF.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_helper_is_named() {
        let e = open("br0", Some(Path::new("/nonexistent/helper")))
            .err()
            .unwrap();
        assert!(matches!(e, BridgeError::HelperMissing { .. }));
        assert!(e.to_string().contains("/nonexistent/helper"), "{e}");
    }

    #[test]
    fn a_helper_that_sends_nothing_is_reported() {
        // `true` exits 0 without passing an fd.
        let e = open("br0", Some(Path::new("/bin/true"))).err().unwrap();
        assert!(matches!(e, BridgeError::NoFd { .. }), "{e}");
        let e = open("br0", Some(Path::new("/bin/false"))).err().unwrap();
        assert!(matches!(e, BridgeError::Refused { .. }), "{e}");
    }
}
