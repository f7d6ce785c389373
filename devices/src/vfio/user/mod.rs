//! The vfio-user backend: `VfioDeviceIo` and `DmaMapper` over a UNIX
//! socket to a device that lives in another process (vfio-user protocol
//! 0.1, as QEMU 10 and Cloud Hypervisor speak it).
//!
//! Written here rather than taken from the `vfio_user` crate's `Client`
//! (whose `Server` the device tool uses): that client reads replies with
//! no timeout (a server that never answers hangs the vCPU), panics or
//! allocates without bound on a malformed reply (`assert_eq!` on region
//! capability sizes, an unchecked `message_size` subtraction), does not
//! check reply ids or the error flag (an error reply desynchronises the
//! stream) and inverts the device's reset flag. This client checks every
//! reply against its request, bounds every length, and gives each call a
//! deadline; after a protocol error or a timeout the connection is marked
//! broken and every later call fails at once (the device's requests fail,
//! the VM carries on).
//!
//! Guest RAM is shared with the server as file descriptors: every RAM
//! region must have a file behind it (memfd or a shared file backend);
//! anonymous RAM is refused when it is DMA-mapped.

pub mod wire;

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use vm_memory::{FileOffset, MmapRegion};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use super::dma::{DmaMapper, DmaRegion};
use super::io::{DeviceInfo, IrqInfo, MmapArea, RegionInfo, VfioDeviceIo, REGION_MMAP};
use wire::*;

/// The largest reply accepted: a region read of the largest access the
/// model makes is tiny; region info with a sparse list is a few KiB.
const MAX_REPLY: u32 = 64 * 1024;
/// The largest region access sent in one message.
const MAX_ACCESS: usize = 4096;
/// Room offered for a region info reply's capability list.
const REGION_INFO_ROOM: u32 = 4096;
/// What a call waits for its reply by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

struct Conn {
    stream: UnixStream,
    next_id: u16,
    /// Why the connection is unusable, once it is.
    broken: Option<String>,
}

/// A reply: its body (after the header) and the fd that came with it.
struct Reply {
    body: Vec<u8>,
    fd: Option<File>,
}

/// See the module doc.
pub struct VfioUserDevice {
    path: PathBuf,
    conn: Mutex<Conn>,
    /// The fd each region's mmap areas come from, with its file offset.
    region_fds: Mutex<Vec<(u32, File, u64)>>,
}

fn proto(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl VfioUserDevice {
    /// Connect to the server at `path` and negotiate the version; every
    /// later call waits at most `timeout` for its reply.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Self> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        let dev = Self {
            path: path.to_path_buf(),
            conn: Mutex::new(Conn {
                stream,
                next_id: 0,
                broken: None,
            }),
            region_fds: Mutex::new(Vec::new()),
        };
        // Every capability takes the specification's default (one fd per
        // message, 1 MiB transfers); this client never needs more.
        let caps = b"{\"capabilities\":{}}\0";
        let body = Body::default().u16(0).u16(1).bytes(caps);
        let r = dev.call(VERSION, &body.0, &[])?;
        let major = Reader(&r.body).u16(0);
        if r.body.len() < 4 || major != 0 {
            return Err(proto(format!("server speaks vfio-user {major}, not 0.x")));
        }
        Ok(dev)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Send one command and wait for its reply.
    fn call(&self, command: u16, body: &[u8], fds: &[RawFd]) -> io::Result<Reply> {
        let mut c = self.lock();
        if let Some(why) = &c.broken {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("connection is broken ({why})"),
            ));
        }
        let id = c.next_id;
        c.next_id = c.next_id.wrapping_add(1);
        match exchange(&mut c.stream, id, command, body, fds) {
            // A reply, or an error reply: the stream is in step either way.
            Ok(r) => r,
            Err(e) => {
                // Out of step with the server from here on.
                c.broken = Some(e.to_string());
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
                Err(e)
            }
        }
    }

    fn set_irqs(
        &self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: &[RawFd],
    ) -> io::Result<()> {
        let body = Body::default()
            .u32(20)
            .u32(flags)
            .u32(index)
            .u32(start)
            .u32(count);
        self.call(DEVICE_SET_IRQS, &body.0, fds).map(|_| ())
    }
}

/// One request/reply round on `s` (see `VfioUserDevice::call`). The outer
/// error is a transport or protocol failure (the stream is out of step);
/// the inner one an error reply carrying the server's errno.
fn exchange(
    s: &mut UnixStream,
    id: u16,
    command: u16,
    body: &[u8],
    fds: &[RawFd],
) -> io::Result<io::Result<Reply>> {
    let size = u32::try_from(HEADER_LEN + body.len()).map_err(|_| proto("request too large"))?;
    let h = Header {
        id,
        command,
        size,
        flags: 0,
        error: 0,
    };
    let mut msg = h.encode().to_vec();
    msg.extend_from_slice(body);
    let sent = if fds.is_empty() {
        0
    } else {
        s.send_with_fds(&[&msg[..]], fds).map_err(io::Error::from)?
    };
    s.write_all(&msg[sent..]).map_err(timed_out)?;

    let mut hb = [0u8; HEADER_LEN];
    let (got, fd) = s
        .recv_with_fd(&mut hb)
        .map_err(|e| timed_out(io::Error::from(e)))?;
    if got == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    s.read_exact(&mut hb[got..]).map_err(timed_out)?;
    let r = Header::decode(&hb);
    if r.id != id || r.command != command || r.flags & FLAG_TYPE_MASK != FLAG_REPLY {
        return Err(proto(format!(
            "reply {}/{} (flags {:#x}) does not answer request {id}/{command}",
            r.id, r.command, r.flags
        )));
    }
    if r.size < HEADER_LEN as u32 || r.size > MAX_REPLY {
        return Err(proto(format!("reply of {} bytes", r.size)));
    }
    let mut rest = vec![0u8; r.size as usize - HEADER_LEN];
    s.read_exact(&mut rest).map_err(timed_out)?;
    if r.flags & FLAG_ERROR != 0 {
        let errno = if r.error == 0 {
            libc::EIO
        } else {
            r.error as i32
        };
        return Ok(Err(io::Error::from_raw_os_error(errno)));
    }
    Ok(Ok(Reply { body: rest, fd }))
}

fn timed_out(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            io::Error::new(io::ErrorKind::TimedOut, "no reply from the server in time")
        }
        _ => e,
    }
}

impl VfioDeviceIo for VfioUserDevice {
    fn device_info(&self) -> io::Result<DeviceInfo> {
        let r = self.call(
            DEVICE_GET_INFO,
            &Body::default().u32(16).u32(0).u32(0).u32(0).0,
            &[],
        )?;
        if r.body.len() < 16 {
            return Err(proto("short device info reply"));
        }
        let b = Reader(&r.body);
        Ok(DeviceInfo {
            flags: b.u32(4),
            num_regions: b.u32(8),
            num_irqs: b.u32(12),
        })
    }

    fn region_info(&self, index: u32) -> io::Result<RegionInfo> {
        let body = Body::default()
            .u32(REGION_INFO_LEN as u32 + REGION_INFO_ROOM)
            .u32(0)
            .u32(index)
            .u32(0)
            .u64(0)
            .u64(0);
        let r = self.call(DEVICE_GET_REGION_INFO, &body.0, &[])?;
        if r.body.len() < REGION_INFO_LEN {
            return Err(proto("short region info reply"));
        }
        let b = Reader(&r.body);
        if b.u32(8) != index {
            return Err(proto(format!(
                "region info for region {} instead of {index}",
                b.u32(8)
            )));
        }
        let (flags, size, offset) = (b.u32(4), b.u64(16), b.u64(24));
        let areas =
            sparse_areas(&r.body, size).map_err(|e| proto(format!("region {index}: {e}")))?;
        let mut fds = self.region_fds.lock().unwrap_or_else(|p| p.into_inner());
        fds.retain(|f| f.0 != index);
        // Mappable only with an fd to map.
        let flags = match r.fd {
            Some(f) => {
                fds.push((index, f, offset));
                flags
            }
            None => flags & !REGION_MMAP,
        };
        Ok(RegionInfo {
            flags,
            size,
            areas: areas
                .into_iter()
                .map(|(offset, size)| MmapArea { offset, size })
                .collect(),
        })
    }

    fn region_read(&self, index: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        for (i, chunk) in data.chunks_mut(MAX_ACCESS).enumerate() {
            let at = offset + (i * MAX_ACCESS) as u64;
            let body = Body::default().u64(at).u32(index).u32(chunk.len() as u32);
            let r = self.call(REGION_READ, &body.0, &[])?;
            let b = Reader(&r.body);
            if r.body.len() != 16 + chunk.len()
                || b.u64(0) != at
                || b.u32(8) != index
                || b.u32(12) as usize != chunk.len()
            {
                return Err(proto(format!(
                    "region {index} read at {at:#x}: reply does not match"
                )));
            }
            chunk.copy_from_slice(&r.body[16..]);
        }
        Ok(())
    }

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        for (i, chunk) in data.chunks(MAX_ACCESS).enumerate() {
            let at = offset + (i * MAX_ACCESS) as u64;
            let body = Body::default()
                .u64(at)
                .u32(index)
                .u32(chunk.len() as u32)
                .bytes(chunk);
            self.call(REGION_WRITE, &body.0, &[])?;
        }
        Ok(())
    }

    fn region_mmap(&self, index: u32, area: MmapArea) -> io::Result<MmapRegion> {
        let fds = self.region_fds.lock().unwrap_or_else(|p| p.into_inner());
        let (_, file, base) = fds.iter().find(|f| f.0 == index).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("region {index} came with no fd to map"),
            )
        })?;
        let size = usize::try_from(area.size).map_err(|_| proto("area too large"))?;
        let fo = FileOffset::new(file.try_clone()?, base.saturating_add(area.offset));
        MmapRegion::build(
            Some(fo),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
        )
        .map_err(io::Error::other)
    }

    fn irq_info(&self, index: u32) -> io::Result<IrqInfo> {
        let r = self.call(
            DEVICE_GET_IRQ_INFO,
            &Body::default().u32(16).u32(0).u32(index).u32(0).0,
            &[],
        )?;
        let b = Reader(&r.body);
        if r.body.len() < 16 || b.u32(8) != index {
            return Err(proto(format!(
                "irq info reply does not answer index {index}"
            )));
        }
        Ok(IrqInfo {
            flags: b.u32(4),
            count: b.u32(12),
        })
    }

    fn set_irq_eventfds(&self, index: u32, start: u32, fds: &[&EventFd]) -> io::Result<()> {
        // One fd per message: the specification's default limit.
        for (i, fd) in fds.iter().enumerate() {
            self.set_irqs(
                index,
                IRQ_DATA_EVENTFD | IRQ_ACTION_TRIGGER,
                start + i as u32,
                1,
                &[fd.as_raw_fd()],
            )?;
        }
        Ok(())
    }

    fn disable_irqs(&self, index: u32) -> io::Result<()> {
        self.set_irqs(index, IRQ_DATA_NONE | IRQ_ACTION_TRIGGER, 0, 0, &[])
    }

    fn set_unmask_eventfd(&self, index: u32, fd: &EventFd) -> io::Result<()> {
        self.set_irqs(
            index,
            IRQ_DATA_EVENTFD | IRQ_ACTION_UNMASK,
            0,
            1,
            &[fd.as_raw_fd()],
        )
    }

    fn unmask(&self, index: u32) -> io::Result<()> {
        self.set_irqs(index, IRQ_DATA_NONE | IRQ_ACTION_UNMASK, 0, 1, &[])
    }

    fn reset(&self) -> io::Result<()> {
        self.call(DEVICE_RESET, &[], &[]).map(|_| ())
    }
}

impl DmaMapper for VfioUserDevice {
    fn map(&self, r: &DmaRegion) -> io::Result<()> {
        let Some((fd, offset)) = r.file else {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "guest RAM is anonymous and cannot be shared with a vfio-user server \
                 (use a memory-backend-memfd or a shared memory-backend-file)",
            ));
        };
        let body = Body::default()
            .u32(32)
            .u32(DMA_READ_WRITE)
            .u64(offset)
            .u64(r.iova)
            .u64(r.size);
        self.call(DMA_MAP, &body.0, &[fd]).map(|_| ())
    }

    fn unmap(&self, iova: u64, size: u64) -> io::Result<()> {
        let body = Body::default().u32(24).u32(0).u64(iova).u64(size);
        self.call(DMA_UNMAP, &body.0, &[]).map(|_| ())
    }
}

#[cfg(test)]
mod tests;
