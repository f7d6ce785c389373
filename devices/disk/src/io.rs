//! `ImageFile`: positioned reads and writes on an image file that any thread
//! may issue at once (pread/pwrite through `FileExt`), with the path attached to
//! every error, and bounce buffers when the file is open with O_DIRECT and the
//! caller's buffer, offset or length is not block aligned.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::IoError;

/// O_DIRECT alignment we honour: 4 KiB covers every common logical block size.
const DIRECT_ALIGN: usize = 4096;

#[derive(Debug)]
pub struct ImageFile {
    file: File,
    path: PathBuf,
    direct: bool,
    /// Asked once at open: device threads call `direct_align` per request
    /// and may not make the syscall (their seccomp filters lack statx).
    align: Option<crate::DirectAlign>,
}

impl ImageFile {
    pub fn new(file: File, path: &Path, direct: bool) -> Self {
        let align = direct.then(|| dio_align(&file));
        ImageFile {
            file,
            path: path.to_path_buf(),
            direct,
            align,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.file.as_raw_fd()
    }

    /// For an O_DIRECT file, the alignment the kernel reports through
    /// statx(STATX_DIOALIGN), or `DIRECT_ALIGN` for both where it reports
    /// none (older kernels, some file systems); `None` for a buffered file.
    pub fn direct_align(&self) -> Option<crate::DirectAlign> {
        self.align
    }

    /// Takes the QEMU-compatible lock bytes on this file (see `lock.rs`).
    pub fn lock(&self, perms: crate::LockPerms) -> Result<(), crate::DiskError> {
        crate::lock::acquire(&self.file, &self.path, perms)
    }

    /// Device and inode of the open file.
    pub fn id(&self) -> Option<crate::FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = self.file.metadata().ok()?;
        Some(crate::FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    pub fn err(&self, action: &'static str, e: std::io::Error) -> IoError {
        IoError::new(action, &self.path, e)
    }

    pub fn len(&self) -> Result<u64, IoError> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| self.err("stat", e))
    }

    /// Bytes the file occupies on disk (st_blocks * 512).
    pub fn allocated_bytes(&self) -> Result<u64, IoError> {
        use std::os::unix::fs::MetadataExt;
        self.file
            .metadata()
            .map(|m| m.blocks() * 512)
            .map_err(|e| self.err("stat", e))
    }

    fn aligned(&self, ptr: *const u8, len: usize, offset: u64) -> bool {
        !self.direct || ((ptr as usize | len | offset as usize) & (DIRECT_ALIGN - 1)) == 0
    }

    /// Reads exactly `buf.len()` bytes; bytes past the end of the file read as
    /// zeros (a sparse tail that was never written).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), IoError> {
        if self.aligned(buf.as_ptr(), buf.len(), offset) {
            return read_full(&self.file, buf, offset).map_err(|e| self.err("read", e));
        }
        let start = offset - offset % DIRECT_ALIGN as u64;
        let head = (offset - start) as usize;
        let mut bounce = AlignedBuf::new(round_up(head + buf.len(), DIRECT_ALIGN));
        read_full(&self.file, bounce.as_mut_slice(), start).map_err(|e| self.err("read", e))?;
        buf.copy_from_slice(&bounce.as_slice()[head..head + buf.len()]);
        Ok(())
    }

    pub fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), IoError> {
        if self.aligned(buf.as_ptr(), buf.len(), offset) {
            return self
                .file
                .write_all_at(buf, offset)
                .map_err(|e| self.err("write", e));
        }
        // Read-modify-write of the covering aligned blocks.
        let start = offset - offset % DIRECT_ALIGN as u64;
        let head = (offset - start) as usize;
        let mut bounce = AlignedBuf::new(round_up(head + buf.len(), DIRECT_ALIGN));
        read_full(&self.file, bounce.as_mut_slice(), start).map_err(|e| self.err("read", e))?;
        bounce.as_mut_slice()[head..head + buf.len()].copy_from_slice(buf);
        self.file
            .write_all_at(bounce.as_slice(), start)
            .map_err(|e| self.err("write", e))
    }

    pub fn sync_data(&self) -> Result<(), IoError> {
        self.file.sync_data().map_err(|e| self.err("sync", e))
    }

    pub fn set_len(&self, len: u64) -> Result<(), IoError> {
        self.file.set_len(len).map_err(|e| self.err("truncate", e))
    }

    /// lseek(2) with `SEEK_DATA` or `SEEK_HOLE` from `offset`: `Ok(None)`
    /// when there is no data at or after `offset` (ENXIO). A file system
    /// without these whence values treats the whole file as data, which
    /// this returns as is (`SEEK_DATA` gives `offset`, `SEEK_HOLE` the end).
    pub fn seek(&self, whence: libc::c_int, offset: u64) -> Result<Option<u64>, IoError> {
        use std::os::fd::AsRawFd;
        let Ok(off) = libc::off_t::try_from(offset) else {
            return Ok(None);
        };
        // SAFETY: lseek only reads its integer arguments; the fd is owned by
        // `self.file`. The file position it moves is unused (I/O is pread/pwrite).
        let rc = unsafe { libc::lseek(self.file.as_raw_fd(), off, whence) };
        if rc >= 0 {
            return Ok(Some(rc as u64));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None),
            Some(libc::EINVAL) if whence == libc::SEEK_DATA => Ok(Some(offset)),
            Some(libc::EINVAL) => Ok(None),
            _ => Err(self.err("seek in", e)),
        }
    }

    /// fallocate(2) with `mode`; `Ok(false)` when the file system lacks it.
    pub fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> Result<bool, IoError> {
        use std::os::fd::AsRawFd;
        let (Ok(off), Ok(l)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Ok(false);
        };
        // SAFETY: fallocate only reads its integer arguments; the fd is owned
        // by `self.file` and stays open for the duration of the call.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, l) };
        if rc == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => Ok(false),
            _ => Err(self.err("fallocate", e)),
        }
    }
}

/// The O_DIRECT alignment of `file` as statx(STATX_DIOALIGN) reports it,
/// or `DIRECT_ALIGN` for both where it reports none (older kernels, some
/// file systems).
fn dio_align(file: &File) -> crate::DirectAlign {
    use std::os::fd::AsRawFd;
    let fallback = crate::DirectAlign {
        mem: DIRECT_ALIGN as u32,
        offset: DIRECT_ALIGN as u32,
    };
    // SAFETY: statx is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is owned by `file` and open; the empty path is a
    // valid C string with AT_EMPTY_PATH; `stx` is a writable statx that
    // lives across the call.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    let (mem, offset) = (stx.stx_dio_mem_align, stx.stx_dio_offset_align);
    let usable = |a: u32| a.is_power_of_two() && a as usize <= DIRECT_ALIGN;
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 || !usable(mem) || !usable(offset) {
        return fallback;
    }
    crate::DirectAlign { mem, offset }
}

fn round_up(v: usize, a: usize) -> usize {
    v.div_ceil(a) * a
}

/// pread until the buffer is full; EOF fills the rest with zeros.
fn read_full(file: &File, mut buf: &mut [u8], mut offset: u64) -> std::io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, offset) {
            Ok(0) => {
                buf.fill(0);
                return Ok(());
            }
            Ok(n) => {
                buf = &mut buf[n..];
                offset += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A zeroed heap buffer aligned for O_DIRECT.
struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let layout = match Layout::from_size_align(len.max(DIRECT_ALIGN), DIRECT_ALIGN) {
            Ok(l) => l,
            Err(_) => std::process::abort(),
        };
        // SAFETY: layout has non-zero size; a null return is handled below.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, layout }
    }
    fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr points to layout.size() initialised (zeroed) bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was allocated with exactly this layout in `new`.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}
