//! `casemate.mode=ata`: the emulated disk and CD-ROM through Linux's own
//! drivers (ata_piix on pc; sd and sr behind libata). Runs the `blk`
//! round trip on /dev/sda, then mounts /dev/sr0 (ISO 9660, read-only) on
//! /mnt and reports the size and FNV-1a hash of `/mnt/data.bin` as
//! `init: iso bytes=N fnv=H` (decimal) for the host to compare with the
//! file it put in the image.

use crate::line::Line;
use crate::{blk, failed, sys, Outcome};

/// The most of data.bin read (the host's file is smaller).
const MAX: usize = 64 << 10;

pub fn run() -> Outcome {
    blk::run_on(c"/dev/sda")?;
    sys::mkdir(c"/mnt").map_err(|e| failed("mkdir-mnt", e, "iso"))?;
    sys::mount_ro(c"/dev/sr0", c"/mnt", c"iso9660")
        .map_err(|e| failed("mount-sr0", e, "iso-mount"))?;
    let fd = sys::open(c"/mnt/data.bin", sys::O_RDONLY)
        .map_err(|e| failed("open-data", e, "iso-open"))?;
    let mut buf = [0u8; 8192];
    let (mut total, mut hash) = (0usize, 0xcbf2_9ce4_8422_2325u64);
    loop {
        let n = sys::read(fd, &mut buf).map_err(|e| failed("read-data", e, "iso-read"))?;
        if n == 0 || total >= MAX {
            break;
        }
        for &b in &buf[..n] {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        total += n;
    }
    let _ = sys::close(fd);
    Line::topic("iso").u("bytes", total as u64).u("fnv", hash).emit();
    Ok(())
}
