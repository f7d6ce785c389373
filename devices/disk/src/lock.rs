//! Image locking that interoperates with QEMU's file-posix driver: OFD locks
//! (`F_OFD_SETLK`, per open file description, so two opens in one process
//! conflict too) on single bytes of the image file. Byte `100 + N` is held
//! for each permission bit `N` the opener uses, byte `200 + N` for each one
//! it refuses to share; all are read locks, and conflicts are found by
//! testing for a write lock (QEMU's `raw_apply_lock_bytes` then
//! `raw_check_lock_bytes`, in that order so that two racing openers cannot
//! both succeed). The locks live as long as the file stays open.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::error::{DiskError, IoError};
use crate::Format;

/// QEMU's `RAW_LOCK_PERM_BASE` and `RAW_LOCK_SHARED_BASE`.
const PERM_BASE: i64 = 100;
const SHARED_BASE: i64 = 200;

/// QEMU's `BLK_PERM_*` bits (include/block/block-common.h, QEMU 7.2).
pub const CONSISTENT_READ: u8 = 1 << 0;
pub const WRITE: u8 = 1 << 1;
pub const WRITE_UNCHANGED: u8 = 1 << 2;
pub const RESIZE: u8 = 1 << 3;
/// Number of permission bits (`BLK_PERM_MAX`), each with its QEMU name.
const PERM_NAMES: [&str; 4] = ["consistent read", "write", "write unchanged", "resize"];

/// Permissions an opener uses and those it refuses to share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockPerms {
    pub hold: u8,
    pub unshare: u8,
}

/// What an open is for; each maps to the bytes QEMU 7.2 locks for the same
/// use (checked against `/proc/locks` with a running QEMU).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockRole {
    /// A guest disk or tool writing the image: QEMU's virtio-blk drive.
    ReadWrite,
    /// A read-only guest disk or tool reading the image.
    ReadOnly,
    /// A file in a backing chain.
    Backing,
    /// `create` over a file (before truncating it): qemu-img create.
    Create,
}

impl LockPerms {
    /// The bytes QEMU takes for `role` on an image of `format`. qcow2 keeps
    /// metadata in the file, so every qcow2 user (and every backing file)
    /// also refuses to share resize, and a qcow2 writer holds resize (it
    /// grows the file). `force_share` is qemu-img's `-U`: share everything.
    pub fn for_role(role: LockRole, format: Format, force_share: bool) -> LockPerms {
        let meta = if format == Format::Qcow2 { RESIZE } else { 0 };
        let p = match role {
            LockRole::ReadWrite => LockPerms {
                hold: CONSISTENT_READ | WRITE | meta,
                unshare: WRITE | meta,
            },
            LockRole::ReadOnly => LockPerms {
                hold: CONSISTENT_READ,
                unshare: WRITE | meta,
            },
            LockRole::Backing => LockPerms {
                hold: CONSISTENT_READ,
                unshare: WRITE | RESIZE,
            },
            LockRole::Create => LockPerms {
                hold: WRITE | RESIZE,
                unshare: RESIZE,
            },
        };
        if force_share && role != LockRole::ReadWrite && role != LockRole::Create {
            return LockPerms { unshare: 0, ..p };
        }
        p
    }
}

/// Takes the lock bytes for `perms` on `file`, then checks that no other
/// open file description conflicts. On a conflict the bytes already taken
/// stay until the caller drops the file (it always does on error).
pub fn acquire(file: &File, path: &Path, perms: LockPerms) -> Result<(), DiskError> {
    for (i, _) in PERM_NAMES.iter().enumerate() {
        let bit = 1u8 << i;
        if perms.hold & bit != 0 {
            set_read_lock(file, path, PERM_BASE + i as i64)?;
        }
        if perms.unshare & bit != 0 {
            set_read_lock(file, path, SHARED_BASE + i as i64)?;
        }
    }
    for (i, name) in PERM_NAMES.iter().enumerate() {
        // What we use must not be refused by anyone else...
        if perms.hold & (1 << i) != 0 && is_locked_by_other(file, path, SHARED_BASE + i as i64)? {
            return Err(conflict(path, name, false));
        }
    }
    for (i, name) in PERM_NAMES.iter().enumerate() {
        // ...and nobody else may use what we refuse to share.
        if perms.unshare & (1 << i) != 0 && is_locked_by_other(file, path, PERM_BASE + i as i64)? {
            return Err(conflict(path, name, true));
        }
    }
    Ok(())
}

fn conflict(path: &Path, perm: &'static str, shared: bool) -> DiskError {
    DiskError::Locked {
        path: path.to_path_buf(),
        perm,
        shared,
    }
}

fn flock_at(kind: libc::c_int, byte: i64) -> libc::flock {
    // SAFETY: flock is plain old data; all-zero is valid (and l_pid must be 0
    // for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte;
    fl.l_len = 1;
    fl
}

fn set_read_lock(file: &File, path: &Path, byte: i64) -> Result<(), DiskError> {
    let fl = flock_at(libc::F_RDLCK, byte);
    // SAFETY: the fd is open for the call; `fl` is a valid flock that
    // outlives it and the kernel only reads it.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
        // Someone holds a write lock on a QEMU lock byte: not QEMU's scheme,
        // but still another user of the image.
        let i = (byte % 100) as usize;
        return Err(conflict(path, PERM_NAMES[i.min(3)], byte >= SHARED_BASE));
    }
    Err(IoError::new("lock", path, e).into())
}

/// True when another open file description holds a lock on `byte`.
fn is_locked_by_other(file: &File, path: &Path, byte: i64) -> Result<bool, DiskError> {
    let mut fl = flock_at(libc::F_WRLCK, byte);
    // SAFETY: the fd is open for the call; `fl` is a valid, writable flock
    // that outlives it.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(IoError::new("test the lock of", path, e).into());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

#[cfg(test)]
mod tests;
