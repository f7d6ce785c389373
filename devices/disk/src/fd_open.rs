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
//! A qcow2's backing chain can be handed over too (`HandedBacking`, one
//! open file per level, in place of the names the headers store: QEMU's
//! `backing.file.filename=`, which the jailer uses); each is opened
//! read-only and locked as a backing file. Below the last handed one, a
//! backing file is opened by path (resolved against the image's name, as
//! QEMU does). Relative to `/dev/fdset/N`, or inside a jail that cannot
//! see it, that path does not open: the open is refused with a message
//! naming the image and the backing path and saying what to do (hand the
//! backing file over too, or flatten the image).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::io::ImageFile;
use crate::qcow2::Qcow2Image;
use crate::{DiskError, DiskImage, Format, IoError, LockPerms, LockRole, OpenOptions, RawImage};

/// A backing file handed over as an open file, in place of the one the
/// image's header names: QEMU's `-drive ...,backing.file.filename=` (and
/// `backing.driver=`), which is how the jailer hands over a qcow2's chain.
#[derive(Debug)]
pub struct HandedBacking {
    pub file: File,
    /// What messages call it (`/dev/fdset/N`).
    pub name: std::path::PathBuf,
    /// `None` probes it.
    pub format: Option<Format>,
}

/// Opens the image in `file`, locked for `role` unless `opts.locking` is
/// off; `name` names it in messages and resolves its backing file name.
/// `chain` replaces its backing chain from the top, one handed file per
/// level; below the last one, a backing file is opened by path.
pub(crate) fn open_as(
    file: File,
    name: &Path,
    opts: &OpenOptions,
    role: LockRole,
    mut chain: Vec<HandedBacking>,
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
        Format::Raw if chain.is_empty() => Ok(Box::new(RawImage::new(file, opts.read_only)?)),
        Format::Raw => Err(DiskError::Unsupported {
            what: "a backing file",
            format: "raw",
        }),
        Format::Qcow2 if chain.is_empty() => Ok(Box::new(
            Qcow2Image::open(file, opts, &mut Vec::new()).map_err(|e| out_of_reach(name, e))?,
        )),
        Format::Qcow2 => {
            let next = chain.remove(0);
            let backing = next.name.to_string_lossy().into_owned();
            let bopts = OpenOptions {
                format: next.format,
                read_only: true,
                no_backing: false,
                ..opts.clone()
            };
            let base =
                open_as(next.file, &next.name, &bopts, LockRole::Backing, chain).map_err(|e| {
                    DiskError::Backing {
                        path: name.to_path_buf(),
                        backing,
                        source: Box::new(e),
                    }
                })?;
            Ok(Box::new(Qcow2Image::open_on(file, opts, base, &next.name)?))
        }
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
