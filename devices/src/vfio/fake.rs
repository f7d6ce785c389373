//! Fakes for the VFIO seams: `FakeVfio`, a device built from a short
//! description (ids, BARs, ROM, MSI, MSI-X, PCIe) that records what the
//! model does to it and fails on request, plus recording MSI irqfds, an
//! INTx pair and memory slots.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use vm_memory::MmapRegion;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::caps::{CAP_MSI, CAP_MSIX, CAP_PCIE};
use super::dma::{DmaMapper, DmaRegion};
use super::io::*;
use super::seams::{IntxIrqfds, MemSlots, MsiAllocator, MsiIrqfds};
use crate::pci::testing::FakeMsi;
use crate::pci::{BarKind, MsiMessage, MsiVectors, PciIds};

/// One BAR of the fake device.
#[derive(Debug, Clone)]
pub struct FakeBar {
    pub index: u8,
    pub kind: BarKind,
    pub size: u64,
    pub mmap: bool,
    /// Sparse mmap areas (empty: the whole BAR when `mmap`).
    pub sparse: Vec<MmapArea>,
}

#[derive(Debug, Clone, Copy)]
pub struct FakeMsix {
    pub vectors: u16,
    pub table_bar: u8,
    pub table_offset: u32,
    pub pba_bar: u8,
    pub pba_offset: u32,
}

/// What the fake device looks like. Power management and VPD
/// capabilities are always in its list (the model must hide them), and an
/// extended capability sits at 0x100.
#[derive(Debug, Clone, Default)]
pub struct FakeSpec {
    pub ids: PciIds,
    pub bars: Vec<FakeBar>,
    pub rom: u64,
    pub msi: bool,
    pub msix: Option<FakeMsix>,
    pub pcie: bool,
    pub intx: bool,
    pub reset: bool,
}

/// Where the fake puts its capabilities.
pub const PM_AT: u8 = 0x40;
pub const MSI_AT: u8 = 0x50;
pub const VPD_AT: u8 = 0x70;
pub const MSIX_AT: u8 = 0x80;
pub const PCIE_AT: u8 = 0x90;

/// An operation the fake can be told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FakeOp {
    DeviceInfo,
    RegionInfo,
    RegionRead,
    RegionWrite,
    Mmap,
    IrqInfo,
    SetIrqs,
    DisableIrqs,
    UnmaskFd,
    Unmask,
    Reset,
    DmaMap,
    DmaUnmap,
}

/// What the model did to the device, in order (reads are not recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Reset,
    RegionWrite {
        index: u32,
        offset: u64,
        data: Vec<u8>,
    },
    Mmap {
        index: u32,
        area: MmapArea,
    },
    SetIrqs {
        index: u32,
        start: u32,
        fds: Vec<RawFd>,
    },
    DisableIrqs {
        index: u32,
    },
    UnmaskFd {
        index: u32,
        fd: RawFd,
    },
    Unmask {
        index: u32,
    },
    DmaMap(DmaRegion),
    DmaUnmap {
        iova: u64,
        size: u64,
    },
}

/// See the module doc.
pub struct FakeVfio {
    spec: FakeSpec,
    /// Overrides of `device_info`, for hostile-device tests.
    pub info: Mutex<DeviceInfo>,
    config: Mutex<Vec<u8>>,
    bytes: Mutex<HashMap<(u32, u64), u8>>,
    calls: Mutex<Vec<Call>>,
    /// The eventfds the device holds, per (irq index, vector): what it
    /// signals in `signal`.
    held: Mutex<HashMap<(u32, u32), EventFd>>,
    failing: Mutex<HashSet<FakeOp>>,
}

fn put(cfg: &mut [u8], at: u8, bytes: &[u8]) {
    let at = usize::from(at);
    cfg[at..at + bytes.len()].copy_from_slice(bytes);
}

impl FakeVfio {
    pub fn new(spec: FakeSpec) -> Self {
        let mut cfg = vec![0u8; 4096];
        let ids = spec.ids;
        cfg[0..2].copy_from_slice(&ids.vendor.to_le_bytes());
        cfg[2..4].copy_from_slice(&ids.device.to_le_bytes());
        cfg[8] = ids.revision;
        cfg[9] = ids.prog_if;
        cfg[0x0a] = ids.subclass;
        cfg[0x0b] = ids.class;
        cfg[0x2c..0x2e].copy_from_slice(&ids.subsys_vendor.to_le_bytes());
        cfg[0x2e..0x30].copy_from_slice(&ids.subsys_id.to_le_bytes());
        for b in &spec.bars {
            let bits: u32 = match b.kind {
                BarKind::Io => 0x1,
                BarKind::Mem32 => 0x0,
                BarKind::Mem64 { prefetchable } => 0x4 | (u32::from(prefetchable) << 3),
            };
            put(&mut cfg, 0x10 + 4 * b.index, &bits.to_le_bytes());
        }
        cfg[0x3d] = u8::from(spec.intx);
        // Status: capability list.
        cfg[0x06] = 0x10;
        let mut chain: Vec<(u8, Vec<u8>)> = vec![(PM_AT, vec![0x01, 0, 0x03, 0x00, 0, 0, 0, 0])];
        if spec.msi {
            // 64-bit, per-vector masking, 8 vectors capable.
            let mut body = vec![CAP_MSI, 0];
            body.extend_from_slice(&(0x0180u16 | 0x6).to_le_bytes());
            body.resize(24, 0);
            chain.push((MSI_AT, body));
        }
        chain.push((VPD_AT, vec![0x03, 0, 0, 0, 0, 0, 0, 0]));
        if let Some(m) = spec.msix {
            let mut body = vec![CAP_MSIX, 0];
            body.extend_from_slice(&(m.vectors - 1).to_le_bytes());
            body.extend_from_slice(&(m.table_offset | u32::from(m.table_bar)).to_le_bytes());
            body.extend_from_slice(&(m.pba_offset | u32::from(m.pba_bar)).to_le_bytes());
            chain.push((MSIX_AT, body));
        }
        if spec.pcie {
            let mut body = vec![CAP_PCIE, 0, 0x02, 0x00];
            body.resize(0x3c, 0);
            chain.push((PCIE_AT, body));
        }
        cfg[0x34] = chain[0].0;
        for i in 0..chain.len() {
            let next = chain.get(i + 1).map_or(0, |c| c.0);
            let (at, body) = &mut chain[i];
            body[1] = next;
            put(&mut cfg, *at, body);
        }
        // AER, version 1, end of the extended list.
        cfg[0x100..0x104].copy_from_slice(&0x0001_0001u32.to_le_bytes());
        let flags = DEVICE_FLAGS_PCI | if spec.reset { DEVICE_FLAGS_RESET } else { 0 };
        Self {
            spec,
            info: Mutex::new(DeviceInfo {
                flags,
                num_regions: 9,
                num_irqs: 5,
            }),
            config: Mutex::new(cfg),
            bytes: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
            held: Mutex::new(HashMap::new()),
            failing: Mutex::new(HashSet::new()),
        }
    }

    /// Make `op` fail from now on (until `heal`).
    pub fn fail(&self, op: FakeOp) {
        self.failing.lock().unwrap().insert(op);
    }

    pub fn heal(&self, op: FakeOp) {
        self.failing.lock().unwrap().remove(&op);
    }

    fn check(&self, op: FakeOp) -> io::Result<()> {
        if self.failing.lock().unwrap().contains(&op) {
            return Err(io::Error::other(format!("fake {op:?} failure")));
        }
        Ok(())
    }

    fn record(&self, c: Call) {
        self.calls.lock().unwrap().push(c);
    }

    /// The calls so far, emptying the record.
    pub fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    /// Fire vector `v` of irq `index` as the device would: signal the
    /// eventfd it holds. False if it holds none.
    pub fn signal(&self, index: u32, v: u32) -> bool {
        self.held
            .lock()
            .unwrap()
            .get(&(index, v))
            .is_some_and(|f| f.write(1).is_ok())
    }

    /// The device's configuration bytes as it holds them.
    pub fn config_bytes(&self) -> Vec<u8> {
        self.config.lock().unwrap().clone()
    }

    /// The byte the device holds at `offset` of region `index`.
    pub fn region_byte(&self, index: u32, offset: u64) -> u8 {
        self.bytes
            .lock()
            .unwrap()
            .get(&(index, offset))
            .copied()
            .unwrap_or(0)
    }

    fn bar(&self, index: u32) -> Option<&FakeBar> {
        self.spec.bars.iter().find(|b| u32::from(b.index) == index)
    }

    fn irq_count(&self, index: u32) -> io::Result<u32> {
        Ok(match index {
            INTX_IRQ => u32::from(self.spec.intx),
            MSI_IRQ => u32::from(self.spec.msi),
            MSIX_IRQ => self.spec.msix.map_or(0, |m| u32::from(m.vectors)),
            3 | 4 => 1,
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        })
    }
}

impl VfioDeviceIo for FakeVfio {
    fn device_info(&self) -> io::Result<DeviceInfo> {
        self.check(FakeOp::DeviceInfo)?;
        Ok(*self.info.lock().unwrap())
    }

    fn region_info(&self, index: u32) -> io::Result<RegionInfo> {
        self.check(FakeOp::RegionInfo)?;
        let rw = REGION_READ | REGION_WRITE;
        Ok(match index {
            0..=5 => match self.bar(index) {
                Some(b) => RegionInfo {
                    flags: rw | if b.mmap { REGION_MMAP } else { 0 },
                    size: b.size,
                    areas: b.sparse.clone(),
                },
                None => RegionInfo::default(),
            },
            ROM_REGION => RegionInfo {
                flags: REGION_READ,
                size: self.spec.rom,
                areas: Vec::new(),
            },
            CONFIG_REGION => RegionInfo {
                flags: rw,
                size: 4096,
                areas: Vec::new(),
            },
            8 => RegionInfo::default(),
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        })
    }

    fn region_read(&self, index: u32, offset: u64, data: &mut [u8]) -> io::Result<()> {
        self.check(FakeOp::RegionRead)?;
        if index == CONFIG_REGION {
            let cfg = self.config.lock().unwrap();
            let at = usize::try_from(offset).unwrap_or(usize::MAX);
            let src = cfg
                .get(at..at.saturating_add(data.len()))
                .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            data.copy_from_slice(src);
            return Ok(());
        }
        let bytes = self.bytes.lock().unwrap();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(&(index, offset + i as u64)).copied().unwrap_or(0);
        }
        Ok(())
    }

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check(FakeOp::RegionWrite)?;
        self.record(Call::RegionWrite {
            index,
            offset,
            data: data.to_vec(),
        });
        if index == CONFIG_REGION {
            let mut cfg = self.config.lock().unwrap();
            let at = usize::try_from(offset).unwrap_or(usize::MAX);
            if let Some(dst) = cfg.get_mut(at..at.saturating_add(data.len())) {
                dst.copy_from_slice(data);
            }
            return Ok(());
        }
        let mut bytes = self.bytes.lock().unwrap();
        for (i, &b) in data.iter().enumerate() {
            bytes.insert((index, offset + i as u64), b);
        }
        Ok(())
    }

    fn region_mmap(&self, index: u32, area: MmapArea) -> io::Result<MmapRegion> {
        self.check(FakeOp::Mmap)?;
        self.record(Call::Mmap { index, area });
        let size =
            usize::try_from(area.size).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        MmapRegion::new(size).map_err(io::Error::other)
    }

    fn irq_info(&self, index: u32) -> io::Result<IrqInfo> {
        self.check(FakeOp::IrqInfo)?;
        Ok(IrqInfo {
            flags: 0,
            count: self.irq_count(index)?,
        })
    }

    fn set_irq_eventfds(&self, index: u32, start: u32, fds: &[&EventFd]) -> io::Result<()> {
        self.check(FakeOp::SetIrqs)?;
        let count = self.irq_count(index)?;
        if u64::from(start) + fds.len() as u64 > u64::from(count) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        self.record(Call::SetIrqs {
            index,
            start,
            fds: fds.iter().map(|f| f.as_raw_fd()).collect(),
        });
        let mut held = self.held.lock().unwrap();
        for (i, f) in fds.iter().enumerate() {
            held.insert((index, start + i as u32), f.try_clone()?);
        }
        Ok(())
    }

    fn disable_irqs(&self, index: u32) -> io::Result<()> {
        self.check(FakeOp::DisableIrqs)?;
        self.record(Call::DisableIrqs { index });
        self.held.lock().unwrap().retain(|k, _| k.0 != index);
        Ok(())
    }

    fn set_unmask_eventfd(&self, index: u32, fd: &EventFd) -> io::Result<()> {
        self.check(FakeOp::UnmaskFd)?;
        self.record(Call::UnmaskFd {
            index,
            fd: fd.as_raw_fd(),
        });
        Ok(())
    }

    fn unmask(&self, index: u32) -> io::Result<()> {
        self.check(FakeOp::Unmask)?;
        self.record(Call::Unmask { index });
        Ok(())
    }

    fn reset(&self) -> io::Result<()> {
        self.check(FakeOp::Reset)?;
        self.record(Call::Reset);
        Ok(())
    }
}

impl DmaMapper for FakeVfio {
    fn map(&self, region: &DmaRegion) -> io::Result<()> {
        self.check(FakeOp::DmaMap)?;
        self.record(Call::DmaMap(*region));
        Ok(())
    }

    fn unmap(&self, iova: u64, size: u64) -> io::Result<()> {
        self.check(FakeOp::DmaUnmap)?;
        self.record(Call::DmaUnmap { iova, size });
        Ok(())
    }
}

/// MSI vectors with real eventfds as irqfds; routes and triggers recorded.
pub struct FakeMsiIrqfds {
    pub msi: FakeMsi,
    fds: Vec<EventFd>,
}

impl FakeMsiIrqfds {
    pub fn new(count: u16) -> io::Result<Self> {
        Ok(Self {
            msi: FakeMsi::new(count),
            fds: (0..count)
                .map(|_| EventFd::new(EFD_NONBLOCK))
                .collect::<io::Result<_>>()?,
        })
    }

    pub fn fd(&self, v: u16) -> RawFd {
        self.fds[usize::from(v)].as_raw_fd()
    }

    /// Whether vector `v`'s irqfd was signalled since the last look.
    pub fn fired(&self, v: u16) -> bool {
        self.fds[usize::from(v)].read().is_ok()
    }
}

impl MsiVectors for FakeMsiIrqfds {
    fn count(&self) -> u16 {
        self.msi.count()
    }
    fn route(&self, v: u16, msg: Option<MsiMessage>) -> io::Result<()> {
        self.msi.route(v, msg)
    }
    fn trigger(&self, v: u16) -> io::Result<()> {
        self.msi.trigger(v)
    }
}

impl MsiIrqfds for FakeMsiIrqfds {
    fn irqfd(&self, v: u16) -> io::Result<&EventFd> {
        self.fds
            .get(usize::from(v))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))
    }
}

/// Hands out `FakeMsiIrqfds` and keeps them for inspection, in order.
#[derive(Default)]
pub struct FakeMsiAlloc {
    pub given: Mutex<Vec<Arc<FakeMsiIrqfds>>>,
    pub fail: AtomicBool,
}

impl FakeMsiAlloc {
    /// The `i`th allocation.
    pub fn get(&self, i: usize) -> Arc<FakeMsiIrqfds> {
        self.given.lock().unwrap()[i].clone()
    }
}

impl MsiAllocator for FakeMsiAlloc {
    fn msi_irqfds(&self, count: u16) -> io::Result<Arc<dyn MsiIrqfds>> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(io::Error::other("fake: no GSIs left"));
        }
        let v = Arc::new(FakeMsiIrqfds::new(count)?);
        self.given.lock().unwrap().push(v.clone());
        Ok(v)
    }
}

/// An INTx trigger/resample pair.
pub struct FakeIntxIrqfds {
    pub trigger: EventFd,
    pub resample: EventFd,
}

impl FakeIntxIrqfds {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            trigger: EventFd::new(EFD_NONBLOCK)?,
            resample: EventFd::new(EFD_NONBLOCK)?,
        })
    }
}

impl IntxIrqfds for FakeIntxIrqfds {
    fn trigger(&self) -> &EventFd {
        &self.trigger
    }
    fn resample(&self) -> &EventFd {
        &self.resample
    }
}

/// The slots mapped now, as (slot, gpa, len), and failures on request.
#[derive(Default)]
pub struct FakeSlots {
    mapped: Mutex<Vec<(u32, u64, u64)>>,
    next: AtomicU32,
    pub fail: AtomicBool,
}

impl FakeSlots {
    /// (gpa, len) of every mapped slot, sorted.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut v: Vec<_> = self
            .mapped
            .lock()
            .unwrap()
            .iter()
            .map(|m| (m.1, m.2))
            .collect();
        v.sort_unstable();
        v
    }
}

impl MemSlots for FakeSlots {
    fn map(&self, gpa: u64, host: &Arc<MmapRegion>) -> io::Result<u32> {
        if self.fail.load(Ordering::Relaxed) {
            return Err(io::Error::other("fake: no memory slot left"));
        }
        let slot = self.next.fetch_add(1, Ordering::Relaxed);
        self.mapped
            .lock()
            .unwrap()
            .push((slot, gpa, host.size() as u64));
        Ok(slot)
    }

    fn unmap(&self, slot: u32) -> io::Result<()> {
        let mut m = self.mapped.lock().unwrap();
        let before = m.len();
        m.retain(|s| s.0 != slot);
        if m.len() == before {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(())
    }
}
