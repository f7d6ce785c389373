//! `-netdev user` on a real user-mode stack instead of one written here:
//! Debian's `passt`, started for the VM with one end of a socketpair
//! (`passt --fd N`), speaking QEMU's `-netdev stream` protocol over it:
//! every frame is preceded by its length as 4 bytes big-endian, and frames
//! carry no vnet header. So this backend strips the guest's 12-byte header
//! on transmit and writes an empty one on receive, and the device offers
//! no checksum or TSO offloads with it (passt wants complete frames).
//!
//! Addressing is QEMU's slirp default: guest 10.0.2.15/24, gateway
//! 10.0.2.2; passt maps connections to the gateway to the host's loopback.
//! `hostfwd` maps to passt's `-t`/`-u HOSTPORT:GUESTPORT`.
//!
//! passt's end: the VMM keeps a pidfd of it (`pidfd_open` at start-up,
//! before any sandbox). When the socket reads end-of-file (passt exited
//! early, e.g. with no default route, or was killed), the net worker
//! reaps it through that pidfd (`waitid(P_PIDFD)`, the only wait its
//! seccomp role allows) and logs how it ended, so that no defunct passt
//! stays under the VMM for the rest of the run.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::backend::{Iov, NetBackend};
use super::HDR_LEN;

/// Debian installs it here; also searched in PATH.
const PASST: &str = "passt";
/// passt's frames are at most 65535 bytes plus its own slack.
const MAX_FRAME: usize = 65536 + 256;

#[derive(Debug, thiserror::Error)]
pub enum PasstError {
    #[error("-netdev user needs passt, which is not installed (apt-get install passt)")]
    Missing,
    #[error("passt: {what}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// One host-to-guest forward (`hostfwd=tcp::8080-:80`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub udp: bool,
    pub host_port: u16,
    pub guest_port: u16,
}

pub struct Passt {
    sock: OwnedFd,
    /// A pidfd of the passt this backend started, until it is reaped
    /// (see the module doc). While it runs, closing `sock` at the VMM's
    /// exit ends it (`--fd` implies one-off).
    pidfd: Mutex<Option<OwnedFd>>,
    /// A frame being received: length prefix and as much as arrived. At
    /// most one frame, so the fd's readiness still tells all.
    rx: Mutex<Vec<u8>>,
    name: String,
}

fn find() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(PASST))
        .find(|p| p.is_file())
}

impl Passt {
    pub fn start(id: &str, forwards: &[Forward]) -> Result<Passt, PasstError> {
        let bin = find().ok_or(PasstError::Missing)?;
        let io_err = |what| move |source| PasstError::Io { what, source };
        let mut sv = [0 as RawFd; 2];
        // SAFETY: socketpair writes two fds into `sv`, which has room.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                sv.as_mut_ptr(),
            )
        };
        if r < 0 {
            return Err(io_err("socketpair")(io::Error::last_os_error()));
        }
        // SAFETY: both fds were just created and nobody else owns them.
        let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
        let child_fd = theirs.as_raw_fd();
        let mut cmd = Command::new(bin);
        cmd.args(["--foreground", "--quiet", "--ipv4-only"])
            .args(["--address", "10.0.2.15", "--netmask", "24"])
            .args(["--gateway", "10.0.2.2"])
            .arg("--fd")
            .arg(child_fd.to_string());
        let (tcp, udp): (Vec<_>, Vec<_>) = forwards.iter().partition(|f| !f.udp);
        for (flag, list) in [("-t", tcp), ("-u", udp)] {
            if !list.is_empty() {
                let spec: Vec<String> = list
                    .iter()
                    .map(|f| format!("{}:{}", f.host_port, f.guest_port))
                    .collect();
                cmd.arg(flag).arg(spec.join(","));
            } else {
                cmd.arg(flag).arg("none");
            }
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null());
        // SAFETY: runs in the forked child before exec and only calls
        // fcntl (async-signal-safe) to let passt's end survive exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(child_fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(io_err("starting passt"))?;
        drop(theirs);
        let pidfd = pidfd_of(&child);
        Ok(Passt::on_socket(ours, pidfd, id))
    }

    /// The backend on an already connected stream socket (the tests'
    /// fake passt is the other end of a socketpair).
    fn on_socket(sock: OwnedFd, pidfd: Option<OwnedFd>, id: &str) -> Passt {
        Passt {
            sock,
            pidfd: Mutex::new(pidfd),
            rx: Mutex::new(Vec::with_capacity(MAX_FRAME + 4)),
            name: format!("passt({id})"),
        }
    }
}

/// A pidfd for the child just spawned (not yet waited for, so its pid
/// cannot have been reused). None on kernels without pidfd_open (< 5.3):
/// passt then stays defunct after an early exit, as before.
fn pidfd_of(child: &Child) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
    if fd < 0 {
        log::debug!(
            "passt: no pidfd ({}); an early exit is not reaped",
            io::Error::last_os_error()
        );
        return None;
    }
    // SAFETY: pidfd_open just returned this fd and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// How a reaped child ended, in words.
fn how_it_ended(info: &libc::siginfo_t) -> String {
    // SAFETY: waitid filled `info` for a CLD_* event, whose union member
    // carries si_status.
    let status = unsafe { info.si_status() };
    match info.si_code {
        libc::CLD_EXITED => format!("exited with status {status}"),
        libc::CLD_KILLED | libc::CLD_DUMPED => format!("was killed by signal {status}"),
        c => format!("ended (code {c}, status {status})"),
    }
}

/// How long the worker waits, after passt's socket reached end-of-file,
/// for passt itself to have exited: it closes its fds while exiting, a
/// moment before it can be reaped.
const EXIT_GRACE: Duration = Duration::from_millis(200);

impl Passt {
    /// passt closed its end: reap it if it has exited (waiting at most
    /// `grace` for that), and say how it ended. Idempotent; a passt that
    /// closed the socket but runs on is left alone (the VMM's exit ends it).
    /// Returns how it ended when this call reaped it.
    fn reap(&self, grace: Duration) -> Option<String> {
        let mut slot = self.pidfd.lock().unwrap_or_else(|e| e.into_inner());
        let fd = slot.as_ref()?;
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call. A pidfd polls readable
        // once the process has exited.
        let r = unsafe { libc::poll(&mut pfd, 1, grace.as_millis() as libc::c_int) };
        if r <= 0 {
            log::warn!("{}: passt closed its socket but has not exited", self.name);
            return None;
        }
        // SAFETY: an all-zero siginfo_t is valid; waitid fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid on our own child's pidfd, writing into `info`.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                fd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        if r < 0 {
            log::warn!(
                "{}: reaping passt: {}",
                self.name,
                io::Error::last_os_error()
            );
            return None;
        }
        let how = how_it_ended(&info);
        log::warn!("{}: passt {how}", self.name);
        *slot = None;
        Some(how)
    }
}

/// Copies `src` into the iovecs from byte `at` on; false if they are
/// too small.
///
/// # Safety
/// As `NetBackend::readv`: each iovec is writable memory.
unsafe fn scatter(iov: &[Iov], mut at: usize, src: &[u8]) -> bool {
    let mut done = 0;
    for v in iov {
        if at >= v.len {
            at -= v.len;
            continue;
        }
        let n = (v.len - at).min(src.len() - done);
        // SAFETY: the caller vouches for the iovec; n fits in it and in src.
        unsafe { std::ptr::copy_nonoverlapping(src[done..].as_ptr(), (v.base + at) as *mut u8, n) };
        done += n;
        at = 0;
        if done == src.len() {
            return true;
        }
    }
    done == src.len()
}

impl NetBackend for Passt {
    fn name(&self) -> &str {
        &self.name
    }

    unsafe fn readv(&self, iov: &[Iov]) -> io::Result<usize> {
        let mut st = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let need = if st.len() < 4 {
                4
            } else {
                4 + u32::from_be_bytes([st[0], st[1], st[2], st[3]]) as usize
            };
            if need > MAX_FRAME + 4 {
                // The stream is out of step; nothing after this parses.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("frame length {} from passt", need - 4),
                ));
            }
            if st.len() >= 4 && st.len() == need {
                let frame_len = need - 4;
                if frame_len == 0 {
                    st.clear();
                    continue;
                }
                // SAFETY: the caller's contract for readv.
                let ok =
                    unsafe { scatter(iov, 0, &[0u8; HDR_LEN]) && scatter(iov, HDR_LEN, &st[4..]) };
                st.clear();
                if !ok {
                    return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
                }
                return Ok(HDR_LEN + frame_len);
            }
            let have = st.len();
            st.resize(need, 0);
            // SAFETY: recv writes at most need - have bytes into the tail
            // of `st`, which has that length.
            let n = unsafe {
                libc::recv(
                    self.sock.as_raw_fd(),
                    st[have..].as_mut_ptr().cast(),
                    need - have,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                let e = io::Error::last_os_error();
                st.truncate(have);
                if n == 0 || e.raw_os_error() == Some(libc::ECONNRESET) {
                    drop(st);
                    self.reap(EXIT_GRACE);
                    return Err(io::Error::from_raw_os_error(libc::ECONNRESET));
                }
                return Err(e);
            }
            st.truncate(have + n as usize);
        }
    }

    unsafe fn writev(&self, iov: &[Iov]) -> io::Result<usize> {
        // Skip the vnet header, put the length in front.
        let len = iov
            .iter()
            .map(|v| v.len)
            .sum::<usize>()
            .saturating_sub(HDR_LEN);
        let prefix = (len as u32).to_be_bytes();
        let mut out: Vec<libc::iovec> = Vec::with_capacity(iov.len() + 1);
        out.push(libc::iovec {
            iov_base: prefix.as_ptr() as *mut libc::c_void,
            iov_len: 4,
        });
        let mut skip = HDR_LEN;
        for v in iov {
            if skip >= v.len {
                skip -= v.len;
                continue;
            }
            out.push(libc::iovec {
                iov_base: (v.base + skip) as *mut libc::c_void,
                iov_len: v.len - skip,
            });
            skip = 0;
        }
        // The socket is blocking: a stream must never carry half a frame,
        // so partial writes are finished here.
        let mut left = 4 + len;
        let mut first = 0;
        while left > 0 {
            let cnt = (out.len() - first).min(1024) as libc::c_int;
            // SAFETY: every iovec points at `prefix` or the caller's
            // readable memory (readv's contract, for writev).
            let n = unsafe { libc::writev(self.sock.as_raw_fd(), out[first..].as_ptr(), cnt) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)) {
                    self.reap(EXIT_GRACE);
                }
                return Err(e);
            }
            let mut n = n as usize;
            left -= n;
            while n > 0 {
                let v = &mut out[first];
                if n >= v.iov_len {
                    n -= v.iov_len;
                    first += 1;
                } else {
                    v.iov_base = (v.iov_base as usize + n) as *mut libc::c_void;
                    v.iov_len -= n;
                    n = 0;
                }
            }
        }
        Ok(HDR_LEN + len)
    }

    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn set_offloads(&self, _flags: u32) -> io::Result<()> {
        // None are offered with passt (see `takes_offloads`).
        Ok(())
    }

    fn takes_offloads(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    use super::*;

    fn pair() -> (Passt, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Passt::on_socket(a.into(), None, "t"), b)
    }

    /// readv on iovecs the test built over its own live buffers.
    fn rd(p: &Passt, v: &[Iov]) -> io::Result<usize> {
        // SAFETY: every caller passes iovecs over buffers alive for the call.
        unsafe { p.readv(v) }
    }

    fn iov(b: &mut [u8]) -> Iov {
        Iov {
            base: b.as_mut_ptr() as usize,
            len: b.len(),
        }
    }

    #[test]
    fn transmit_drops_the_vnet_header_and_prefixes_the_length() {
        let (p, mut peer) = pair();
        let mut hdr = [0xeeu8; 8];
        let mut rest = *b"\xee\xee\xee\xeeframe-bytes";
        // The header spans two iovecs, as a guest may post it.
        // SAFETY: both iovecs point at live local buffers.
        let n = unsafe { p.writev(&[iov(&mut hdr), iov(&mut rest)]) }.unwrap();
        assert_eq!(n, HDR_LEN + 11);
        let mut got = [0u8; 15];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got[..4], &11u32.to_be_bytes());
        assert_eq!(&got[4..], b"frame-bytes");
    }

    #[test]
    fn receive_reassembles_frames_and_writes_an_empty_header() {
        let (p, mut peer) = pair();
        let mut buf = [0xffu8; 64];
        let (a, b) = buf.split_at_mut(5);
        let v = [iov(a), iov(b)];
        let e = rd(&p, &v).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        // A frame in pieces: half the prefix, then the rest and a second
        // frame, then an empty frame that is skipped.
        peer.write_all(&[0, 0]).unwrap();
        assert_eq!(rd(&p, &v).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        peer.write_all(&[0, 3, b'a', b'b', b'c', 0, 0, 0, 0, 0, 0, 0, 2])
            .unwrap();
        peer.write_all(b"xy").unwrap();
        assert_eq!(rd(&p, &v).unwrap(), HDR_LEN + 3);
        assert_eq!(&buf[..HDR_LEN], &[0u8; HDR_LEN]);
        assert_eq!(&buf[HDR_LEN..HDR_LEN + 3], b"abc");
        let (a, b) = buf.split_at_mut(5);
        let v = [iov(a), iov(b)];
        assert_eq!(rd(&p, &v).unwrap(), HDR_LEN + 2);
        assert_eq!(&buf[HDR_LEN..HDR_LEN + 2], b"xy");
    }

    #[test]
    fn too_big_for_the_buffers_drops_one_frame_and_eof_is_an_error() {
        let (p, mut peer) = pair();
        let mut small = [0u8; 16];
        let v = [iov(&mut small)];
        peer.write_all(&10u32.to_be_bytes()).unwrap();
        peer.write_all(&[7u8; 10]).unwrap();
        peer.write_all(&1u32.to_be_bytes()).unwrap();
        peer.write_all(b"z").unwrap();
        let e = rd(&p, &v).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE));
        assert_eq!(rd(&p, &v).unwrap(), HDR_LEN + 1);
        drop(peer);
        let e = rd(&p, &v).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET));
    }

    #[test]
    fn a_length_past_any_frame_is_refused() {
        let (p, mut peer) = pair();
        let mut b = [0u8; 64];
        let v = [iov(&mut b)];
        peer.write_all(&u32::MAX.to_be_bytes()).unwrap();
        let e = rd(&p, &v).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    // The children are reaped through their pidfds, by the code under test.
    #[allow(clippy::zombie_processes)]
    fn a_passt_that_ended_is_reaped_when_its_socket_closes() {
        let (a, b) = UnixStream::pair().unwrap();
        // Stands in for passt: a child that ends with status 3.
        let child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        let pidfd = pidfd_of(&child).unwrap();
        // As with passt, the process has ended when its socket closes.
        let mut pfd = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd over a live pidfd; no timeout (the child ends).
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, -1) }, 1);
        let afd = a.as_raw_fd();
        let p = Passt::on_socket(a.into(), Some(pidfd), "t");
        drop(b);
        // A child another test forks at this moment holds a copy of `b`
        // until it execs, so the hang-up may come a little later.
        let mut hup = libc::pollfd {
            fd: afd,
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one pollfd over the socket `p` owns; bounded wait.
        assert_eq!(unsafe { libc::poll(&mut hup, 1, 10_000) }, 1, "no hang-up");
        let mut buf = [0u8; 64];
        let e = rd(&p, &[iov(&mut buf)]).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ECONNRESET));
        // Reaped already: no zombie left to wait for.
        // SAFETY: waitpid on this test's own child, no status pointer.
        let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(r, -1, "the child was not reaped");
        assert_eq!(p.reap(Duration::ZERO), None, "reaped once");
    }

    #[test]
    // The children are reaped through their pidfds, by the code under test.
    #[allow(clippy::zombie_processes)]
    fn the_reap_says_how_passt_ended() {
        let (a, _b) = UnixStream::pair().unwrap();
        let child = Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .unwrap();
        let p = Passt::on_socket(a.into(), pidfd_of(&child), "t");
        assert_eq!(
            p.reap(Duration::from_secs(10)).as_deref(),
            Some("was killed by signal 9")
        );
        let (a, _b) = UnixStream::pair().unwrap();
        let child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        let p = Passt::on_socket(a.into(), pidfd_of(&child), "t");
        assert_eq!(
            p.reap(Duration::from_secs(10)).as_deref(),
            Some("exited with status 3")
        );
    }

    #[test]
    fn no_offloads_are_offered_on_passt() {
        let (p, _peer) = pair();
        assert!(!p.takes_offloads());
    }
}
