//! The vfio-user server backend: one virtio-blk PCI function
//! (`VirtioPciTransport` over `BlockDevice`, the VMM's own code) served as
//! VFIO regions and irqs.
//!
//! Regions: BAR 0 (the transport's, every access a message: queue
//! notifications are region writes) and configuration space; no mmap.
//! Irqs: INTx and the transport's MSI-X vectors. The client emulates the
//! MSI-X table, so when it hands over vector eventfds this side enables
//! MSI-X in the transport with every entry unmasked, and turns it off
//! again when the client disables the index. Guest RAM arrives as DMA
//! regions with file descriptors; the transport is rebuilt on each change
//! of memory (before the driver starts, in practice) and on reset.

use std::fs::File;
use std::io;
use std::sync::Arc;

use casemate_devices::bus::{BusAction, PlatformRequest};
use casemate_devices::pci::PciDevice;
use casemate_devices::virtio::blk::{BlockConfig, BlockDevice, CacheMode, ZeroPolicy};
use casemate_devices::virtio::common::VirtioLifecycle;
use casemate_devices::virtio::pci::{msix_vectors_for, VirtioPciParams, VirtioPciTransport};
use casemate_devices::virtio::VirtioDevice;
use casemate_disk::DiskImage;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE,
};
use vfio_user::{DmaMapFlags, DmaUnmapFlags, ServerBackend};
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::host::{intx_resampler, Threads};
use crate::irqs::{Intx, NoIoEvents, Vectors};

pub const BAR0_REGION: u32 = 0;
pub const CONFIG_REGION: u32 = 7;
pub const INTX_IRQ: u32 = 0;
pub const MSIX_IRQ: u32 = 2;
/// Where the transport believes BAR 0 is; the client places the guest's
/// copy wherever it likes, accesses arrive by offset.
const BAR0_AT: u64 = 0xe000_0000;
const MSIX_CAP: u8 = 0x11;

pub struct BlkServer {
    disk: Arc<dyn DiskImage>,
    read_only: bool,
    queues: u16,
    ram: Vec<(u64, Arc<GuestRegionMmap>)>,
    transport: VirtioPciTransport,
    vectors: Arc<Vectors>,
    intx: Arc<Intx>,
    host: Arc<Threads>,
    resampler: Option<Arc<EventFd>>,
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

fn build(
    disk: &Arc<dyn DiskImage>,
    read_only: bool,
    queues: u16,
    mem: GuestMemoryMmap,
    vectors: &Arc<Vectors>,
    intx: &Arc<Intx>,
) -> io::Result<VirtioPciTransport> {
    let dev = BlockDevice::new(BlockConfig {
        name: "blk0".into(),
        serial: "vfio-user-blk".into(),
        disk: disk.clone(),
        read_only,
        cache: CacheMode::Writeback,
        num_queues: queues,
        zeroes: ZeroPolicy::default(),
        poll_max: casemate_devices::virtio::poll::DEFAULT_POLL_MAX,
    });
    let n = dev.queue_max_sizes().len();
    let notify = (0..n)
        .map(|_| EventFd::new(EFD_NONBLOCK))
        .collect::<io::Result<Vec<_>>>()?;
    VirtioPciTransport::new(VirtioPciParams {
        dev: Box::new(dev),
        mem,
        notify,
        msix: vectors.clone(),
        intx: intx.clone(),
        intx_line: 0,
        intx_pin: 1,
        ioevents: Arc::new(NoIoEvents),
        key: 0,
        bar_addr: BAR0_AT,
    })
}

impl BlkServer {
    pub fn new(disk: Arc<dyn DiskImage>, read_only: bool, queues: u16) -> io::Result<Self> {
        let vectors = Arc::new(Vectors::new(msix_vectors_for(queues.into())));
        let intx = Arc::new(Intx::default());
        let transport = build(
            &disk,
            read_only,
            queues,
            GuestMemoryMmap::default(),
            &vectors,
            &intx,
        )?;
        Ok(Self {
            disk,
            read_only,
            queues,
            ram: Vec::new(),
            transport,
            vectors,
            intx,
            host: Arc::new(Threads::default()),
            resampler: None,
        })
    }

    /// Irq counts per index (INTx, MSI, MSI-X, error, request).
    pub fn irq_counts(&self) -> [u32; 5] {
        [1, 0, u32::from(msix_vectors_for(self.queues.into())), 0, 0]
    }

    fn rebuild(&mut self) -> io::Result<()> {
        self.host.stop_all();
        let regions: Vec<Arc<GuestRegionMmap>> = self.ram.iter().map(|r| r.1.clone()).collect();
        let mem = if regions.is_empty() {
            GuestMemoryMmap::default()
        } else {
            GuestMemoryMmap::from_arc_regions(regions)
                .map_err(|e| io::Error::other(e.to_string()))?
        };
        self.transport = build(
            &self.disk,
            self.read_only,
            self.queues,
            mem,
            &self.vectors,
            &self.intx,
        )?;
        self.apply_msix();
        Ok(())
    }

    fn act(&mut self, a: BusAction) {
        if let BusAction::Platform(PlatformRequest::Virtio { change, .. }) = a {
            self.transport.lifecycle(change, self.host.as_ref());
        }
    }

    fn cfg_u8(&mut self, off: u16) -> u8 {
        let mut b = [0u8];
        self.transport.config_read(off, &mut b);
        b[0]
    }

    /// MSI-X on in the transport, every entry unmasked, while the client
    /// holds vector eventfds; off otherwise.
    fn apply_msix(&mut self) {
        let mut at = self.cfg_u8(0x34);
        let mut hops = 0;
        while at != 0 && hops < 48 && self.cfg_u8(u16::from(at)) != MSIX_CAP {
            at = self.cfg_u8(u16::from(at) + 1);
            hops += 1;
        }
        if at == 0 || hops == 48 {
            return;
        }
        let cap = u16::from(at);
        let on = self.vectors.any();
        let ctrl: u16 = if on { 0x8000 } else { 0 };
        let a = self.transport.config_write(cap + 2, &ctrl.to_le_bytes());
        self.act(a);
        if on {
            let mut t = [0u8; 4];
            self.transport.config_read(cap + 4, &mut t);
            let table = u32::from_le_bytes(t);
            let (bar, off) = ((table & 7) as u8, u64::from(table & !7));
            for v in 0..u64::from(msix_vectors_for(self.queues.into())) {
                let _ = self
                    .transport
                    .bar_write(bar, off + v * 16 + 12, &0u32.to_le_bytes());
            }
        }
    }
}

impl ServerBackend for BlkServer {
    fn region_read(&mut self, region: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        match region {
            CONFIG_REGION => {
                let off = u16::try_from(offset).map_err(|_| einval())?;
                if usize::from(off) + data.len() > 4096 {
                    return Err(einval());
                }
                // The transport answers 1, 2 and 4-byte accesses.
                let mut i = 0;
                while i < data.len() {
                    let n = if (usize::from(off) + i) % 4 == 0 && data.len() - i >= 4 {
                        4
                    } else {
                        1
                    };
                    self.transport
                        .config_read(off + i as u16, &mut data[i..i + n]);
                    i += n;
                }
                Ok(())
            }
            BAR0_REGION => {
                self.transport.bar_read(0, offset, data);
                Ok(())
            }
            _ => Err(einval()),
        }
    }

    fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        let a = match region {
            CONFIG_REGION => {
                let off = u16::try_from(offset).map_err(|_| einval())?;
                self.transport.config_write(off, data)
            }
            BAR0_REGION => self.transport.bar_write(0, offset, data),
            _ => return Err(einval()),
        };
        self.act(a);
        Ok(())
    }

    fn dma_map(
        &mut self,
        _flags: DmaMapFlags,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> io::Result<()> {
        let fd = fd.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "DMA region without a file descriptor",
            )
        })?;
        let len = usize::try_from(size).map_err(|_| einval())?;
        let m = MmapRegion::build(
            Some(FileOffset::new(fd, offset)),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
        let r = GuestRegionMmap::new(m, GuestAddress(address)).ok_or_else(einval)?;
        self.ram.retain(|x| x.0 != address);
        self.ram.push((address, Arc::new(r)));
        self.ram.sort_by_key(|x| x.0);
        log::debug!("DMA map {address:#x}+{size:#x}");
        self.rebuild()
    }

    fn dma_unmap(&mut self, _flags: DmaUnmapFlags, address: u64, _size: u64) -> io::Result<()> {
        self.ram.retain(|x| x.0 != address);
        self.rebuild()
    }

    fn reset(&mut self) -> io::Result<()> {
        self.rebuild()
    }

    fn set_irqs(
        &mut self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> io::Result<()> {
        let eventfd = flags & VFIO_IRQ_SET_DATA_EVENTFD != 0;
        let none = flags & VFIO_IRQ_SET_DATA_NONE != 0;
        let trigger = flags & VFIO_IRQ_SET_ACTION_TRIGGER != 0;
        let unmask = flags & VFIO_IRQ_SET_ACTION_UNMASK != 0;
        match index {
            INTX_IRQ if trigger && eventfd => {
                let f = fds.into_iter().next().ok_or_else(einval)?;
                *self.intx.trigger.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
            }
            INTX_IRQ if trigger && none && count == 0 => {
                *self.intx.trigger.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            INTX_IRQ if unmask && eventfd => {
                let f = fds.into_iter().next().ok_or_else(einval)?;
                if let Some(q) = self.resampler.take() {
                    let _ = q.write(1);
                }
                let quit = Arc::new(EventFd::new(EFD_NONBLOCK)?);
                let (a, b) = (self.intx.clone(), self.intx.clone());
                intx_resampler(f, quit.clone(), move || a.high(), move || b.raise())?;
                self.resampler = Some(quit);
            }
            MSIX_IRQ if trigger && eventfd => {
                if fds.len() != count as usize {
                    return Err(einval());
                }
                for (i, f) in fds.into_iter().enumerate() {
                    self.vectors.set(start + i as u32, Some(f))?;
                }
                self.apply_msix();
            }
            MSIX_IRQ if trigger && none && count == 0 => {
                self.vectors.clear();
                self.apply_msix();
            }
            _ => log::debug!("set_irqs index {index} flags {flags:#x}: ignored"),
        }
        Ok(())
    }
}

impl Drop for BlkServer {
    fn drop(&mut self) {
        self.host.stop_all();
        if let Some(q) = self.resampler.take() {
            let _ = q.write(1);
        }
    }
}
