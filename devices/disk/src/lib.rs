//! Disk images behind the `DiskImage` trait: raw files and qcow2 (v2 read, v3
//! read/write). Plain file I/O only: no threads, no KVM, no guest memory. The
//! virtio-blk workers call one `Box<dyn DiskImage>` from several threads at once.
//!
//! ```text
//!   open_image(path, OpenOptions) ──probe──lock──┬─> RawImage   (pread/pwrite, no mutex)
//!   open_image_file(fd): fd_open.rs ─probe──lock─┤
//!   create_overlay(backing path): a temp file ───┤
//!   overlay_on_file(open fd): a memfd ───────────┴─> Qcow2Image (metadata mutex, data I/O
//!                                                       outside it) ──backing──> dyn DiskImage
//! ```
//!
//! Every open takes QEMU-compatible image locks (`lock.rs`) unless
//! `OpenOptions::locking` is off.

pub mod check;
mod error;
mod fd_open;
mod io;
pub mod lock;
mod overlay;
pub mod qcow2;
mod raw;
#[cfg(test)]
mod test_tmp;

use std::path::{Path, PathBuf};

pub use error::{DiskError, IoError};
pub use fd_open::HandedBacking;
pub use lock::{LockPerms, LockRole};
pub use overlay::{overlay_on, overlay_on_file, overlay_on_file_with};
pub use qcow2::{CreateOptions as Qcow2CreateOptions, Qcow2Image, QcowError};
pub use raw::RawImage;

/// Longest backing chain we follow; deeper chains are almost surely loops.
pub const MAX_BACKING_DEPTH: usize = 64;

/// Image formats Casemate reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Raw,
    Qcow2,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }

    pub fn from_name(name: &str) -> Option<Format> {
        match name {
            "raw" => Some(Format::Raw),
            "qcow2" => Some(Format::Qcow2),
            _ => None,
        }
    }
}

/// A disk as the block device sees it. Every method takes `&self` and may be
/// called from several threads at once.
pub trait DiskImage: Send + Sync + std::fmt::Debug {
    /// Size of the disk in bytes.
    fn virtual_size(&self) -> u64;
    /// Fills `buf` from `offset`; a range past the end is an error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError>;
    /// Writes `buf` at `offset`; a range past the end or a read-only image is an error.
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError>;
    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), DiskError>;
    /// Hints that the range is unused; it may then read as zeros or old data.
    fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError>;
    /// Makes the range read as zeros, deallocating where the format allows.
    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DiskError>;
    fn is_read_only(&self) -> bool;
    fn format(&self) -> Format;
    /// Changes the virtual size. Shrinking drops the data past the new end
    /// (callers that want qemu-img's `--shrink` guard check it first).
    fn resize(&self, new_size: u64) -> Result<(), DiskError>;
    /// The file behind the image, for callers that run their own I/O on it
    /// (virtio-blk's io_uring engine). `Some` only when byte `N` of the disk
    /// is byte `N` of this file for every `N < virtual_size()`: a raw image.
    /// Formats with metadata (qcow2) return `None` and are served through
    /// `read_at`/`write_at` only.
    ///
    /// Contract: the fd stays open and keeps naming the same file for as long
    /// as this image object lives (hold the `Arc`); the caller must not close
    /// it, change its status flags, or write through it when `is_read_only()`
    /// (it was then opened `O_RDONLY`), and must bound every access by
    /// `virtual_size()` itself. I/O through the fd and through the methods
    /// above may be mixed freely: neither caches anything.
    fn raw_file(&self) -> Option<RawFile> {
        None
    }
    /// Whether `[offset, offset+len)` starts with data or with a range known
    /// to read as zeros (a hole, an unallocated or zero cluster), and how
    /// long that first extent is (at most `len`, at least 1 byte when `len`
    /// is not 0). The default knows nothing and calls it all data.
    fn block_status(&self, offset: u64, len: u64) -> Result<(BlockStatus, u64), DiskError> {
        let _ = offset;
        Ok((BlockStatus::Data, len))
    }
    /// Stores one whole guest cluster compressed (see
    /// `Qcow2Image::write_compressed`); formats without compression say so.
    fn write_compressed(&self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        let _ = (offset, data);
        Err(DiskError::Unsupported {
            what: "compression",
            format: self.format().name(),
        })
    }
    /// The files this image reads: its own first, then its backing chain.
    fn file_ids(&self) -> Vec<FileId> {
        Vec::new()
    }
    /// Facts for `info`.
    fn info(&self) -> ImageInfo {
        ImageInfo {
            format: self.format(),
            virtual_size: self.virtual_size(),
            ..ImageInfo::default()
        }
    }
}

/// See `DiskImage::block_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockStatus {
    /// Stored data (which may still happen to be zeros).
    Data,
    /// Reads as zeros without being stored.
    Zero,
}

/// A file's identity (device and inode), to tell whether two paths name
/// the same file whatever links or relative names lead there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    /// The identity of the file at `path` (following symlinks).
    pub fn of_path(path: &Path) -> std::io::Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// See `DiskImage::raw_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFile {
    pub fd: std::os::fd::RawFd,
    /// `Some` when the file was opened `O_DIRECT`: what buffers, offsets and
    /// lengths must then be aligned to.
    pub direct: Option<DirectAlign>,
}

/// O_DIRECT alignment of one file, each a power of two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectAlign {
    /// Alignment of user buffers in memory.
    pub mem: u32,
    /// Alignment of file offsets and of transfer lengths.
    pub offset: u32,
}

/// What `casemate-img info` shows about an image.
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    pub format: Format,
    pub virtual_size: u64,
    pub cluster_size: Option<u64>,
    /// The backing file name as stored in the image.
    pub backing_file: Option<String>,
    /// The backing file's path as opened (relative names resolved).
    pub full_backing_file: Option<PathBuf>,
    pub backing_format: Option<Format>,
    pub qcow2: Option<qcow2::Qcow2Info>,
}

/// How to open an image.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// `None` probes: qcow2 magic means qcow2, anything else raw.
    pub format: Option<Format>,
    pub read_only: bool,
    /// O_DIRECT on the image file (and its backing files).
    pub direct: bool,
    /// Don't open the backing chain (for metadata-only work: resize, check).
    pub no_backing: bool,
    /// Take QEMU-compatible image locks (on by default); off is QEMU's
    /// `file.locking=off`, for the whole chain.
    pub locking: bool,
    /// qemu-img's `-U`: a read-only open refuses to share nothing, so it
    /// works next to a writer (and may see inconsistent data).
    pub force_share: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            format: None,
            read_only: false,
            direct: false,
            no_backing: false,
            locking: true,
            force_share: false,
        }
    }
}

/// Opens an image and, for qcow2, its whole backing chain read-only.
pub fn open_image(path: &Path, opts: &OpenOptions) -> Result<Box<dyn DiskImage>, DiskError> {
    let role = if opts.read_only {
        LockRole::ReadOnly
    } else {
        LockRole::ReadWrite
    };
    open_chain(path, opts, role, &mut Vec::new())
}

/// Opens an image from an already-open `file` (an inherited fd, `-add-fd`);
/// `name` is what messages call it and what a qcow2 backing file name is
/// resolved against. O_DIRECT is set on the descriptor when asked. The
/// image is locked exactly as `open_image` locks a path (see `fd_open.rs`
/// for what holds the lock, and for backing files an fd cannot reach).
pub fn open_image_file(
    file: std::fs::File,
    name: &Path,
    opts: &OpenOptions,
) -> Result<Box<dyn DiskImage>, DiskError> {
    let role = if opts.read_only {
        LockRole::ReadOnly
    } else {
        LockRole::ReadWrite
    };
    fd_open::open_as(file, name, opts, role, Vec::new())
}

/// `open_image_file` with the backing chain handed over too: `chain[0]`
/// replaces the backing file the image's header names, `chain[1]` that
/// one's, and so on (QEMU's `backing.file.filename=`, nested). Each is
/// opened read-only and locked as a backing file.
pub fn open_image_file_with(
    file: std::fs::File,
    name: &Path,
    opts: &OpenOptions,
    chain: Vec<HandedBacking>,
) -> Result<Box<dyn DiskImage>, DiskError> {
    let role = if opts.read_only {
        LockRole::ReadOnly
    } else {
        LockRole::ReadWrite
    };
    fd_open::open_as(file, name, opts, role, chain)
}

pub(crate) fn open_chain(
    path: &Path,
    opts: &OpenOptions,
    role: LockRole,
    visited: &mut Vec<PathBuf>,
) -> Result<Box<dyn DiskImage>, DiskError> {
    let canon = std::fs::canonicalize(path).map_err(|e| IoError::new("open", path, e))?;
    if visited.contains(&canon) {
        return Err(DiskError::BackingLoop { path: canon });
    }
    if visited.len() >= MAX_BACKING_DEPTH {
        return Err(DiskError::BackingTooDeep {
            path: path.to_path_buf(),
            max: MAX_BACKING_DEPTH,
        });
    }
    visited.push(canon);
    let file = open_file(path, opts.read_only, opts.direct)?;
    let format = match opts.format {
        Some(f) => f,
        None => probe(&file)?,
    };
    if opts.locking {
        // After the probe (a read QEMU does too) and before anything is
        // written: qcow2's open may update the header.
        file.lock(LockPerms::for_role(role, format, opts.force_share))?;
    }
    match format {
        Format::Raw => Ok(Box::new(RawImage::new(file, opts.read_only)?)),
        Format::Qcow2 => Ok(Box::new(Qcow2Image::open(file, opts, visited)?)),
    }
}

pub(crate) fn open_file(
    path: &Path,
    read_only: bool,
    direct: bool,
) -> Result<io::ImageFile, DiskError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(!read_only);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    let f = o.open(path).map_err(|e| IoError::new("open", path, e))?;
    Ok(io::ImageFile::new(f, path, direct))
}

/// Opens `path` for a new image: created if missing, locked as qemu-img
/// create locks it, and only then truncated, so an image that another
/// process (a running VM) holds is refused instead of wiped.
pub(crate) fn create_file(path: &Path) -> Result<std::fs::File, DiskError> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| IoError::new("create", path, e))?;
    lock::acquire(
        &f,
        path,
        LockPerms::for_role(LockRole::Create, Format::Raw, false),
    )?;
    f.set_len(0)
        .map_err(|e| IoError::new("truncate", path, e))?;
    Ok(f)
}

/// Reads the image's first bytes and names its format.
fn probe(file: &io::ImageFile) -> Result<Format, DiskError> {
    let mut magic = [0u8; 4];
    file.read_at(&mut magic, 0)?;
    Ok(if u32::from_be_bytes(magic) == qcow2::header::QCOW_MAGIC {
        Format::Qcow2
    } else {
        Format::Raw
    })
}

/// Probes the format of the image at `path`.
pub fn probe_format(path: &Path) -> Result<Format, DiskError> {
    probe(&open_file(path, true, false)?)
}

/// Creates a qcow2 overlay over `backing` for `-snapshot`: writes go to a
/// temp file in `dir` (the system temp dir if `None`) that is unlinked at once,
/// so it vanishes when the VMM exits; `backing` is never written, and is
/// locked as a backing file (shared read, no writers).
pub fn create_overlay(
    backing: &Path,
    backing_format: Option<Format>,
    dir: Option<&Path>,
) -> Result<Box<dyn DiskImage>, DiskError> {
    let opts = OpenOptions {
        format: backing_format,
        ..OpenOptions::default()
    };
    create_overlay_with(backing, &opts, dir)
}

/// `create_overlay` with the backing chain opened as `backing_opts` says:
/// its `format` is the backing format (probed when `None`), `locking` and
/// `direct` apply to the whole chain; `read_only` is ignored.
pub fn create_overlay_with(
    backing: &Path,
    backing_opts: &OpenOptions,
    dir: Option<&Path>,
) -> Result<Box<dyn DiskImage>, DiskError> {
    let backing_abs =
        std::fs::canonicalize(backing).map_err(|e| IoError::new("open", backing, e))?;
    let fmt = match backing_opts.format {
        Some(f) => f,
        None => probe_format(&backing_abs)?,
    };
    let size = open_image(
        &backing_abs,
        &OpenOptions {
            format: Some(fmt),
            read_only: true,
            // Only the size is needed here, and the overlay's own open
            // below locks the backing chain.
            locking: false,
            ..backing_opts.clone()
        },
    )?
    .virtual_size();
    let dir = dir
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir);
    let name = format!(
        "casemate-overlay-{}-{}.qcow2",
        std::process::id(),
        OVERLAY_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let path = dir.join(name);
    let backing_name = backing_abs.to_string_lossy().into_owned();
    qcow2::create(
        &path,
        &qcow2::CreateOptions {
            size,
            backing_file: Some(backing_name),
            backing_format: Some(fmt),
            ..qcow2::CreateOptions::default()
        },
    )?;
    let img = open_image(
        &path,
        &OpenOptions {
            format: Some(Format::Qcow2),
            read_only: false,
            no_backing: false,
            force_share: false,
            ..backing_opts.clone()
        },
    );
    // Unlink before returning, whatever happened: the open fd keeps it alive.
    let _ = std::fs::remove_file(&path);
    img
}

static OVERLAY_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Fallback for `write_zeroes`, and zeroing that must keep the range
/// allocated: plain writes of a zero buffer in 1 MiB steps.
pub fn write_zeroes_by_writing(
    img: &dyn DiskImage,
    offset: u64,
    len: u64,
) -> Result<(), DiskError> {
    const STEP: u64 = 1 << 20;
    let zeros = vec![0u8; STEP.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = STEP.min(len - done) as usize;
        img.write_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}
