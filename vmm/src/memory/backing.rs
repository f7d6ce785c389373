//! The host object behind guest RAM: nothing (anonymous memory), a memfd, or
//! a file under `mem-path`; sized, sealed where possible, and with its page
//! size found (hugetlbfs or not). Runs once at VM build; maps nothing.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::Path;

use super::{hugetlb, MemoryError};
use crate::config::{BackendKind, MemoryBackendConfig};

/// What `mapping` maps.
#[derive(Debug)]
pub struct Backing {
    /// None for anonymous memory.
    pub file: Option<File>,
    /// Some(page size) when the memory comes from the hugetlb pool.
    pub hugepage: Option<u64>,
}

/// Open (and size) the backing for `b`, checking the hugepage pool under
/// `sysfs` first so a short pool is reported with numbers, not as ENOMEM.
pub fn open(b: &MemoryBackendConfig, sysfs: &Path) -> Result<Backing, MemoryError> {
    match b.kind {
        BackendKind::Ram => Ok(Backing {
            file: None,
            hugepage: None,
        }),
        BackendKind::Memfd => {
            let page = b
                .hugetlb
                .then(|| b.hugetlbsize.unwrap_or_else(hugetlb::default_page_size));
            if let Some(p) = page {
                hugetlb::check_pool(sysfs, p, b.size)?;
            }
            let file = memfd(&b.id, page)?;
            set_size(&file, b)?;
            seal(&file);
            Ok(Backing {
                file: Some(file),
                hugepage: page,
            })
        }
        BackendKind::File => {
            let path = b.mem_path.as_deref().ok_or_else(|| MemoryError::Open {
                path: "<no mem-path>".into(),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
            let file = open_path(path, &b.id)?;
            let hugepage = hugetlbfs_page(&file);
            if let Some(p) = hugepage {
                hugetlb::check_pool(sysfs, p, b.size)?;
            }
            set_size(&file, b)?;
            Ok(Backing {
                file: Some(file),
                hugepage,
            })
        }
    }
}

fn memfd(id: &str, hugepage: Option<u64>) -> Result<File, MemoryError> {
    let err = |source| MemoryError::Memfd {
        id: id.to_string(),
        source,
    };
    // The name shows in /proc/PID/fd as `/memfd:ID`: how other processes
    // find the backend (see README: sharing memfd guest RAM).
    let name = CString::new(id).map_err(|_| err(std::io::ErrorKind::InvalidInput.into()))?;
    let mut flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    if let Some(page) = hugepage {
        // MFD_HUGE_* encode log2(page size) in the top bits.
        flags |= libc::MFD_HUGETLB | (page.trailing_zeros() << libc::MFD_HUGE_SHIFT);
    }
    // SAFETY: `name` is a valid NUL-terminated string; memfd_create only
    // returns a new fd, which we own from here on.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// A file named by mem-path, or, for a directory, an unlinked file in it
/// (QEMU does the same): the RAM then vanishes with the process.
fn open_path(path: &Path, id: &str) -> Result<File, MemoryError> {
    let err = |p: &Path, source| MemoryError::Open {
        path: p.to_path_buf(),
        source,
    };
    if path.is_dir() {
        let tmp = path.join(format!("casemate-{id}-{}", std::process::id()));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| err(&tmp, e))?;
        std::fs::remove_file(&tmp).map_err(|e| err(&tmp, e))?;
        return Ok(f);
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| err(path, e))
}

/// The hugepage size when `file` is on hugetlbfs (statfs block size).
fn hugetlbfs_page(file: &File) -> Option<u64> {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: fstatfs writes a statfs struct into the buffer we pass and
    // reads nothing else; the fd is open for the duration.
    let rc = unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: fstatfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    (st.f_type == libc::HUGETLBFS_MAGIC).then_some(st.f_bsize as u64)
}

/// Grow the file to the backend's size; an existing larger file is left as
/// is (QEMU maps the first `size` bytes).
fn set_size(file: &File, b: &MemoryBackendConfig) -> Result<(), MemoryError> {
    let err = |source| MemoryError::Resize {
        id: b.id.clone(),
        size: b.size,
        source,
    };
    let len = file.metadata().map_err(err)?.len();
    if len < b.size {
        file.set_len(b.size).map_err(err)?;
    }
    Ok(())
}

/// Forbid shrinking or growing the memfd: another process holding the fd
/// could otherwise truncate it and make guest RAM access SIGBUS the VMM.
fn seal(file: &File) {
    // SAFETY: F_ADD_SEALS on an fd we own; it only changes the file's seals.
    let rc = unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL,
        )
    };
    if rc != 0 {
        log::warn!(
            "sealing the guest RAM memfd failed: {}",
            std::io::Error::last_os_error()
        );
    }
}
