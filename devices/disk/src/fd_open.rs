//! Images opened from a descriptor the VMM inherited (`/dev/fdset/N`, from
//! `-add-fd`: how a launcher, and `casemate-jailer` for every disk, hands a
//! drive over). Owns their locking and what happens to a qcow2 backing
//! file named in such an image's header; opening by path is `open_chain`'s.
//!
//! The lock bytes are the ones `open_chain` takes for a path, honouring
//! `locking` and `force_share` the same way, so a jailed VM's disk is as
//! safe from a QEMU or a second Casemate as one given by path. They are
//! OFD locks: they belong to the open file description, not to the fd or
//! the process, so closing the launcher's original fd or any duplicate
//! (`-add-fd` keeps its own) drops nothing; they go when the last fd on
//! the description closes, which is the image's own, held by the image
//! object for the VM's life. They are taken here, during set-up, before
//! any seccomp filter is installed.
//!
//! A qcow2 backing file is still opened by path (resolved against the
//! image's name, as QEMU does): no option hands a backing file over by fd
//! (QEMU's analogue is `-blockdev` with `backing=` a node name). Relative
//! to `/dev/fdset/N`, or inside a jail that cannot see it, that path does
//! not open: the open is refused with a message naming the image and the
//! backing path and saying what to do (flatten the image, or give the
//! backing file a path the VMM can open).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::io::ImageFile;
use crate::qcow2::Qcow2Image;
use crate::{DiskError, DiskImage, Format, IoError, LockPerms, LockRole, OpenOptions, RawImage};

/// Opens the image in `file`, locked for `role` unless `opts.locking` is
/// off; `name` names it in messages and resolves its backing file name.
pub(crate) fn open_as(
    file: File,
    name: &Path,
    opts: &OpenOptions,
    role: LockRole,
) -> Result<Box<dyn DiskImage>, DiskError> {
    if opts.direct {
        set_direct(&file, name)?;
    }
    let file = ImageFile::new(file, name, opts.direct);
    let format = match opts.format {
        Some(f) => f,
        None => crate::probe(&file)?,
    };
    if opts.locking {
        // As `open_chain`: after the probe, before qcow2's open may write
        // the header.
        file.lock(LockPerms::for_role(role, format, opts.force_share))?;
    }
    match format {
        Format::Raw => Ok(Box::new(RawImage::new(file, opts.read_only)?)),
        Format::Qcow2 => Ok(Box::new(
            Qcow2Image::open(file, opts, &mut Vec::new()).map_err(|e| out_of_reach(name, e))?,
        )),
    }
}

/// Sets O_DIRECT on the descriptor's status flags (they belong to the open
/// file description, so every duplicate of it sees the flag).
fn set_direct(file: &File, name: &Path) -> Result<(), DiskError> {
    // SAFETY: F_GETFL/F_SETFL only read and set the descriptor's status
    // flags.
    let ok = unsafe {
        let fl = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        fl >= 0 && libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl | libc::O_DIRECT) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(IoError::new("set O_DIRECT on", name, std::io::Error::last_os_error()).into())
    }
}

/// A backing file that could not be opened at all (not one that is
/// locked, corrupt or looping: those keep their own message) becomes the
/// refusal the module doc describes.
fn out_of_reach(name: &Path, e: DiskError) -> DiskError {
    match e {
        DiskError::Backing {
            path,
            backing,
            source,
        } if path == name && matches!(*source, DiskError::Io(_)) => DiskError::BackingOutOfReach {
            path,
            backing,
            source,
        },
        e => e,
    }
}

#[cfg(test)]
mod tests;
