//! The tap backend: `/dev/net/tun` opened with IFF_TAP | IFF_NO_PI |
//! IFF_VNET_HDR, attached by name (an existing tap, or a new one the
//! kernel creates; the attach itself is the `casemate-tap` crate, which
//! the jailer shares), or an inherited fd (the jailer's handoff, QEMU's
//! `fd=`), made non-blocking with a 12-byte vnet header
//! (TUNSETVNETHDRSZ). A multiqueue tap (IFF_MULTI_QUEUE) is one fd per
//! queue; queues the guest does not use are detached (TUNSETQUEUE).
//!
//! Written here rather than taken from crates.io: the tap crates there
//! (`tun-rs`, `tun`, `tappers`, `tun-tap`) are for programs that want IP
//! packets; none sets the vnet header size or gives per-feature
//! TUNSETOFFLOAD control, which a VMM needs to pass the guest's checksum
//! and TSO metadata through. Firecracker and Cloud Hypervisor likewise
//! keep their own small tap modules.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use super::backend::{Iov, NetBackend};
use super::HDR_LEN;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// Opening `/dev/net/tun` or TUNSETIFF (the `casemate-tap` crate).
    #[error(transparent)]
    Attach(#[from] casemate_tap::AttachError),
    #[error("tap {name}: {what}")]
    Ioctl {
        name: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("tap fd={fd}: {why}")]
    BadFd { fd: RawFd, why: String },
}

pub struct Tap {
    file: File,
    name: String,
    /// Whether attaching made the interface (it did not exist before).
    created: bool,
    /// Whether this queue is attached (TUNSETQUEUE refuses to attach or
    /// detach twice, and a device reset starts over).
    attached: AtomicBool,
}

use casemate_tap::{ifr_name, ifreq, FLAGS};

impl Tap {
    /// Attach to tap `name`, creating it when it does not exist (which
    /// needs CAP_NET_ADMIN; attaching to a tap owned by our user does not).
    pub fn open(name: &str) -> Result<Tap, TapError> {
        Self::attached(casemate_tap::attach(name, false)?)
    }

    /// `queues` queues of one multiqueue tap (IFF_MULTI_QUEUE), each its
    /// own fd; the kernel makes the tap on the first when `name` does not
    /// exist (an empty name: it picks one, which the others then take).
    pub fn open_queues(name: &str, queues: u16) -> Result<Vec<Tap>, TapError> {
        casemate_tap::attach_queues(name, queues)?
            .into_iter()
            .map(Self::attached)
            .collect()
    }

    fn attached(a: casemate_tap::Attached) -> Result<Tap, TapError> {
        let tap = Tap {
            file: File::from(a.fd),
            name: a.name,
            created: a.created,
            attached: AtomicBool::new(true),
        };
        tap.set_hdr_len()?;
        Ok(tap)
    }

    /// Take over an inherited tap fd: it must be a tap with the vnet
    /// header and no packet information (as QEMU requires of `fd=`).
    pub fn from_fd(fd: OwnedFd) -> Result<Tap, TapError> {
        let raw = fd.as_raw_fd();
        let mut req = ifreq("", 0);
        // SAFETY: TUNGETIFF writes an `ifreq` into `req`; on an fd that is
        // not a tun file it fails without writing.
        let r = unsafe { libc::ioctl(raw, libc::TUNGETIFF, &mut req) };
        if r < 0 {
            return Err(TapError::BadFd {
                fd: raw,
                why: format!(
                    "not an attached tap (TUNGETIFF: {})",
                    io::Error::last_os_error()
                ),
            });
        }
        // SAFETY: TUNGETIFF filled in the flags member of the union.
        let flags = libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags }) & 0xffff;
        if flags & FLAGS != FLAGS {
            return Err(TapError::BadFd {
                fd: raw,
                why: format!(
                    "the tap needs IFF_TAP, IFF_NO_PI and IFF_VNET_HDR (flags are {flags:#x})"
                ),
            });
        }
        let name = ifr_name(&req);
        // SAFETY: F_GETFL/F_SETFL on an fd we own change only its flags.
        let fl = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        // SAFETY: as above.
        if fl < 0 || unsafe { libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
            return Err(TapError::BadFd {
                fd: raw,
                why: format!("making it non-blocking: {}", io::Error::last_os_error()),
            });
        }
        let tap = Tap {
            file: File::from(fd),
            name,
            created: false,
            attached: AtomicBool::new(true),
        };
        tap.set_hdr_len()?;
        Ok(tap)
    }

    /// Whether `open` made the interface (then its settings are ours).
    pub fn created(&self) -> bool {
        self.created
    }

    /// Set the interface's MTU (SIOCSIFMTU through a datagram socket;
    /// needs CAP_NET_ADMIN, as creating the tap did).
    pub fn set_mtu(&self, mtu: u16) -> Result<(), TapError> {
        let err = |what| TapError::Ioctl {
            name: self.name.clone(),
            what,
            source: io::Error::last_os_error(),
        };
        // SAFETY: socket(2) with constant arguments; the fd is owned below.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if s < 0 {
            return Err(err("opening a socket to set the MTU"));
        }
        // SAFETY: `s` is a new fd nobody else owns.
        let s = unsafe { OwnedFd::from_raw_fd(s) };
        let mut req = ifreq(&self.name, 0);
        req.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
        // SAFETY: SIOCSIFMTU reads an `ifreq`, which `req` is.
        if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFMTU, &req) } < 0 {
            return Err(err("setting the MTU (SIOCSIFMTU)"));
        }
        Ok(())
    }

    fn set_hdr_len(&self) -> Result<(), TapError> {
        let len = HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETVNETHDRSZ, &len) };
        if r < 0 {
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                what: "setting the vnet header size (TUNSETVNETHDRSZ)",
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

fn check(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl NetBackend for Tap {
    fn name(&self) -> &str {
        &self.name
    }

    unsafe fn readv(&self, iov: &[Iov]) -> io::Result<usize> {
        let cnt = iov.len().min(1024) as libc::c_int;
        // SAFETY: `Iov` has `iovec`'s layout, and the caller guarantees
        // each one is writable memory for the call.
        check(unsafe { libc::readv(self.file.as_raw_fd(), iov.as_ptr().cast(), cnt) })
    }

    unsafe fn writev(&self, iov: &[Iov]) -> io::Result<usize> {
        let cnt = iov.len().min(1024) as libc::c_int;
        // SAFETY: `Iov` has `iovec`'s layout, and the caller guarantees
        // each one is readable memory for the call.
        check(unsafe { libc::writev(self.file.as_raw_fd(), iov.as_ptr().cast(), cnt) })
    }

    fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn set_enabled(&self, on: bool) -> io::Result<()> {
        if self.attached.load(Ordering::Relaxed) == on {
            return Ok(());
        }
        let flag = if on {
            libc::IFF_ATTACH_QUEUE
        } else {
            libc::IFF_DETACH_QUEUE
        };
        let req = ifreq("", flag);
        // SAFETY: TUNSETQUEUE reads an `ifreq`, which `req` is, on a tap
        // fd we own.
        let r = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETQUEUE, &req) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.attached.store(on, Ordering::Relaxed);
        Ok(())
    }

    fn set_offloads(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD,
                flags as libc::c_ulong,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
