//! `casemate.mode=blk`: the virtio disk /dev/vda through the real Linux
//! driver. Reads a region the host may have filled (LBA 4096, 8 sectors,
//! pass 100) with O_DIRECT and reports whether it matches, writes pattern regions through the page cache,
//! fsyncs, and reads them back with O_DIRECT. Byte i of LBA L in pass P is
//! `(L*7 + P + i) & 0xff` (tools/probe/CONTRACT.md); each write is reported
//! as `init: blk wrote lba=L sectors=N pass=P` so the host can check the
//! image file afterwards.

use crate::line::Line;
use crate::{failed, sys, Outcome};

const SECTOR: usize = 512;
/// The region the host test fills before boot, and its pass number.
const HOST_LBA: u64 = 4096;
const HOST_SECTORS: u64 = 8;
const HOST_PASS: u64 = 100;
/// The disk must hold every region below, the last one at its end.
const MIN_BYTES: u64 = 4 << 20;
const MAX_SECTORS: usize = 16;

/// One write: `sectors` sectors from `lba` with pattern pass `pass`.
#[derive(Clone, Copy)]
struct Region {
    lba: u64,
    sectors: u64,
    pass: u64,
}

const fn r(lba: u64, sectors: u64, pass: u64) -> Region {
    Region { lba, sectors, pass }
}

/// O_DIRECT needs buffers aligned to the logical block size.
#[repr(C, align(4096))]
struct Buf([u8; MAX_SECTORS * SECTOR]);

fn fill(buf: &mut [u8], lba: u64, pass: u64) {
    for (s, sector) in buf.chunks_mut(SECTOR).enumerate() {
        let l = lba + s as u64;
        for (i, b) in sector.iter_mut().enumerate() {
            *b = (l.wrapping_mul(7) + pass + i as u64) as u8;
        }
    }
}

/// Sectors of `buf` (read from `lba`) that do not hold what `want` says.
fn mismatches(buf: &[u8], lba: u64, want: impl Fn(u64) -> u64) -> u64 {
    let mut expect = [0u8; SECTOR];
    let mut bad = 0;
    for (s, sector) in buf.chunks(SECTOR).enumerate() {
        let l = lba + s as u64;
        fill(&mut expect, l, want(l));
        bad += u64::from(sector != expect);
    }
    bad
}

pub fn run() -> Outcome {
    run_on(c"/dev/vda")
}

/// The same on another disk (`ata` mode: /dev/sda).
pub fn run_on(dev: sys::Path) -> Outcome {
    let fd = sys::open(dev, sys::O_RDWR).map_err(|e| failed("open-disk", e, "no-disk"))?;
    let size = sys::size_by_seek(fd).map_err(|e| failed("lseek", e, "blk-io"))?;
    Line::topic("blk")
        .word("disk", dev.to_str().unwrap_or("?"))
        .u("size_bytes", size)
        .emit();
    if size < MIN_BYTES {
        return Err("disk-too-small");
    }
    let direct = sys::open(dev, sys::O_RDONLY | sys::O_DIRECT)
        .map_err(|e| failed("open-disk-direct", e, "blk-io"))?;
    let mut buf = Buf([0; MAX_SECTORS * SECTOR]);

    // What the host wrote before boot, read past the page cache.
    let host = &mut buf.0[..HOST_SECTORS as usize * SECTOR];
    sys::pread(direct, host, HOST_LBA * SECTOR as u64)
        .map_err(|e| failed("pread-host", e, "blk-io"))?;
    let host_ok = mismatches(host, HOST_LBA, |_| HOST_PASS) == 0;
    Line::topic("blk host")
        .u("lba", HOST_LBA)
        .u("sectors", HOST_SECTORS)
        .u("pass", HOST_PASS)
        .u("match", u64::from(host_ok))
        .emit();

    // Aligned and unaligned regions, one overwritten by a later pass, and
    // the disk's last 8 sectors. Writes go through the page cache.
    let last = size / SECTOR as u64 - 8;
    let regions = [r(0, 8, 1), r(11, 3, 1), r(2048, 16, 1), r(2052, 4, 2), r(last, 8, 1)];
    for g in regions {
        let b = &mut buf.0[..g.sectors as usize * SECTOR];
        fill(b, g.lba, g.pass);
        let n = sys::pwrite(fd, b, g.lba * SECTOR as u64).map_err(|e| failed("pwrite", e, "blk-io"))?;
        if n != b.len() {
            return Err("short-write");
        }
        Line::topic("blk wrote")
            .u("lba", g.lba)
            .u("sectors", g.sectors)
            .u("pass", g.pass)
            .emit();
    }
    sys::fsync(fd).map_err(|e| failed("fsync", e, "blk-io"))?;

    // Read every region back from the device; a later region wins.
    let want = |l: u64| {
        regions
            .iter()
            .rev()
            .find(|g| (g.lba..g.lba + g.sectors).contains(&l))
            .map_or(0, |g| g.pass)
    };
    let (mut sectors, mut bad) = (0, 0);
    for g in regions {
        let b = &mut buf.0[..g.sectors as usize * SECTOR];
        let n = sys::pread(direct, b, g.lba * SECTOR as u64)
            .map_err(|e| failed("pread", e, "blk-io"))?;
        if n != b.len() {
            return Err("short-read");
        }
        sectors += g.sectors;
        bad += mismatches(b, g.lba, want);
    }
    Line::topic("blk verify")
        .word("fsync", "ok")
        .u("regions", regions.len() as u64)
        .u("sectors", sectors)
        .u("mismatches", bad)
        .emit();
    let _ = sys::close(direct);
    let _ = sys::close(fd);
    // The host region is reported, not judged: a disk made by hand may
    // not carry it.
    if bad == 0 {
        Ok(())
    } else {
        Err("blk-mismatch")
    }
}
