//! The client against the `vfio_user` crate's own server (interoperation)
//! and against scripted hostile servers (no hang, no panic).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vfio_bindings::bindings::vfio::{vfio_region_info, vfio_region_sparse_mmap_area};
use vfio_user::{
    DmaMapFlags, DmaUnmapFlags, IrqInfo, Server, ServerBackend, ServerRegion, SparseArea,
};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::tempfile::TempFile;

use super::wire::{self, Body, Header, HEADER_LEN};
use super::VfioUserDevice;
use crate::vfio::dma::{ram_regions, DmaMapper};
use crate::vfio::io::*;

const T: Duration = Duration::from_millis(300);

fn sock(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("casemate-vfu-{}-{tag}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

/// What the test server's backend saw.
#[derive(Default)]
struct Seen {
    irqs: Vec<(u32, u32, u32, u32, usize)>,
    dma: Vec<(u64, u64, u64, bool)>,
    unmaps: Vec<(u64, u64)>,
    resets: usize,
    /// The eventfds it was given, as files, to fire them.
    fds: Vec<File>,
    /// DMA'd files, to read guest RAM through.
    ram: Vec<(u64, File, u64)>,
}

struct Backend {
    config: Vec<u8>,
    bar0: File,
    seen: Arc<Mutex<Seen>>,
}

impl ServerBackend for Backend {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> std::io::Result<()> {
        match region {
            CONFIG_REGION => {
                let at = offset as usize;
                data.copy_from_slice(&self.config[at..at + data.len()]);
                Ok(())
            }
            0 => self.bar0.read_exact_at(data, offset),
            _ => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }
    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> std::io::Result<()> {
        match region {
            CONFIG_REGION => {
                let at = offset as usize;
                self.config[at..at + data.len()].copy_from_slice(data);
                Ok(())
            }
            0 => self.bar0.write_all_at(data, offset),
            _ => Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }
    fn dma_map(
        &mut self,
        _f: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> std::io::Result<()> {
        let mut s = self.seen.lock().unwrap();
        s.dma.push((offset, address, size, fd.is_some()));
        if let Some(f) = fd {
            s.ram.push((address, f, offset));
        }
        Ok(())
    }
    fn dma_unmap(&mut self, _f: DmaUnmapFlags, address: u64, size: u64) -> std::io::Result<()> {
        self.seen.lock().unwrap().unmaps.push((address, size));
        Ok(())
    }
    fn reset(&mut self) -> std::io::Result<()> {
        self.seen.lock().unwrap().resets += 1;
        Ok(())
    }
    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> std::io::Result<()> {
        let mut s = self.seen.lock().unwrap();
        s.irqs.push((index, flags, start, count, fds.len()));
        s.fds.extend(fds);
        Ok(())
    }
}

struct Peer {
    seen: Arc<Mutex<Seen>>,
    bar0: File,
    thread: Option<JoinHandle<()>>,
}

fn region(index: u32, size: u64, flags: u32) -> vfio_region_info {
    vfio_region_info {
        argsz: 32,
        flags,
        index,
        cap_offset: 0,
        size,
        offset: 0,
    }
}

/// The crate's server with BAR0 (64 KiB, file-backed, one sparse area),
/// configuration space and INTx, MSI and 4 MSI-X vectors.
fn crate_server(path: &Path) -> Peer {
    let bar0 = TempFile::new().unwrap().into_file();
    bar0.set_len(0x1_0000).unwrap();
    let rw = REGION_READ | REGION_WRITE;
    let mut regions: Vec<ServerRegion> = (0..9)
        .map(|i| ServerRegion {
            region_info: region(i, 0, 0),
            sparse_areas: Vec::new(),
            mmap_fd: None,
        })
        .collect();
    regions[0] = ServerRegion {
        region_info: region(0, 0x1_0000, rw | REGION_MMAP),
        sparse_areas: vec![SparseArea {
            area: vfio_region_sparse_mmap_area {
                offset: 0x1000,
                size: 0x3000,
            },
        }],
        mmap_fd: Some(bar0.as_raw_fd()),
    };
    regions[CONFIG_REGION as usize].region_info = region(CONFIG_REGION, 4096, rw);
    let irqs = [1, 1, 4, 0, 0]
        .iter()
        .enumerate()
        .map(|(i, &count)| IrqInfo {
            index: i as u32,
            flags: 0,
            count,
        })
        .collect();
    let server = Server::new(path, true, irqs, regions).unwrap();
    let mut config = vec![0u8; 4096];
    config[0..4].copy_from_slice(&0x1042_1af4u32.to_le_bytes());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut backend = Backend {
        config,
        bar0: bar0.try_clone().unwrap(),
        seen: seen.clone(),
    };
    let thread = std::thread::spawn(move || {
        let _ = server.run(&mut backend);
    });
    Peer {
        seen,
        bar0,
        thread: Some(thread),
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn the_client_drives_the_vfio_user_crates_server() {
    let path = sock("crate");
    let peer = crate_server(&path);
    let dev = VfioUserDevice::connect(&path, T).unwrap();
    let info = dev.device_info().unwrap();
    assert_ne!(info.flags & DEVICE_FLAGS_PCI, 0);
    assert_eq!((info.num_regions, info.num_irqs), (9, 5));

    let r0 = dev.region_info(0).unwrap();
    assert_eq!(r0.size, 0x1_0000);
    assert_ne!(r0.flags & REGION_MMAP, 0, "came with an fd");
    assert_eq!(
        r0.mappable(),
        vec![MmapArea {
            offset: 0x1000,
            size: 0x3000
        }]
    );
    let cfg = dev.region_info(CONFIG_REGION).unwrap();
    assert_eq!((cfg.size, cfg.flags & REGION_MMAP), (4096, 0));

    let mut id = [0u8; 4];
    dev.region_read(CONFIG_REGION, 0, &mut id).unwrap();
    assert_eq!(u32::from_le_bytes(id), 0x1042_1af4);
    dev.region_write(0, 0x10, &[1, 2, 3, 4]).unwrap();
    let mut back = [0u8; 4];
    peer.bar0.read_exact_at(&mut back, 0x10).unwrap();
    assert_eq!(back, [1, 2, 3, 4]);

    // A mapped area is the server's memory.
    let m = dev
        .region_mmap(
            0,
            MmapArea {
                offset: 0x1000,
                size: 0x3000,
            },
        )
        .unwrap();
    use vm_memory::{Bytes, VolatileMemory};
    m.as_volatile_slice().write_slice(&[0xab; 4], 0x20).unwrap();
    peer.bar0.read_exact_at(&mut back, 0x1020).unwrap();
    assert_eq!(back, [0xab; 4]);

    // Eventfds cross the socket: the server fires what it was given.
    let evs: Vec<EventFd> = (0..4)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let refs: Vec<&EventFd> = evs.iter().collect();
    dev.set_irq_eventfds(MSIX_IRQ, 0, &refs).unwrap();
    dev.disable_irqs(INTX_IRQ).unwrap();
    let (irqs, mut fds) = {
        let mut s = peer.seen.lock().unwrap();
        (s.irqs.clone(), std::mem::take(&mut s.fds))
    };
    assert_eq!(irqs.len(), 5);
    assert_eq!(irqs[2], (MSIX_IRQ, 0x24, 2, 1, 1), "one vector per message");
    assert_eq!(irqs[4], (INTX_IRQ, 0x21, 0, 0, 0));
    fds[3].write_all(&1u64.to_ne_bytes()).unwrap();
    assert_eq!(evs[3].read().unwrap(), 1);

    dev.reset().unwrap();
    assert_eq!(peer.seen.lock().unwrap().resets, 1);
    drop(dev);
}

#[test]
fn guest_ram_is_shared_as_fds_and_anonymous_ram_is_refused() {
    let path = sock("dma");
    let peer = crate_server(&path);
    let dev = VfioUserDevice::connect(&path, T).unwrap();
    let f = TempFile::new().unwrap().into_file();
    f.set_len(0x20_0000).unwrap();
    let mem = GuestMemoryMmap::from_ranges_with_files(&[
        (
            GuestAddress(0),
            0x10_0000,
            Some(FileOffset::new(f.try_clone().unwrap(), 0)),
        ),
        (
            GuestAddress(4 << 30),
            0x10_0000,
            Some(FileOffset::new(f.try_clone().unwrap(), 0x10_0000)),
        ),
    ])
    .unwrap();
    use vm_memory::Bytes;
    mem.write_slice(b"casemate", GuestAddress((4 << 30) + 0x40))
        .unwrap();
    for r in ram_regions(&mem) {
        dev.map(&r).unwrap();
    }
    dev.unmap(4 << 30, 0x10_0000).unwrap();
    let s = peer.seen.lock().unwrap();
    assert_eq!(
        s.dma,
        vec![
            (0, 0, 0x10_0000, true),
            (0x10_0000, 4 << 30, 0x10_0000, true)
        ]
    );
    assert_eq!(s.unmaps, vec![(4 << 30, 0x10_0000)]);
    // The server reads the guest's bytes through the fd it got.
    let (_, file, off) = &s.ram[1];
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, off + 0x40).unwrap();
    assert_eq!(&b, b"casemate");
    drop(s);

    let anon = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
    let e = dev.map(&ram_regions(&anon)[0]).unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot be shared with a vfio-user server"),
        "{e}"
    );
    drop(dev);
}

/// A scripted server: answers each request with `reply(header, body)`
/// (None: say nothing), for one connection.
fn scripted(
    path: &Path,
    mut reply: impl FnMut(Header, &[u8]) -> Option<Vec<u8>> + Send + 'static,
) -> JoinHandle<()> {
    let l = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let Ok((mut s, _)) = l.accept() else { return };
        loop {
            let mut hb = [0u8; HEADER_LEN];
            if s.read_exact(&mut hb).is_err() {
                return;
            }
            let h = Header::decode(&hb);
            let mut body = vec![0u8; h.size as usize - HEADER_LEN];
            if s.read_exact(&mut body).is_err() {
                return;
            }
            if let Some(r) = reply(h, &body) {
                if s.write_all(&r).is_err() {
                    return;
                }
            }
        }
    })
}

fn answer(h: Header, body: &[u8]) -> Vec<u8> {
    let mut v = Header {
        id: h.id,
        command: h.command,
        size: (HEADER_LEN + body.len()) as u32,
        flags: wire::FLAG_REPLY,
        error: 0,
    }
    .encode()
    .to_vec();
    v.extend_from_slice(body);
    v
}

/// An honest answer to the version handshake, else `f`.
fn after_version(
    mut f: impl FnMut(Header, &[u8]) -> Option<Vec<u8>> + Send + 'static,
) -> impl FnMut(Header, &[u8]) -> Option<Vec<u8>> + Send + 'static {
    move |h, b| {
        if h.command == wire::VERSION {
            Some(answer(h, &Body::default().u16(0).u16(1).bytes(b"{}\0").0))
        } else {
            f(h, b)
        }
    }
}

#[test]
fn a_server_that_never_replies_times_out() {
    let path = sock("mute");
    let t = scripted(&path, |_, _| None);
    let start = Instant::now();
    let e = VfioUserDevice::connect(&path, T).err().unwrap();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert!(start.elapsed() < T * 4);
    drop(e);
    t.join().unwrap();
}

#[test]
fn a_reply_to_another_request_breaks_the_connection_for_good() {
    let path = sock("wrongid");
    let t = scripted(
        &path,
        after_version(|mut h, _| {
            h.id = h.id.wrapping_add(7);
            Some(answer(h, &[0; 16]))
        }),
    );
    let dev = VfioUserDevice::connect(&path, T).unwrap();
    let e = dev.device_info().unwrap_err();
    assert!(e.to_string().contains("does not answer request"), "{e}");
    let e = dev.irq_info(0).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotConnected, "{e}");
    assert!(e.to_string().contains("broken"), "{e}");
    drop(dev);
    t.join().unwrap();
}

#[test]
fn absurd_sizes_and_out_of_range_answers_are_errors_not_panics() {
    let path = sock("sizes");
    let t = scripted(
        &path,
        after_version(|h, b| match h.command {
            // A reply claiming 4 GiB.
            wire::DEVICE_GET_INFO => {
                let mut r = answer(h, &[0; 16]);
                r[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
                Some(r)
            }
            _ => Some(answer(h, b)),
        }),
    );
    let dev = VfioUserDevice::connect(&path, T).unwrap();
    let e = dev.device_info().unwrap_err();
    assert!(e.to_string().contains("reply of 4294967295 bytes"), "{e}");
    drop(dev);
    t.join().unwrap();

    let path = sock("caps");
    let t = scripted(
        &path,
        after_version(|h, b| {
            let r = super::wire::Reader(b);
            match h.command {
                wire::DEVICE_GET_REGION_INFO if r.u32(8) == 0 => {
                    // A sparse list whose area runs past the region.
                    let body = Body::default()
                        .u32(80)
                        .u32(wire::REGION_INFO_FLAG_CAPS | REGION_MMAP)
                        .u32(0)
                        .u32(32)
                        .u64(0x1000)
                        .u64(0)
                        .u16(wire::CAP_SPARSE_MMAP)
                        .u16(1)
                        .u32(0)
                        .u32(1)
                        .u32(0)
                        .u64(0x800)
                        .u64(0x1000);
                    Some(answer(h, &body.0))
                }
                wire::DEVICE_GET_REGION_INFO => {
                    // Answers for another region than asked.
                    let body = Body::default()
                        .u32(32)
                        .u32(0)
                        .u32(r.u32(8) + 1)
                        .u32(0)
                        .u64(0)
                        .u64(0);
                    Some(answer(h, &body.0))
                }
                wire::REGION_READ => {
                    // Fewer bytes than asked.
                    let body = Body::default()
                        .u64(r.u64(0))
                        .u32(r.u32(8))
                        .u32(1)
                        .bytes(&[0]);
                    Some(answer(h, &body.0))
                }
                wire::DEVICE_GET_IRQ_INFO => {
                    // An error reply: the stream stays usable.
                    let mut a = answer(h, &[]);
                    a[8..12].copy_from_slice(&(wire::FLAG_REPLY | wire::FLAG_ERROR).to_le_bytes());
                    a[12..16].copy_from_slice(&(libc::EINVAL as u32).to_le_bytes());
                    Some(a)
                }
                _ => Some(answer(h, &[])),
            }
        }),
    );
    let dev = VfioUserDevice::connect(&path, T).unwrap();
    let e = dev.region_info(0).unwrap_err();
    assert!(
        e.to_string()
            .contains("lies outside the 0x1000-byte region"),
        "{e}"
    );
    let e = dev.region_info(3).unwrap_err();
    assert!(
        e.to_string()
            .contains("region info for region 4 instead of 3"),
        "{e}"
    );
    let e = dev.region_read(CONFIG_REGION, 0, &mut [0; 4]).unwrap_err();
    assert!(e.to_string().contains("reply does not match"), "{e}");
    let e = dev.irq_info(9).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    dev.reset().unwrap();
    drop(dev);
    t.join().unwrap();
}

#[test]
fn a_server_that_dies_fails_every_later_call_at_once() {
    let path = sock("dies");
    let t = scripted(&path, after_version(|_, _| None));
    let dev = VfioUserDevice::connect(&path, T).unwrap();
    // The server stops answering: one call times out and breaks the
    // connection; every later call fails without waiting.
    assert!(dev.device_info().is_err());
    let start = Instant::now();
    for _ in 0..100 {
        assert!(dev.region_write(CONFIG_REGION, 4, &[0]).is_err());
    }
    assert!(start.elapsed() < T, "no waiting once broken");
    drop(dev);
    t.join().unwrap();

    let path = sock("eof");
    let l = UnixListener::bind(&path).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut hb = [0u8; HEADER_LEN];
        s.read_exact(&mut hb).unwrap();
        let h = Header::decode(&hb);
        let mut b = vec![0u8; h.size as usize - HEADER_LEN];
        s.read_exact(&mut b).unwrap();
        s.write_all(&answer(h, &Body::default().u16(0).u16(1).bytes(b"{}\0").0))
            .unwrap();
        // Then the process is gone.
        drop(s);
    });
    let dev = VfioUserDevice::connect(&path, T).unwrap();
    t.join().unwrap();
    let e = dev.device_info().unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionReset
        ),
        "{e}"
    );
    let _ = UnixStream::connect(&path);
}
