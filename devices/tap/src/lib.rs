//! Attaching a tap: `/dev/net/tun` opened and bound to an interface by name
//! with TUNSETIFF and the flags Casemate's virtio-net needs (IFF_TAP |
//! IFF_NO_PI | IFF_VNET_HDR, plus IFF_MULTI_QUEUE for one queue of a
//! multiqueue tap). The VMM's tap backend (`casemate-devices`) attaches
//! through this when it is given `ifname=`; `casemate-jailer` attaches
//! through it before dropping privileges and hands the fds over, so a
//! jailed VMM needs neither `/dev/net/tun` nor CAP_NET_ADMIN.
//!
//! Owns only the attach: the vnet header size, offloads, queue
//! (de)activation and I/O stay with the backend. Its own crate (libc and
//! thiserror only) so that the small, static jailer does not pull in the
//! device models. crates.io's tap crates do not fit (see the backend's
//! module doc: no vnet header control).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

/// The flags every Casemate tap is attached with.
pub const FLAGS: libc::c_int = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("tap {name}: interface name longer than 15 bytes")]
    Name { name: String },
    #[error("tap {name}: opening /dev/net/tun")]
    OpenTun {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("tap {name}: {what}")]
    Attach {
        name: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// One attached queue of a tap.
#[derive(Debug)]
pub struct Attached {
    /// The `/dev/net/tun` fd, non-blocking and close-on-exec.
    pub fd: OwnedFd,
    /// The kernel's name for the interface (it picks one for an empty name).
    pub name: String,
    /// Whether attaching made the interface (it did not exist before).
    pub created: bool,
}

/// An `ifreq` with the name and flags set.
pub fn ifreq(name: &str, flags: libc::c_int) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    r.ifr_ifru.ifru_flags = flags as libc::c_short;
    r
}

/// The interface name in an `ifreq` the kernel filled in.
pub fn ifr_name(req: &libc::ifreq) -> String {
    req.ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect()
}

/// Whether interface `name` exists (in this network namespace).
fn exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// Attaches to tap `name` (one queue of it when `multi_queue`), creating it
/// when it does not exist, which needs CAP_NET_ADMIN; attaching to an
/// existing tap owned by the caller's user needs nothing.
pub fn attach(name: &str, multi_queue: bool) -> Result<Attached, AttachError> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(AttachError::Name { name: name.into() });
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|source| AttachError::OpenTun {
            name: name.into(),
            source,
        })?;
    let created = name.is_empty() || !exists(name);
    let flags = if multi_queue {
        FLAGS | libc::IFF_MULTI_QUEUE
    } else {
        FLAGS
    };
    let mut req = ifreq(name, flags);
    // SAFETY: TUNSETIFF reads and writes an `ifreq`, which `req` is, on a
    // /dev/net/tun fd we own.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if r < 0 {
        let source = io::Error::last_os_error();
        return Err(AttachError::Attach {
            name: name.into(),
            what: why(source.raw_os_error(), created),
            source,
        });
    }
    Ok(Attached {
        fd: OwnedFd::from(file),
        // The kernel's name (it picks one when `name` is empty).
        name: ifr_name(&req),
        created,
    })
}

/// `queues` queues of one multiqueue tap, each its own fd; the kernel makes
/// the tap on the first when `name` does not exist (an empty name: it
/// picks one, which the others then take).
pub fn attach_queues(name: &str, queues: u16) -> Result<Vec<Attached>, AttachError> {
    let first = attach(name, true)?;
    let name = first.name.clone();
    let mut all = Vec::with_capacity(usize::from(queues));
    all.push(first);
    for _ in 1..queues {
        let mut q = attach(&name, true)?;
        q.created = false;
        all.push(q);
    }
    Ok(all)
}

/// What a failed TUNSETIFF means.
fn why(errno: Option<i32>, created: bool) -> &'static str {
    // The kernel's only EPERM here: an existing tap owned by another user
    // or group, or creating one without CAP_NET_ADMIN (a jailed VMM has
    // neither; its launcher makes the tap for the jail's uid, or the
    // jailer attaches it and hands the fd over).
    match (errno, created) {
        (Some(libc::EPERM), false) => {
            "attaching (TUNSETIFF): the tap belongs to another user or group \
             (make it with `ip tuntap add NAME mode tap user UID` for this VMM's uid)"
        }
        (Some(libc::EPERM), true) => {
            "creating (TUNSETIFF): needs CAP_NET_ADMIN; make the tap beforehand \
             (`ip tuntap add NAME mode tap user UID`) or pass its fd (fd=)"
        }
        (Some(libc::EINVAL), false) => {
            "attaching (TUNSETIFF): the interface is not a tap with these flags \
             (a tun, another kind of device, or multi_queue does not match queues=)"
        }
        _ => "attaching (TUNSETIFF)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_ifreq() {
        let r = ifreq("tap0", FLAGS);
        assert_eq!(ifr_name(&r), "tap0");
        // SAFETY: `ifreq` set the flags member of the union.
        let flags = unsafe { r.ifr_ifru.ifru_flags };
        assert_eq!(libc::c_int::from(flags), FLAGS);
    }

    #[test]
    fn a_long_name_is_refused_before_any_syscall() {
        let e = attach("a-name-of-16-byt", false).unwrap_err();
        assert!(matches!(e, AttachError::Name { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "tap a-name-of-16-byt: interface name longer than 15 bytes"
        );
    }

    #[test]
    fn refusals_say_why() {
        assert!(why(Some(libc::EPERM), false).contains("belongs to another user"));
        assert!(why(Some(libc::EPERM), true).contains("CAP_NET_ADMIN"));
        assert!(why(Some(libc::EINVAL), false).contains("not a tap"));
        assert_eq!(why(Some(libc::EBUSY), false), "attaching (TUNSETIFF)");
    }
}
