//! Guest buffers as host iovecs for the io_uring engine: building them from
//! parsed requests (split at memory-region boundaries, checked for O_DIRECT
//! alignment), stepping past a short transfer, and zero-filling the rest of
//! a read that hit the end of the file. Plain data; no I/O.

use casemate_disk::DirectAlign;
use vm_memory::{Address, Bytes, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::virtio::blk::request::Buf;

/// The kernel's limit on iovecs per READV/WRITEV.
pub const IOV_MAX: usize = 1024;

/// One `struct iovec` as the kernel reads it. The host address is kept as
/// an integer so that the engine stays `Send`; the layout is `iovec`'s.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostIov {
    pub base: usize,
    pub len: usize,
}

const _: () = assert!(
    std::mem::size_of::<HostIov>() == std::mem::size_of::<libc::iovec>()
        && std::mem::align_of::<HostIov>() == std::mem::align_of::<libc::iovec>()
);

/// The host iovecs for `bufs` (parsed, so inside guest RAM), split where a
/// buffer crosses memory regions. False when they cannot go to the kernel
/// as they are: not mapped, too many, or not aligned as O_DIRECT needs.
pub fn build_iov(
    mem: &GuestMemoryMmap,
    bufs: &[Buf],
    direct: Option<DirectAlign>,
    offset: u64,
    out: &mut Vec<HostIov>,
) -> bool {
    if direct.is_some_and(|a| !offset.is_multiple_of(u64::from(a.offset))) {
        return false;
    }
    for b in bufs {
        let len = b.len as usize;
        let in_one_region = mem.to_region_addr(b.addr).and_then(|(r, off)| {
            let fits = off.raw_value() + u64::from(b.len) <= r.len();
            fits.then(|| r.get_host_address(off).ok()).flatten()
        });
        let pieces: &mut dyn Iterator<Item = Option<HostIov>> = match in_one_region {
            // Nearly always: the buffer lies in one region.
            Some(p) => &mut std::iter::once(Some(HostIov {
                base: p as usize,
                len,
            })),
            None => &mut GuestMemoryBackend::get_slices(mem, b.addr, len).map(|s| {
                s.ok().map(|s| HostIov {
                    base: s.ptr_guard_mut().as_ptr() as usize,
                    len: s.len(),
                })
            }),
        };
        for iov in pieces {
            let Some(iov) = iov else { return false };
            if iov.len == 0 {
                continue;
            }
            let aligned = |a: DirectAlign| {
                iov.base.is_multiple_of(a.mem as usize) && iov.len.is_multiple_of(a.offset as usize)
            };
            if direct.is_some_and(|a| !aligned(a)) || out.len() == IOV_MAX {
                return false;
            }
            out.push(iov);
        }
    }
    true
}

/// Drop the first `n` bytes (fewer than the total) from `iov[*first..]`.
pub fn advance(iov: &mut [HostIov], first: &mut usize, mut n: u64) {
    while let Some(v) = iov.get_mut(*first) {
        if n < v.len as u64 {
            v.base += n as usize;
            v.len -= n as usize;
            return;
        }
        n -= v.len as u64;
        *first += 1;
    }
}

/// Zero the guest buffers from byte `from` of `bufs` (several requests'
/// buffers, in transfer order) on.
pub fn zero_fill<'a>(
    mem: &GuestMemoryMmap,
    bufs: impl Iterator<Item = &'a Buf>,
    mut from: u64,
) -> bool {
    const ZEROS: [u8; 4096] = [0; 4096];
    for b in bufs {
        let len = u64::from(b.len);
        if from >= len {
            from -= len;
            continue;
        }
        let (mut at, end) = (b.addr.0 + from, b.addr.0 + len);
        from = 0;
        while at < end {
            let n = (end - at).min(ZEROS.len() as u64) as usize;
            if mem
                .write_slice(&ZEROS[..n], vm_memory::GuestAddress(at))
                .is_err()
            {
                return false;
            }
            at += n as u64;
        }
    }
    true
}
