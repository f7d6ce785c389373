//! `Executor`: runs one parsed request synchronously through the
//! `DiskImage` methods, bouncing data between guest memory and a host buffer.
//! This is the thread pool's whole job and the io_uring engine's fallback for
//! what it does not submit itself (qcow2 never gets here through io_uring;
//! GET_ID, discard, write-zeroes, O_DIRECT requests with unaligned buffers).
//! It runs on the pool's threads; it never touches the queues.

use std::sync::Arc;

use casemate_disk::DiskImage;
use vm_memory::{Bytes, GuestMemoryMmap};

use super::{CacheMode, DetectZeroes, ZeroPolicy, MAX_REQUEST};
use crate::virtio::blk::request::*;

/// A bounce buffer larger than this is not kept between requests.
const KEEP_SCRATCH: usize = 4 << 20;

/// What a request needs from the device.
pub struct Executor {
    pub disk: Arc<dyn DiskImage>,
    pub mem: GuestMemoryMmap,
    pub cache: CacheMode,
    pub read_only: bool,
    pub zeroes: ZeroPolicy,
    pub id: [u8; ID_LEN],
    pub name: String,
}

impl Executor {
    /// Run `req`; returns the status code and the bytes written to the guest.
    /// `scratch` is the calling thread's bounce buffer, reused across calls.
    pub fn run(&self, req: &Request, scratch: &mut Vec<u8>) -> (u8, u32) {
        let r = self.execute(req, scratch);
        if scratch.capacity() > KEEP_SCRATCH {
            *scratch = Vec::new();
        }
        match r {
            Ok(written) => (S_OK, written),
            Err(why) => {
                log::debug!(
                    "{}: request type {} at sector {} failed: {why}",
                    self.name,
                    req.kind,
                    req.sector
                );
                (S_IOERR, 0)
            }
        }
    }

    fn execute(&self, req: &Request, scratch: &mut Vec<u8>) -> Result<u32, String> {
        let offset = req.sector.wrapping_mul(SECTOR);
        let writes_disk = matches!(req.kind, T_OUT | T_DISCARD | T_WRITE_ZEROES);
        if writes_disk && self.read_only {
            return Err("device is read-only".into());
        }
        if req.data_len > MAX_REQUEST {
            return Err(format!(
                "{} bytes exceed the {MAX_REQUEST}-byte request limit",
                req.data_len
            ));
        }
        match req.kind {
            T_IN => {
                let buf = sized(scratch, req.data_len);
                self.disk.read_at(buf, offset).map_err(|e| e.to_string())?;
                self.scatter(req, buf)?;
                Ok(req.data_len as u32)
            }
            T_OUT => {
                let buf = sized(scratch, req.data_len);
                self.gather(req, buf)?;
                self.write_data(buf, offset)?;
                if self.cache == CacheMode::Writethrough {
                    self.disk.flush().map_err(|e| e.to_string())?;
                }
                Ok(0)
            }
            T_FLUSH if self.cache == CacheMode::Unsafe => Ok(0),
            T_FLUSH => self.disk.flush().map(|_| 0).map_err(|e| e.to_string()),
            T_GET_ID => {
                let n = (req.data_len as usize).min(ID_LEN);
                self.scatter(req, &self.id[..n])?;
                Ok(n as u32)
            }
            T_DISCARD | T_WRITE_ZEROES => {
                let buf = sized(scratch, req.data_len);
                self.gather(req, buf)?;
                self.discard_or_zero(req.kind, buf)
            }
            k => Err(format!("type {k} reached the engine")),
        }
    }

    /// A guest write, turned into a zero write where `detect-zeroes` says.
    fn write_data(&self, buf: &[u8], offset: u64) -> Result<(), String> {
        let zeros = self.zeroes.detect_zeroes != DetectZeroes::Off
            && !buf.is_empty()
            && buf.iter().all(|&b| b == 0);
        let e = |e: casemate_disk::DiskError| e.to_string();
        if !zeros {
            return self.disk.write_at(buf, offset).map_err(e);
        }
        let len = buf.len() as u64;
        if self.zeroes.detect_zeroes == DetectZeroes::Unmap {
            return self.disk.write_zeroes(offset, len).map_err(e);
        }
        // `on`: skip the write where the whole range already reads as
        // zeros without being stored; never free what is stored.
        match self.disk.block_status(offset, len).map_err(e)? {
            (casemate_disk::BlockStatus::Zero, n) if n >= len => Ok(()),
            _ => self.disk.write_at(buf, offset).map_err(e),
        }
    }

    fn discard_or_zero(&self, kind: u32, segs: &[u8]) -> Result<u32, String> {
        for seg in segs.chunks_exact(SEGMENT_LEN as usize) {
            let sector = u64::from_le_bytes(seg[0..8].try_into().unwrap_or_default());
            let count = u64::from(u32::from_le_bytes(
                seg[8..12].try_into().unwrap_or_default(),
            ));
            let start = sector
                .checked_mul(SECTOR)
                .ok_or("segment sector overflows")?;
            let flags = u32::from_le_bytes(seg[12..16].try_into().unwrap_or_default());
            let len = count * SECTOR;
            let end = start.checked_add(len).ok_or("segment overflows")?;
            if end > self.disk.virtual_size() {
                return Err("segment runs past the end of the disk".into());
            }
            // As QEMU: without discard=unmap a discard is ignored and a
            // zero write keeps the range allocated; with it, only a zero
            // write carrying the UNMAP flag may deallocate.
            let r = match (kind, self.zeroes.unmap) {
                (T_DISCARD, false) => Ok(()),
                (T_DISCARD, true) => self.disk.discard(start, len),
                (_, true) if flags & WRITE_ZEROES_FLAG_UNMAP != 0 => {
                    self.disk.write_zeroes(start, len)
                }
                _ => casemate_disk::write_zeroes_by_writing(self.disk.as_ref(), start, len),
            };
            r.map_err(|e| e.to_string())?;
        }
        if self.cache == CacheMode::Writethrough {
            self.disk.flush().map_err(|e| e.to_string())?;
        }
        Ok(0)
    }

    fn gather(&self, req: &Request, buf: &mut [u8]) -> Result<(), String> {
        let mut at = 0usize;
        for b in &req.data {
            let end = at + b.len as usize;
            self.mem
                .read_slice(&mut buf[at..end], b.addr)
                .map_err(|e| e.to_string())?;
            at = end;
        }
        Ok(())
    }

    fn scatter(&self, req: &Request, mut data: &[u8]) -> Result<(), String> {
        for b in &req.data {
            if data.is_empty() {
                break;
            }
            let n = data.len().min(b.len as usize);
            self.mem
                .write_slice(&data[..n], b.addr)
                .map_err(|e| e.to_string())?;
            data = &data[n..];
        }
        Ok(())
    }
}

/// `len` bytes of the bounce buffer. Callers overwrite every byte (read_at
/// fills it whole, gather copies every segment), so stale contents from an
/// earlier request never reach the guest or the disk.
fn sized(scratch: &mut Vec<u8>, len: u64) -> &mut [u8] {
    let len = len as usize;
    if scratch.len() < len {
        scratch.resize(len, 0);
    }
    &mut scratch[..len]
}
