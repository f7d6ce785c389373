//! `RawImage`: a plain file as a disk. Every method is a positioned syscall on
//! a shared fd, so worker threads never contend on a lock. Discard and
//! write-zeroes punch holes so raw files stay sparse.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{check_range, DiskError};
use crate::io::ImageFile;
use crate::DiskImage;

#[derive(Debug)]
pub struct RawImage {
    file: ImageFile,
    // Atomic so `resize` can take &self like every other method.
    size: AtomicU64,
    read_only: bool,
}

impl RawImage {
    pub(crate) fn new(file: ImageFile, read_only: bool) -> Result<Self, DiskError> {
        let size = file.len()?;
        Ok(RawImage {
            file,
            size: AtomicU64::new(size),
            read_only,
        })
    }

    /// Creates (or truncates) a sparse raw file of `size` bytes.
    pub fn create(path: &Path, size: u64) -> Result<(), DiskError> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| crate::IoError::new("create", path, e))?;
        f.set_len(size)
            .map_err(|e| crate::IoError::new("set the size of", path, e))
            .map_err(Into::into)
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn writable(&self) -> Result<(), DiskError> {
        if self.read_only {
            return Err(DiskError::ReadOnly {
                path: self.file.path().to_path_buf(),
            });
        }
        Ok(())
    }

    fn punch(&self, offset: u64, len: u64) -> Result<bool, DiskError> {
        let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        Ok(self.file.fallocate(mode, offset, len)?)
    }
}

impl DiskImage for RawImage {
    fn virtual_size(&self) -> u64 {
        self.size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        check_range(offset, buf.len(), self.size())?;
        Ok(self.file.read_at(buf, offset)?)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        self.writable()?;
        check_range(offset, buf.len(), self.size())?;
        Ok(self.file.write_at(buf, offset)?)
    }

    fn flush(&self) -> Result<(), DiskError> {
        if self.read_only {
            return Ok(());
        }
        Ok(self.file.sync_data()?)
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.writable()?;
        check_range(
            offset,
            usize::try_from(len).unwrap_or(usize::MAX),
            self.size(),
        )?;
        // Discard is advisory: a file system without hole punching just keeps the data.
        self.punch(offset, len).map(|_| ())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.writable()?;
        check_range(
            offset,
            usize::try_from(len).unwrap_or(usize::MAX),
            self.size(),
        )?;
        if self.punch(offset, len)? {
            return Ok(());
        }
        crate::write_zeroes_by_writing(self, offset, len)
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn format(&self) -> crate::Format {
        crate::Format::Raw
    }

    fn resize(&self, new_size: u64) -> Result<(), DiskError> {
        self.writable()?;
        self.file.set_len(new_size)?;
        self.size.store(new_size, Ordering::Release);
        Ok(())
    }
}
