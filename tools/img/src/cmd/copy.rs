//! The copy loop behind `convert`: walks the inputs (concatenated) by
//! allocation status, so holes and unallocated clusters cost one query
//! instead of a read, and writes only data: zero runs of at least `-S`
//! bytes become holes (or unallocated clusters), or compressed clusters
//! with `-c`.

use anyhow::{Context, Result};
use casemate_disk::{BlockStatus, DiskImage};

use crate::progress::Progress;

/// Read buffer size (at least the `-S` size, so a run that long fits in one).
const CHUNK: u64 = 2 << 20;
/// Zero-detection granularity: qemu-img's sector.
const SECTOR: usize = 512;
/// Longest extent asked for at once (keeps progress moving on huge holes).
const MAX_EXTENT: u64 = 1 << 30;

/// The inputs, end to end, as one disk.
pub struct Sources {
    parts: Vec<(u64, Box<dyn DiskImage>, String)>,
    total: u64,
}

impl Sources {
    pub fn new(imgs: Vec<(Box<dyn DiskImage>, String)>) -> Self {
        let mut total = 0;
        let mut parts = Vec::new();
        for (img, name) in imgs {
            let size = img.virtual_size();
            parts.push((total, img, name));
            total += size;
        }
        Sources { parts, total }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn images(&self) -> impl Iterator<Item = (&dyn DiskImage, &str)> {
        self.parts.iter().map(|(_, i, n)| (i.as_ref(), n.as_str()))
    }

    /// The part holding byte `off` (which is below `total`).
    fn part(&self, off: u64) -> &(u64, Box<dyn DiskImage>, String) {
        let i = self.parts.partition_point(|(base, _, _)| *base <= off);
        &self.parts[i.saturating_sub(1)]
    }

    /// Status of the extent at `off`, clipped to its input and to `len`.
    fn status(&self, off: u64, len: u64) -> Result<(BlockStatus, u64)> {
        let (base, img, name) = self.part(off);
        let local = off - base;
        let n = len.min(img.virtual_size() - local);
        let (st, m) = img
            .block_status(local, n)
            .with_context(|| format!("error while reading block status of '{name}'"))?;
        Ok((st, m.clamp(1, n)))
    }

    /// Reads `buf` at `off`; bytes past the last input read as zeros (the
    /// output's padding to whole sectors).
    fn read(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let avail = self.total.saturating_sub(off).min(buf.len() as u64) as usize;
        buf[avail..].fill(0);
        let mut done = 0;
        while done < avail {
            let at = off + done as u64;
            let (base, img, name) = self.part(at);
            let local = at - base;
            let n = ((img.virtual_size() - local) as usize).min(avail - done);
            img.read_at(&mut buf[done..done + n], local)
                .with_context(|| format!("error while reading '{name}'"))?;
            done += n;
        }
        Ok(())
    }
}

/// How to write the output.
pub struct CopyOptions {
    /// `-S`: zero runs at least this long are not written (0: write all).
    pub sparse: u64,
    /// `-c`: compressed clusters of this size.
    pub compress_cluster: Option<u64>,
    /// The output has a backing file: skipped zeros must be written as
    /// zeroes, or the backing file would show through.
    pub explicit_zeroes: bool,
}

pub fn copy(src: &Sources, dst: &dyn DiskImage, o: &CopyOptions, p: &mut Progress) -> Result<()> {
    if let Some(cs) = o.compress_cluster {
        return copy_compressed(src, dst, cs, o, p);
    }
    let chunk = CHUNK.max(o.sparse);
    let mut buf = vec![0u8; chunk as usize];
    let mut off = 0;
    while off < src.total() {
        let (st, n) = src.status(off, (src.total() - off).min(MAX_EXTENT))?;
        if st == BlockStatus::Zero && o.sparse > 0 {
            if o.explicit_zeroes {
                dst.write_zeroes(off, n)?;
            }
        } else {
            // Data, or zeros that -S 0 wants written out.
            let mut done = 0;
            while done < n {
                let len = (n - done).min(chunk) as usize;
                let b = &mut buf[..len];
                if st == BlockStatus::Data {
                    src.read(b, off + done)?;
                } else {
                    b.fill(0);
                }
                write_nonzero(dst, b, off + done, o)?;
                done += len as u64;
                p.update(off + done);
            }
        }
        off += n;
        p.update(off);
    }
    Ok(())
}

/// `-c`: every cluster with data goes through `write_compressed`.
fn copy_compressed(
    src: &Sources,
    dst: &dyn DiskImage,
    cs: u64,
    o: &CopyOptions,
    p: &mut Progress,
) -> Result<()> {
    let mut buf = vec![0u8; cs as usize];
    let mut off = 0;
    while off < src.total() {
        // Whole clusters, but the last one ends with the output (which may
        // be a little longer than the inputs: see `Sources::read`).
        let n = (dst.virtual_size() - off).min(cs);
        let (st, m) = src.status(off, (src.total() - off).min(MAX_EXTENT))?;
        let whole = m / cs * cs;
        if st == BlockStatus::Zero && whole > 0 {
            if o.explicit_zeroes {
                dst.write_zeroes(off, whole)?;
            }
            off += whole;
            p.update(off);
            continue;
        }
        let b = &mut buf[..n as usize];
        src.read(b, off)?;
        if is_zero(b) {
            if o.explicit_zeroes {
                dst.write_zeroes(off, n)?;
            }
        } else {
            dst.write_compressed(off, b)?;
        }
        off += n;
        p.update(off);
    }
    Ok(())
}

fn is_zero(b: &[u8]) -> bool {
    b.iter().all(|&x| x == 0)
}

/// Writes `data` at `at` except for its sector-aligned zero runs of at
/// least `o.sparse` bytes.
fn write_nonzero(dst: &dyn DiskImage, data: &[u8], at: u64, o: &CopyOptions) -> Result<()> {
    if o.sparse == 0 {
        dst.write_at(data, at)?;
        return Ok(());
    }
    let sector = |i: usize| &data[i..(i + SECTOR).min(data.len())];
    let (mut i, mut pending) = (0, 0);
    while i < data.len() {
        let mut j = i;
        while j < data.len() && is_zero(sector(j)) {
            j = (j + SECTOR).min(data.len());
        }
        if j == i {
            i = (i + SECTOR).min(data.len());
            continue;
        }
        if (j - i) as u64 >= o.sparse {
            if pending < i {
                dst.write_at(&data[pending..i], at + pending as u64)?;
            }
            if o.explicit_zeroes {
                dst.write_zeroes(at + i as u64, (j - i) as u64)?;
            }
            pending = j;
        }
        i = j;
    }
    if pending < data.len() {
        dst.write_at(&data[pending..], at + pending as u64)?;
    }
    Ok(())
}
