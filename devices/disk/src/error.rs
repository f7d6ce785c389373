//! The crate's error types at its public boundary: `DiskError` for every
//! `DiskImage` operation and `IoError`, the one wrapper that ties an OS error to
//! the file and the action that failed. qcow2 structure errors live in
//! `qcow2::QcowError` and are wrapped here.

use std::path::PathBuf;

use crate::qcow2::QcowError;

/// An OS-level I/O failure with the file and the action it interrupted.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}", path.display())]
pub struct IoError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    pub fn new(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        IoError {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Errors returned by `open_image`, `create_overlay` and `DiskImage` methods.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("request at offset {offset} length {len} is past the end of the {size}-byte image")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("image {} is read-only", path.display())]
    ReadOnly { path: PathBuf },
    #[error("{}: invalid qcow2 image", path.display())]
    Qcow {
        path: PathBuf,
        #[source]
        source: QcowError,
    },
    #[error("backing chain of {} is longer than {max} images (loop?)", path.display())]
    BackingTooDeep { path: PathBuf, max: usize },
    #[error("backing chain loops back to {}", path.display())]
    BackingLoop { path: PathBuf },
    #[error("cannot open backing file {backing} of {}", path.display())]
    Backing {
        path: PathBuf,
        backing: String,
        #[source]
        source: Box<DiskError>,
    },
    /// A qcow2 image handed over as an fd (`/dev/fdset/N`) whose backing
    /// file cannot be opened by path (relative to the fdset name, or not
    /// visible in a jail).
    #[error(
        "cannot open backing file {backing}{} of {}, an image handed over as an fd: \
         hand the backing file over too (-drive ...,backing.file.filename=/dev/fdset/M, \
         as casemate-jailer does for a format=qcow2 drive), or flatten the image \
         (qemu-img convert -O qcow2 IMAGE FLAT.qcow2)",
        at_path(path, backing),
        path.display()
    )]
    BackingOutOfReach {
        path: PathBuf,
        backing: String,
        #[source]
        source: Box<DiskError>,
    },
    #[error("{what} is not supported for {format} images")]
    Unsupported {
        what: &'static str,
        format: &'static str,
    },
    #[error("invalid size {size}: {reason}")]
    InvalidSize { size: u64, reason: &'static str },
    /// Another open of the file (this process or another, e.g. QEMU) holds
    /// a conflicting lock; the wording is QEMU's, so users recognise it.
    #[error(
        "Failed to get {}\"{perm}\" lock\nIs another process using the image [{}]?",
        if *shared { "shared " } else { "" },
        path.display()
    )]
    Locked {
        path: PathBuf,
        perm: &'static str,
        shared: bool,
    },
}

impl DiskError {
    pub(crate) fn qcow(path: impl Into<PathBuf>, source: QcowError) -> Self {
        DiskError::Qcow {
            path: path.into(),
            source,
        }
    }
}

/// " (at PATH)": where a relative backing name of `image` resolved to.
fn at_path(image: &std::path::Path, backing: &str) -> String {
    let resolved = crate::qcow2::resolve_backing(image, backing);
    if resolved.as_os_str() == backing {
        String::new()
    } else {
        format!(" (at {})", resolved.display())
    }
}

/// Checks that `[offset, offset+len)` lies inside an image of `size` bytes.
pub(crate) fn check_range(offset: u64, len: usize, size: u64) -> Result<(), DiskError> {
    let len64 = len as u64;
    match offset.checked_add(len64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DiskError::OutOfRange {
            offset,
            len: len64,
            size,
        }),
    }
}
