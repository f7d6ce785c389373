//! `Qcow2Image`: a qcow2 file as a `DiskImage`. Metadata sits behind one mutex
//! (`Meta`); reads and rewrites of allocated clusters do their data I/O outside
//! it. Allocating writes copy-on-write from the backing chain while holding it.
//! An RwLock gate lets `flush` wait out in-flight data I/O before freeing.

mod compress;
mod create;
pub mod header;
mod l2cache;
mod meta;
pub mod refcount;
mod resize;
pub mod table;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, RwLock};

pub(crate) use create::write_empty;
pub use create::{create, CreateOptions};
pub use header::Header;
pub use table::Mapping;

use crate::error::{check_range, DiskError};
use crate::io::ImageFile;
use crate::{BlockStatus, DiskImage, Format, ImageInfo, OpenOptions};

mod error;
pub use error::QcowError;

use header::{COMPAT_LAZY_REFCOUNTS, INCOMPAT_CORRUPT, INCOMPAT_DIRTY};
use meta::Meta;

/// qcow2-specific facts for `info`.
#[derive(Debug, Clone)]
pub struct Qcow2Info {
    pub compat: &'static str,
    pub lazy_refcounts: bool,
    pub refcount_bits: u32,
    pub corrupt: bool,
    pub dirty: bool,
}

#[derive(Debug)]
struct Backing {
    name: String,
    path: PathBuf,
    format: Format,
    image: Box<dyn DiskImage>,
}

pub struct Qcow2Image {
    file: ImageFile,
    read_only: bool,
    cluster_bits: u32,
    size: AtomicU64,
    info: Qcow2Info,
    backing: Option<Backing>,
    meta: Mutex<Meta>,
    gate: RwLock<()>,
}

impl std::fmt::Debug for Qcow2Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qcow2Image")
            .field("path", &self.file.path())
            .field("read_only", &self.read_only)
            .finish_non_exhaustive()
    }
}

/// Reads and validates the header of an open qcow2 file.
pub(crate) fn read_header(file: &ImageFile) -> Result<(Header, u64), DiskError> {
    let file_len = file.len()?;
    let n = file_len.min(1 << header::MAX_CLUSTER_BITS) as usize;
    let mut buf = vec![0u8; n];
    file.read_at(&mut buf, 0)?;
    let h = Header::parse(&buf, file_len).map_err(|e| DiskError::qcow(file.path(), e))?;
    Ok((h, file_len))
}

fn read_u64_table(file: &ImageFile, offset: u64, entries: u64) -> Result<Vec<u64>, DiskError> {
    // Entry counts are bounded by the header checks (32 MiB / 8 MiB maxima).
    let mut raw = vec![0u8; (entries * 8) as usize];
    file.read_at(&mut raw, offset)?;
    Ok(raw
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

impl Qcow2Image {
    pub(crate) fn open(
        file: ImageFile,
        opts: &OpenOptions,
        visited: &mut Vec<PathBuf>,
    ) -> Result<Self, DiskError> {
        Self::open_with(file, opts, |file, h| {
            Self::open_backing(file, h, opts, visited)
        })
    }

    /// Opens `file` with `base`, an image the caller already opened, as
    /// its backing, whatever backing name the header stores (a
    /// `-snapshot` overlay on an inherited fd: there is no path to open).
    pub(crate) fn open_on(
        file: ImageFile,
        opts: &OpenOptions,
        base: Box<dyn DiskImage>,
        base_path: &Path,
    ) -> Result<Self, DiskError> {
        Self::open_with(file, opts, |_, h| {
            Ok(Some(Backing {
                name: h.backing_file.clone().unwrap_or_default(),
                path: base_path.to_path_buf(),
                format: base.format(),
                image: base,
            }))
        })
    }

    fn open_with(
        file: ImageFile,
        opts: &OpenOptions,
        backing: impl FnOnce(&ImageFile, &Header) -> Result<Option<Backing>, DiskError>,
    ) -> Result<Self, DiskError> {
        let (mut h, file_len) = read_header(&file)?;
        let q = |e| DiskError::qcow(file.path(), e);
        if !opts.read_only {
            if h.incompatible_features & INCOMPAT_CORRUPT != 0 {
                return Err(q(QcowError::NeedsRepair("corrupt")));
            }
            if h.incompatible_features & INCOMPAT_DIRTY != 0 {
                return Err(q(QcowError::NeedsRepair("dirty (lazy refcounts)")));
            }
            if h.nb_snapshots > 0 {
                return Err(q(QcowError::HasSnapshots));
            }
        }
        let cs = h.cluster_size();
        let l1 = read_u64_table(&file, h.l1_table_offset, u64::from(h.l1_size))?;
        let rt_entries = u64::from(h.refcount_table_clusters) * cs / 8;
        let rt = read_u64_table(&file, h.refcount_table_offset, rt_entries)?;
        let backing = backing(&file, &h)?;
        if !opts.read_only && h.autoclear_features != 0 {
            // We don't maintain bitmaps: clearing the bits tells qemu they're stale.
            h.autoclear_features = 0;
            file.write_at(&0u64.to_be_bytes(), 88)?;
            file.sync_data()?;
        }
        let info = Qcow2Info {
            compat: if h.version == 2 { "0.10" } else { "1.1" },
            lazy_refcounts: h.compatible_features & COMPAT_LAZY_REFCOUNTS != 0,
            refcount_bits: 1 << h.refcount_order,
            corrupt: h.incompatible_features & INCOMPAT_CORRUPT != 0,
            dirty: h.incompatible_features & INCOMPAT_DIRTY != 0,
        };
        let rc = refcount::Refcounts::new(
            h.refcount_order,
            h.cluster_bits,
            rt,
            h.refcount_table_offset,
            file_len,
        );
        Ok(Qcow2Image {
            read_only: opts.read_only,
            cluster_bits: h.cluster_bits,
            size: AtomicU64::new(h.size),
            info,
            backing,
            meta: Mutex::new(Meta {
                l2: l2cache::L2Cache::new(cs),
                header: h,
                l1,
                l1_dirty: None,
                rc,
                zcursor: 0,
            }),
            gate: RwLock::new(()),
            file,
        })
    }

    fn open_backing(
        file: &ImageFile,
        h: &Header,
        opts: &OpenOptions,
        visited: &mut Vec<PathBuf>,
    ) -> Result<Option<Backing>, DiskError> {
        let Some(name) = h.backing_file.clone() else {
            return Ok(None);
        };
        if opts.no_backing {
            return Ok(None);
        }
        let wrap = |source| DiskError::Backing {
            path: file.path().to_path_buf(),
            backing: name.clone(),
            source: Box::new(source),
        };
        let path = resolve_backing(file.path(), &name);
        let format = match h.backing_format.as_deref() {
            None => None,
            Some(s) => match Format::from_name(s) {
                Some(f) => Some(f),
                None => {
                    return Err(wrap(DiskError::Unsupported {
                        what: "backing file format",
                        format: "qcow2",
                    }))
                }
            },
        };
        let bopts = OpenOptions {
            format,
            read_only: true,
            no_backing: false,
            ..opts.clone()
        };
        let image = crate::open_chain(&path, &bopts, crate::LockRole::Backing, visited).map_err(
            |e| match e {
                // Keep loop and depth errors at the top so the message names them.
                e @ (DiskError::BackingLoop { .. } | DiskError::BackingTooDeep { .. }) => e,
                e => wrap(e),
            },
        )?;
        Ok(Some(Backing {
            name,
            path,
            format: image.format(),
            image,
        }))
    }

    fn cs(&self) -> u64 {
        1 << self.cluster_bits
    }

    fn lock(&self) -> MutexGuard<'_, Meta> {
        // A panic while holding the lock cannot leave Meta half-updated in a
        // way later calls rely on more than on-disk state, so keep going.
        self.meta.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn writable(&self) -> Result<(), DiskError> {
        if self.read_only {
            return Err(DiskError::ReadOnly {
                path: self.file.path().to_path_buf(),
            });
        }
        Ok(())
    }

    /// Reads guest bytes from the backing chain (zeros past its end or without one).
    fn read_backing(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        let Some(b) = &self.backing else {
            buf.fill(0);
            return Ok(());
        };
        let bsize = b.image.virtual_size();
        let avail = bsize.saturating_sub(offset).min(buf.len() as u64) as usize;
        buf[avail..].fill(0);
        if avail > 0 {
            b.image.read_at(&mut buf[..avail], offset)?;
        }
        Ok(())
    }

    fn read_compressed(&self, host: u64, len: u64) -> Result<Vec<u8>, DiskError> {
        let cs = self.cs();
        // A compressed stream never needs more than a cluster plus a sector.
        let len = len.min(cs + 512);
        let mut raw = vec![0u8; len as usize];
        self.file.read_at(&mut raw, host)?;
        compress::inflate_cluster(&raw, cs as usize, host)
            .map_err(|e| DiskError::qcow(self.file.path(), e))
    }

    /// Fills `buf` with the guest data of one cluster piece described by `m`.
    fn read_mapped(&self, m: Mapping, buf: &mut [u8], guest: u64) -> Result<(), DiskError> {
        let in_off = guest & (self.cs() - 1);
        match m {
            Mapping::Unallocated => self.read_backing(buf, guest),
            Mapping::Zero { .. } => {
                buf.fill(0);
                Ok(())
            }
            Mapping::Data { host, .. } => Ok(self.file.read_at(buf, host + in_off)?),
            Mapping::Compressed { host, len } => {
                let c = self.read_compressed(host, len)?;
                buf.copy_from_slice(&c[in_off as usize..in_off as usize + buf.len()]);
                Ok(())
            }
        }
    }

    /// Splits `[offset, offset+len)` into cluster-bounded pieces.
    fn pieces(&self, offset: u64, len: u64) -> impl Iterator<Item = (u64, usize)> {
        let cs = self.cs();
        let end = offset + len;
        let mut at = offset;
        std::iter::from_fn(move || {
            if at >= end {
                return None;
            }
            let n = (cs - (at & (cs - 1))).min(end - at);
            let p = (at, n as usize);
            at += n;
            Some(p)
        })
    }

    /// Writes one piece that needs a new cluster (or a copy of a shared or
    /// compressed one), with the metadata lock held throughout.
    fn write_allocating(
        &self,
        meta: &mut Meta,
        m: Mapping,
        data: &[u8],
        guest: u64,
    ) -> Result<(), DiskError> {
        let cs = self.cs();
        let start = guest & !(cs - 1);
        let in_off = (guest - start) as usize;
        let mut cluster = vec![0u8; cs as usize];
        if data.len() < cs as usize {
            // Copy-on-write source: the old contents of the whole cluster,
            // clipped to the virtual size.
            let valid = self.virtual_size().saturating_sub(start).min(cs) as usize;
            self.read_mapped(m, &mut cluster[..valid], start)?;
        }
        cluster[in_off..in_off + data.len()].copy_from_slice(data);
        let host = match m {
            // A preallocated zero cluster we own can be written in place.
            Mapping::Zero { host: Some(h) }
                if meta.rc.get(&self.file, h >> self.cluster_bits)? == 1 =>
            {
                h
            }
            _ => {
                meta.release(m);
                meta.rc.alloc(&self.file)?
            }
        };
        self.file.write_at(&cluster, host)?;
        meta.set_l2_entry(&self.file, start, table::encode_data(host))
    }

    /// Deallocates whole clusters in a range: `to_zero` makes them read as
    /// zeros, otherwise they fall through to the backing file. Returns the
    /// partial head and tail pieces it left alone.
    fn drop_clusters(
        &self,
        offset: u64,
        len: u64,
        to_zero: bool,
    ) -> Result<Vec<(u64, usize)>, DiskError> {
        let cs = self.cs();
        let mut partial = Vec::new();
        let mut meta = self.lock();
        let v3 = meta.header.version >= 3;
        for (guest, n) in self.pieces(offset, len) {
            if (n as u64) < cs && guest + n as u64 != self.virtual_size() {
                partial.push((guest, n));
                continue;
            }
            let new = if to_zero || self.backing.is_some() {
                if !v3 {
                    partial.push((guest, n));
                    continue;
                }
                table::ZERO
            } else {
                0
            };
            let old = meta.lookup(&self.file, guest)?;
            meta.release(old);
            meta.set_l2_entry(&self.file, guest, new)?;
        }
        Ok(partial)
    }
}

impl DiskImage for Qcow2Image {
    fn virtual_size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        check_range(offset, buf.len(), self.virtual_size())?;
        let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let mut done = 0;
        for (guest, n) in self.pieces(offset, buf.len() as u64) {
            let m = self.lock().lookup(&self.file, guest)?;
            self.read_mapped(m, &mut buf[done..done + n], guest)?;
            done += n;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        self.writable()?;
        check_range(offset, buf.len(), self.virtual_size())?;
        let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let mut done = 0;
        for (guest, n) in self.pieces(offset, buf.len() as u64) {
            let data = &buf[done..done + n];
            done += n;
            let mut meta = self.lock();
            match meta.lookup(&self.file, guest)? {
                Mapping::Data { host, copied: true } => {
                    drop(meta);
                    self.file.write_at(data, host + (guest & (self.cs() - 1)))?;
                }
                m => self.write_allocating(&mut meta, m, data, guest)?,
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), DiskError> {
        if self.read_only {
            return Ok(());
        }
        let _g = self.gate.write().unwrap_or_else(|p| p.into_inner());
        self.lock().flush(&self.file, true)
    }

    fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.writable()?;
        check_range(
            offset,
            usize::try_from(len).unwrap_or(usize::MAX),
            self.virtual_size(),
        )?;
        let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
        // Discard is advisory: partial clusters keep their data.
        self.drop_clusters(offset, len, false).map(|_| ())
    }

    fn write_zeroes(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        self.writable()?;
        check_range(
            offset,
            usize::try_from(len).unwrap_or(usize::MAX),
            self.virtual_size(),
        )?;
        let partial = {
            let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
            self.drop_clusters(offset, len, true)?
        };
        for (guest, n) in partial {
            crate::write_zeroes_by_writing(self, guest, n as u64)?;
        }
        Ok(())
    }

    fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn format(&self) -> Format {
        Format::Qcow2
    }

    fn resize(&self, new_size: u64) -> Result<(), DiskError> {
        self.writable()?;
        resize::resize(self, new_size)
    }

    fn block_status(&self, offset: u64, len: u64) -> Result<(BlockStatus, u64), DiskError> {
        let end = offset.saturating_add(len).min(self.virtual_size());
        if offset >= end {
            return Ok((BlockStatus::Zero, len));
        }
        let kind = |m: Mapping| match m {
            Mapping::Data { .. } | Mapping::Compressed { .. } => Some(BlockStatus::Data),
            Mapping::Zero { .. } => Some(BlockStatus::Zero),
            Mapping::Unallocated => None,
        };
        let cs = self.cs();
        let first = {
            let mut meta = self.lock();
            let first = kind(meta.lookup(&self.file, offset)?);
            let mut at = (offset | (cs - 1)).saturating_add(1);
            while at < end && kind(meta.lookup(&self.file, at)?) == first {
                at = at.saturating_add(cs);
            }
            (first, at.min(end) - offset)
        };
        match first {
            (Some(st), run) => Ok((st, run)),
            (None, run) => match &self.backing {
                // Unallocated here: whatever the backing chain has, zeros past its end.
                Some(b) if offset < b.image.virtual_size() => {
                    let n = run.min(b.image.virtual_size() - offset);
                    b.image.block_status(offset, n)
                }
                _ => Ok((BlockStatus::Zero, run)),
            },
        }
    }

    fn write_compressed(&self, offset: u64, data: &[u8]) -> Result<(), DiskError> {
        self.write_compressed_cluster(offset, data)
    }

    fn file_ids(&self) -> Vec<crate::FileId> {
        let mut ids: Vec<_> = self.file.id().into_iter().collect();
        if let Some(b) = &self.backing {
            ids.extend(b.image.file_ids());
        }
        ids
    }

    fn info(&self) -> ImageInfo {
        ImageInfo {
            format: Format::Qcow2,
            virtual_size: self.virtual_size(),
            cluster_size: Some(self.cs()),
            backing_file: self.backing_name(),
            full_backing_file: self.backing.as_ref().map(|b| b.path.clone()),
            backing_format: self.backing.as_ref().map(|b| b.format),
            qcow2: Some(self.info.clone()),
        }
    }
}

impl Qcow2Image {
    /// Stores one guest cluster compressed, as `qemu-img convert -c` does:
    /// `guest` is cluster aligned and `data` is the whole cluster (shorter
    /// only for the last one of an image whose size is not cluster aligned;
    /// it is padded with zeros). Data that does not compress is written
    /// uncompressed. Meant for filling new images: streams share host
    /// clusters, which a later guest write copies out of.
    pub fn write_compressed_cluster(&self, guest: u64, data: &[u8]) -> Result<(), DiskError> {
        self.writable()?;
        check_range(guest, data.len(), self.virtual_size())?;
        let cs = self.cs();
        let whole = data.len() as u64 == cs || guest + data.len() as u64 == self.virtual_size();
        if !guest.is_multiple_of(cs) || data.len() as u64 > cs || !whole {
            return Err(DiskError::Unsupported {
                what: "a compressed write of less than one whole cluster",
                format: "qcow2",
            });
        }
        let mut cluster = data.to_vec();
        cluster.resize(cs as usize, 0);
        let Some(z) = compress::deflate_cluster(&cluster) else {
            return self.write_at(data, guest);
        };
        let _g = self.gate.read().unwrap_or_else(|p| p.into_inner());
        let mut meta = self.lock();
        let old = meta.lookup(&self.file, guest)?;
        meta.release(old);
        let len = z.len() as u64;
        let host = meta.alloc_bytes(&self.file, len)?;
        self.file.write_at(&z, host)?;
        // The entry counts the 512-byte sectors the stream touches, minus one.
        let sectors = (host + len - 1) / 512 - host / 512;
        let x = 62 - (self.cluster_bits - 8);
        let entry = table::COMPRESSED | (sectors << x) | host;
        meta.set_l2_entry(&self.file, guest, entry)
    }

    fn backing_name(&self) -> Option<String> {
        match &self.backing {
            Some(b) => Some(b.name.clone()),
            None => self.lock().header.backing_file.clone(),
        }
    }

    /// The backing format recorded in the header, if any (even when the
    /// backing chain was not opened).
    pub fn header_backing_format(&self) -> Option<String> {
        self.lock().header.backing_format.clone()
    }
}

impl Drop for Qcow2Image {
    fn drop(&mut self) {
        if !self.read_only {
            if let Err(e) = self.flush() {
                log::error!(
                    "flushing {} on close failed: {e}",
                    self.file.path().display()
                );
            }
        }
    }
}

/// A backing name relative to the image's folder, as qemu resolves it.
pub fn resolve_backing(image: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    image.parent().unwrap_or(Path::new("")).join(p)
}

#[cfg(test)]
mod tests;
