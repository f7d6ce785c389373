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

    /// Creates (or truncates) a sparse raw file of `size` bytes; an
    /// existing file that someone holds open (locked) is left alone.
    pub fn create(path: &Path, size: u64) -> Result<(), DiskError> {
        let f = crate::create_file(path)?;
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

    fn raw_file(&self) -> Option<crate::RawFile> {
        Some(crate::RawFile {
            fd: self.file.raw_fd(),
            direct: self.file.direct_align(),
        })
    }

    fn format(&self) -> crate::Format {
        crate::Format::Raw
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<(crate::BlockStatus, u64), DiskError> {
        use crate::BlockStatus::{Data, Zero};
        let end = offset.saturating_add(len).min(self.size());
        if offset >= end {
            return Ok((Zero, len));
        }
        // SEEK_DATA/SEEK_HOLE: a file system without them reports all data.
        let Some(data) = self.file.seek(libc::SEEK_DATA, offset)? else {
            return Ok((Zero, end - offset));
        };
        if data > offset {
            return Ok((Zero, data.min(end) - offset));
        }
        let hole = self.file.seek(libc::SEEK_HOLE, offset)?.unwrap_or(end);
        Ok((Data, hole.clamp(offset + 1, end) - offset))
    }

    fn file_ids(&self) -> Vec<crate::FileId> {
        self.file.id().into_iter().collect()
    }

    fn resize(&self, new_size: u64) -> Result<(), DiskError> {
        self.writable()?;
        self.file.set_len(new_size)?;
        self.size.store(new_size, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use crate::{open_image, qcow2, OpenOptions};

    use crate::test_tmp::Tmp;

    /// The fd `raw_file` hands out addresses the same bytes as `read_at`.
    #[test]
    fn raw_file_is_the_image_at_identical_offsets() {
        let t = Tmp::new("fd");
        std::fs::write(
            &t.0,
            (0..8192u32).map(|i| (i / 7) as u8).collect::<Vec<_>>(),
        )
        .unwrap();
        let img = open_image(&t.0, &OpenOptions::default()).unwrap();
        let raw = img.raw_file().expect("a raw image exposes its file");
        assert_eq!(raw.direct, None);
        // Read and write through a dup of the fd, so that dropping the
        // File leaves the image's own fd open.
        // SAFETY: the fd is open for as long as `img` lives, which is
        // longer than this borrow.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw.fd) };
        let f = std::fs::File::from(borrowed.try_clone_to_owned().unwrap());
        let (mut a, mut b) = ([0u8; 300], [0u8; 300]);
        f.read_at(&mut a, 5000).unwrap();
        img.read_at(&mut b, 5000).unwrap();
        assert_eq!(a, b);
        f.write_at(&[0xee; 16], 100).unwrap();
        let mut c = [0u8; 16];
        img.read_at(&mut c, 100).unwrap();
        assert_eq!(c, [0xee; 16]);
    }

    #[test]
    fn direct_raw_reports_alignment_and_qcow2_has_no_raw_file() {
        let t = Tmp::new("direct");
        std::fs::write(&t.0, vec![0u8; 1 << 16]).unwrap();
        let opts = OpenOptions {
            direct: true,
            ..OpenOptions::default()
        };
        // Some file systems (tmpfs before 6.6) refuse O_DIRECT: nothing to check there.
        if let Ok(img) = open_image(&t.0, &opts) {
            let d = img
                .raw_file()
                .and_then(|r| r.direct)
                .expect("O_DIRECT reported");
            assert!(d.mem.is_power_of_two() && d.offset.is_power_of_two());
            assert!(d.mem <= 4096 && d.offset <= 4096);
        }
        let q = Tmp::new("q");
        qcow2::create(
            &q.0,
            &qcow2::CreateOptions {
                size: 1 << 20,
                ..qcow2::CreateOptions::default()
            },
        )
        .unwrap();
        let img = open_image(&q.0, &OpenOptions::default()).unwrap();
        assert_eq!(img.raw_file(), None);
    }
}
