//! A scatter-gather list of guest-RAM regions (an AHCI PRDT), checked
//! against RAM when built, and copies between it and host buffers at a
//! byte offset. Owns only the copying; the table format is the caller's.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// A region outside RAM, named for the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outside {
    pub addr: u64,
    pub len: u64,
}

/// See the module doc.
#[derive(Debug, Default, Clone)]
pub struct Sg {
    regions: Vec<(u64, u64)>,
    total: u64,
}

impl Sg {
    /// The list of `regions`, each checked to lie in `mem`.
    pub fn new(mem: &GuestMemoryMmap, regions: Vec<(u64, u64)>) -> Result<Sg, Outside> {
        let mut total = 0u64;
        for &(addr, len) in &regions {
            let fits = usize::try_from(len)
                .is_ok_and(|l| GuestMemoryBackend::check_range(mem, GuestAddress(addr), l));
            if !fits {
                return Err(Outside { addr, len });
            }
            total += len;
        }
        Ok(Sg { regions, total })
    }

    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The pieces of `[off, off + len)` of the list, as guest addresses.
    pub fn pieces(&self, mut off: u64, mut len: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        for &(addr, rlen) in &self.regions {
            if len == 0 {
                break;
            }
            if off >= rlen {
                off -= rlen;
                continue;
            }
            let n = (rlen - off).min(len);
            out.push((addr + off, n));
            off = 0;
            len -= n;
        }
        out
    }

    /// Copy `data` into the list from byte `off`; what does not fit is
    /// dropped (the caller checked the lengths). Err only when RAM
    /// changed under it.
    pub fn write(&self, mem: &GuestMemoryMmap, off: u64, data: &[u8]) -> Result<(), Outside> {
        let mut at = 0usize;
        for (addr, n) in self.pieces(off, data.len() as u64) {
            mem.write_slice(&data[at..at + n as usize], GuestAddress(addr))
                .map_err(|_| Outside { addr, len: n })?;
            at += n as usize;
        }
        Ok(())
    }

    /// Fill `buf` from the list at byte `off`.
    pub fn read(&self, mem: &GuestMemoryMmap, off: u64, buf: &mut [u8]) -> Result<(), Outside> {
        let mut at = 0usize;
        for (addr, n) in self.pieces(off, buf.len() as u64) {
            mem.read_slice(&mut buf[at..at + n as usize], GuestAddress(addr))
                .map_err(|_| Outside { addr, len: n })?;
            at += n as usize;
        }
        Ok(())
    }
}
