//! `-snapshot` overlays on an image that is already open: a drive given as
//! an inherited fd (`/dev/fdset/N`, which is how the jailer hands every
//! disk over), where there is no path to name as a backing file. The
//! overlay is a qcow2 image whose backing is the open `DiskImage` itself,
//! and whose own storage is a memfd made here, during set-up: it needs no
//! file system access, so nothing has to be allowed by Landlock or put in
//! the jail, and the I/O on it afterwards is the pread/pwrite/fallocate
//! the worker and vCPU filters already allow for image files.
//!
//! The overlay's data therefore lives in the VMM's memory (the memfd's
//! shmem pages): every cluster the guest writes counts against the VMM's
//! memory and a jailed VM's memory cgroup (and, the memfd being a file,
//! RLIMIT_FSIZE bounds it as it bounds image files). A new overlay takes
//! about 192 KiB (header, refcount table and block, L1), then 64 KiB per
//! cluster written. It survives guest reboots (the image object outlives
//! them) and vanishes when the process exits. The base is never written,
//! and is locked as QEMU locks a snapshot's backing file (shared read, no
//! writers, no resize).

use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::io::ImageFile;
use crate::qcow2::{self, Qcow2Image};
use crate::{DiskError, DiskImage, Format, IoError, LockRole, OpenOptions};

/// Opens the image in `file` read-only as the base of a memfd overlay (see
/// the module doc). `name` is what messages call it (`/dev/fdset/0`);
/// `base_opts` gives the base's format (probed when `None`), O_DIRECT and
/// whether to lock it; its `read_only` is ignored.
pub fn overlay_on_file(
    file: File,
    name: &Path,
    base_opts: &OpenOptions,
) -> Result<Box<dyn DiskImage>, DiskError> {
    overlay_on_file_with(file, name, base_opts, Vec::new())
}

/// `overlay_on_file` over a base whose backing chain was handed over too
/// (see `open_image_file_with`).
pub fn overlay_on_file_with(
    file: File,
    name: &Path,
    base_opts: &OpenOptions,
    chain: Vec<crate::HandedBacking>,
) -> Result<Box<dyn DiskImage>, DiskError> {
    // Backing perms are the same for every format. The lock belongs to the
    // open file description, which the image below keeps open.
    let base = crate::fd_open::open_as(
        file,
        name,
        &OpenOptions {
            read_only: true,
            ..base_opts.clone()
        },
        LockRole::Backing,
        chain,
    )?;
    overlay_on(base, name)
}

/// A qcow2 overlay in a new memfd over `base`, an open image that is only
/// ever read; `name` is the base's name, stored as the overlay's backing
/// file name (for `info`) and used in messages.
pub fn overlay_on(base: Box<dyn DiskImage>, name: &Path) -> Result<Box<dyn DiskImage>, DiskError> {
    let label = PathBuf::from(format!("{} (snapshot overlay)", name.display()));
    let memfd = memfd(&label)?;
    qcow2::write_empty(
        &memfd,
        &label,
        &qcow2::CreateOptions {
            size: base.virtual_size(),
            backing_file: Some(name.to_string_lossy().into_owned()),
            backing_format: Some(base.format()),
            ..qcow2::CreateOptions::default()
        },
    )?;
    let opts = OpenOptions {
        format: Some(Format::Qcow2),
        read_only: false,
        // No other process can open a memfd, and it takes no O_DIRECT.
        direct: false,
        locking: false,
        no_backing: false,
        force_share: false,
    };
    let file = ImageFile::new(memfd, &label, false);
    Ok(Box::new(Qcow2Image::open_on(file, &opts, base, name)?))
}

/// An anonymous memory file, close-on-exec.
fn memfd(label: &Path) -> Result<File, DiskError> {
    // SAFETY: memfd_create reads a NUL-terminated name we own and returns
    // a new fd or -1.
    let fd = unsafe { libc::memfd_create(c"casemate-overlay".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(IoError::new(
            "create (memfd_create)",
            label,
            std::io::Error::last_os_error(),
        )
        .into());
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(test)]
mod tests;
