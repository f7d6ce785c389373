//! An ATA READ or WRITE moved straight between a raw image's file and
//! guest RAM: `preadv`/`pwritev` on the image's fd with iovecs that point
//! into guest memory, as virtio-blk's io_uring engine does. Without it
//! every command went disk → aligned bounce → heap buffer → guest RAM, two
//! allocations and two copies per command (a fresh 64 KiB buffer faults
//! its pages in again after glibc trims it).
//!
//! Owns only these syscalls. The caller has checked the command (LBA
//! within the disk, a writable unit for a write, regions inside RAM);
//! `transfer` answers `None` wherever it cannot go direct (not a raw image,
//! regions off the file's O_DIRECT alignment, more pieces than IOV_MAX)
//! and the caller copies through a buffer as before.

use std::io;

use casemate_disk::DiskImage;
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::virtio::blk::engine::iov::{advance, build_iov, zero_fill};
use crate::virtio::blk::request::Buf;

/// Move the bytes at `off` on `disk` to (or, for `write`, from) the guest
/// `regions` (address, length), in order. `None`: not done, use a buffer.
pub fn transfer(
    disk: &dyn DiskImage,
    mem: &GuestMemoryMmap,
    regions: &[(u64, u64)],
    off: u64,
    write: bool,
) -> Option<io::Result<()>> {
    let raw = disk.raw_file()?;
    if write && disk.is_read_only() {
        return None;
    }
    let bufs = regions
        .iter()
        .map(|&(a, l)| {
            u32::try_from(l).ok().map(|len| Buf {
                addr: GuestAddress(a),
                len,
            })
        })
        .collect::<Option<Vec<Buf>>>()?;
    let mut iov = Vec::with_capacity(bufs.len());
    if !build_iov(mem, &bufs, raw.direct, off, &mut iov) {
        return None;
    }
    let total: u64 = regions.iter().map(|r| r.1).sum();
    let (mut first, mut done) = (0usize, 0u64);
    while done < total {
        let v = &iov[first..];
        let at = (off + done) as libc::off_t;
        // SAFETY: `v` is a live slice of at most IOV_MAX `HostIov`s, laid
        // out as `iovec`, each inside guest memory that `mem` keeps mapped
        // for this call; the kernel reads (pwritev) or fills (preadv) only
        // those bytes. The fd belongs to `disk`, open while it lives.
        let n = unsafe {
            if write {
                libc::pwritev(raw.fd, v.as_ptr().cast(), v.len() as i32, at)
            } else {
                libc::preadv(raw.fd, v.as_ptr().cast(), v.len() as i32, at)
            }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Some(Err(e));
        }
        if n == 0 {
            if write {
                return Some(Err(io::ErrorKind::WriteZero.into()));
            }
            // Past the file's end: a sparse tail reads as zeros.
            if !zero_fill(mem, bufs.iter(), done) {
                return Some(Err(io::ErrorKind::InvalidInput.into()));
            }
            return Some(Ok(()));
        }
        done += n as u64;
        if done < total {
            advance(&mut iov, &mut first, n as u64);
        }
    }
    Some(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use casemate_disk::{open_image, OpenOptions};
    use vm_memory::Bytes;

    struct Tmp(std::path::PathBuf);

    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn image(tag: &str, bytes: &[u8]) -> Tmp {
        let p =
            std::env::temp_dir().join(format!("casemate-ata-direct-{tag}-{}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        Tmp(p)
    }

    fn open(t: &Tmp, read_only: bool, direct: bool) -> Box<dyn DiskImage> {
        let o = OpenOptions {
            read_only,
            direct,
            ..OpenOptions::default()
        };
        open_image(&t.0, &o).unwrap()
    }

    /// Two RAM regions, so that a list can cross from one to the other.
    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 1 << 20),
            (GuestAddress(1 << 20), 1 << 20),
        ])
        .unwrap()
    }

    #[test]
    fn reads_and_writes_land_in_the_listed_regions_in_order() {
        let data: Vec<u8> = (0..64 * 1024u32)
            .map(|i| (i * 7 + i / 4096) as u8)
            .collect();
        let t = image("rw", &data);
        let m = mem();
        for direct in [false, true] {
            let disk = open(&t, false, direct);
            // 8 KiB from byte 16 KiB: 4 KiB at the end of region 0, 4 KiB at
            // the start of region 1, as a two-entry PRDT places them.
            let regions = [((1 << 20) - 4096, 4096), (1 << 20, 4096)];
            transfer(&*disk, &m, &regions, 16384, false)
                .expect("a raw image goes direct")
                .unwrap();
            let mut got = vec![0u8; 8192];
            m.read_slice(&mut got, GuestAddress((1 << 20) - 4096))
                .unwrap();
            assert_eq!(got, data[16384..16384 + 8192], "direct={direct}");

            m.write_slice(&[0xa5; 4096], GuestAddress(0x3000)).unwrap();
            transfer(&*disk, &m, &[(0x3000, 4096)], 4096, true)
                .unwrap()
                .unwrap();
            disk.flush().unwrap();
            let file = std::fs::read(&t.0).unwrap();
            assert_eq!(&file[4096..8192], &[0xa5; 4096][..]);
            assert_eq!(&file[..4096], &data[..4096], "nothing outside the request");
            assert_eq!(&file[8192..], &data[8192..]);
            std::fs::write(&t.0, &data).unwrap();
        }
    }

    #[test]
    fn what_cannot_go_direct_is_left_to_the_caller() {
        let t = image("none", &[0u8; 16384]);
        let m = mem();
        // O_DIRECT needs aligned memory, offsets and lengths.
        let disk = open(&t, false, true);
        if let Some(a) = disk.raw_file().and_then(|r| r.direct) {
            if a.mem > 1 {
                assert!(transfer(&*disk, &m, &[(0x1001, 4096)], 0, false).is_none());
            }
            if a.offset > 1 {
                assert!(transfer(&*disk, &m, &[(0x1000, 4096)], 1, false).is_none());
            }
        }
        drop(disk);
        // A read-only image is never written here (the caller refuses it).
        let ro = open(&t, true, false);
        assert!(transfer(&*ro, &m, &[(0x1000, 4096)], 0, true).is_none());
        drop(ro);
        // A region longer than u32 cannot be one iovec length of a Buf.
        let rw = open(&t, false, false);
        assert!(transfer(&*rw, &m, &[(0, 1 << 32)], 0, false).is_none());
    }
}
