//! A virtio-blk request parsed out of an untrusted descriptor chain.
//!
//! Everything the guest controls is checked here, before any I/O: chain
//! length and termination, descriptor directions, guest-memory ranges,
//! sector alignment and the disk's end. A chain that can still be answered
//! (it has a writable status byte) gets IOERR/UNSUPP; one that cannot is
//! completed with nothing written.

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, Permissions};

pub const SECTOR: u64 = 512;
pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;
/// Discard/write-zeroes segment: sector u64, num_sectors u32, flags u32.
pub const SEGMENT_LEN: u64 = 16;
/// WRITE_ZEROES segment flag: the range may be deallocated.
pub const WRITE_ZEROES_FLAG_UNMAP: u32 = 1;
pub const ID_LEN: usize = 20;

/// A guest buffer: address and length, already checked to be in RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buf {
    pub addr: GuestAddress,
    pub len: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: u32,
    pub sector: u64,
    pub data: Vec<Buf>,
    pub data_len: u64,
    pub status: GuestAddress,
}

/// Why a chain can't be served as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// Answer with this status through the status byte.
    Status {
        status: GuestAddress,
        code: u8,
        why: &'static str,
    },
    /// No usable status byte: complete with no data written.
    Silent(&'static str),
}

/// Parse `chain`; `capacity` is the disk size in bytes.
pub fn parse(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    capacity: u64,
) -> Result<Request, Reject> {
    let mut descs = Vec::new();
    let mut last_has_next = false;
    for d in chain {
        last_has_next = d.has_next();
        descs.push(d);
    }
    // The iterator stops after queue-size descriptors: a chain that still
    // points onward is a loop or longer than the ring allows.
    if last_has_next {
        return Err(Reject::Silent(
            "descriptor chain loops or exceeds the queue size",
        ));
    }
    let (Some(head), Some(tail)) = (descs.first(), descs.last()) else {
        return Err(Reject::Silent("empty chain"));
    };
    if descs.len() < 2 {
        return Err(Reject::Silent("chain has no status descriptor"));
    }
    if !tail.is_write_only()
        || tail.len() < 1
        || !mem.check_range(tail.addr(), 1, Permissions::Write)
    {
        return Err(Reject::Silent(
            "status descriptor is not a writable byte in RAM",
        ));
    }
    let status = tail.addr();
    let fail = |code, why| Reject::Status { status, code, why };
    if head.is_write_only()
        || head.len() < 16
        || !mem.check_range(head.addr(), 16, Permissions::Read)
    {
        return Err(fail(S_IOERR, "header is not 16 readable bytes in RAM"));
    }
    let kind: u32 = mem
        .read_obj(head.addr())
        .map_err(|_| fail(S_IOERR, "header unreadable"))?;
    let sector: u64 = mem
        .read_obj(head.addr().unchecked_add(8))
        .map_err(|_| fail(S_IOERR, "header unreadable"))?;
    let writes_guest = matches!(kind, T_IN | T_GET_ID);
    let mut data = Vec::new();
    let mut data_len = 0u64;
    for d in &descs[1..descs.len() - 1] {
        if d.is_write_only() != writes_guest {
            return Err(fail(S_IOERR, "data descriptor has the wrong direction"));
        }
        let perm = if writes_guest {
            Permissions::Write
        } else {
            Permissions::Read
        };
        if !mem.check_range(d.addr(), d.len() as usize, perm) {
            return Err(fail(S_IOERR, "data buffer outside guest RAM"));
        }
        data.push(Buf {
            addr: d.addr(),
            len: d.len(),
        });
        data_len += u64::from(d.len());
    }
    match kind {
        T_IN | T_OUT => {
            if !data_len.is_multiple_of(SECTOR) {
                return Err(fail(
                    S_IOERR,
                    "data length is not a whole number of sectors",
                ));
            }
            let end = sector
                .checked_mul(SECTOR)
                .and_then(|s| s.checked_add(data_len));
            if end.is_none_or(|e| e > capacity) {
                return Err(fail(S_IOERR, "request runs past the end of the disk"));
            }
        }
        T_DISCARD | T_WRITE_ZEROES if data_len == 0 || !data_len.is_multiple_of(SEGMENT_LEN) => {
            return Err(fail(
                S_IOERR,
                "discard/write-zeroes payload is not whole segments",
            ));
        }
        T_FLUSH | T_GET_ID | T_DISCARD | T_WRITE_ZEROES => {}
        _ => return Err(fail(S_UNSUPP, "unsupported request type")),
    }
    Ok(Request {
        kind,
        sector,
        data,
        data_len,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::QueueOwnedT;

    const CAP: u64 = 1 << 20;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    /// Build a chain of (addr, len, writable) descriptors and parse it.
    fn run(
        m: &GuestMemoryMmap,
        header: (u32, u64),
        descs: &[(u64, u32, bool)],
        next_override: Option<(usize, u16)>,
    ) -> Result<Request, Reject> {
        let vq = MockSplitQueue::new(m, 16);
        m.write_obj(header.0, GuestAddress(descs[0].0)).ok();
        m.write_obj(header.1, GuestAddress(descs[0].0 + 8)).ok();
        let raw: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, w))| {
                let mut flags = if w { VRING_DESC_F_WRITE as u16 } else { 0 };
                let mut next = i as u16 + 1;
                if i + 1 < descs.len() {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                if let Some((at, to)) = next_override {
                    if at == i {
                        flags |= VRING_DESC_F_NEXT as u16;
                        next = to;
                    }
                }
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
            })
            .collect();
        vq.add_desc_chains(&raw, 0).unwrap();
        let mut q: virtio_queue::Queue = vq.create_queue().unwrap();
        let chain = q.iter(m).unwrap().next().unwrap();
        parse(chain, m, CAP)
    }

    #[test]
    fn well_formed_read_and_write() {
        let m = mem();
        let r = run(
            &m,
            (T_IN, 2),
            &[(0x8000, 16, false), (0x9000, 1024, true), (0xa000, 1, true)],
            None,
        )
        .unwrap();
        assert_eq!(
            (r.kind, r.sector, r.data_len, r.status),
            (T_IN, 2, 1024, GuestAddress(0xa000))
        );
        let r = run(
            &m,
            (T_OUT, 0),
            &[
                (0x8000, 16, false),
                (0x9000, 512, false),
                (0x9200, 512, false),
                (0xa000, 1, true),
            ],
            None,
        )
        .unwrap();
        assert_eq!(r.data.len(), 2);
    }

    #[test]
    fn malformed_chains_are_rejected() {
        let m = mem();
        let status = |r: Result<Request, Reject>| match r {
            Err(Reject::Status { code, .. }) => code,
            other => panic!("expected a status reject, got {other:?}"),
        };
        // Data outside RAM.
        assert_eq!(
            status(run(
                &m,
                (T_IN, 0),
                &[
                    (0x8000, 16, false),
                    (0xfff_0000, 512, true),
                    (0xa000, 1, true)
                ],
                None
            )),
            S_IOERR
        );
        // Past the disk end.
        assert_eq!(
            status(run(
                &m,
                (T_IN, CAP / 512),
                &[(0x8000, 16, false), (0x9000, 512, true), (0xa000, 1, true)],
                None
            )),
            S_IOERR
        );
        // Sector overflow.
        assert_eq!(
            status(run(
                &m,
                (T_OUT, u64::MAX / 2),
                &[(0x8000, 16, false), (0x9000, 512, false), (0xa000, 1, true)],
                None
            )),
            S_IOERR
        );
        // Wrong direction for a read.
        assert_eq!(
            status(run(
                &m,
                (T_IN, 0),
                &[(0x8000, 16, false), (0x9000, 512, false), (0xa000, 1, true)],
                None
            )),
            S_IOERR
        );
        // Zero-length header.
        assert_eq!(
            status(run(
                &m,
                (T_IN, 0),
                &[(0x8000, 0, false), (0x9000, 512, true), (0xa000, 1, true)],
                None
            )),
            S_IOERR
        );
        // Partial sector.
        assert_eq!(
            status(run(
                &m,
                (T_IN, 0),
                &[(0x8000, 16, false), (0x9000, 100, true), (0xa000, 1, true)],
                None
            )),
            S_IOERR
        );
        // Unknown type.
        assert_eq!(
            status(run(
                &m,
                (77, 0),
                &[(0x8000, 16, false), (0xa000, 1, true)],
                None
            )),
            S_UNSUPP
        );
        // Status not writable: nothing can be reported.
        assert!(matches!(
            run(
                &m,
                (T_IN, 0),
                &[(0x8000, 16, false), (0xa000, 1, false)],
                None
            ),
            Err(Reject::Silent(_))
        ));
        // A loop back to the head.
        assert!(matches!(
            run(
                &m,
                (T_IN, 0),
                &[(0x8000, 16, false), (0x9000, 512, true), (0xa000, 1, true)],
                Some((2, 0))
            ),
            Err(Reject::Silent(_))
        ));
    }
}
