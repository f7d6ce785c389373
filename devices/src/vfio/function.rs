//! `VfioPciFunction`: an assigned device as a PCI function on the root.
//!
//! Configuration space is the device's own, read and written through the
//! backend, except what the model emulates: the command register's decode
//! bits (shadowed, and also passed on), the six BARs and the ROM base (the
//! guest places them here; the device is reached by region offset, so its
//! own BAR registers are never written), the capability pointers (see
//! `caps`), the interrupt line and pin, MSI (`msi`) and the MSI-X control
//! word, table and PBA (`msix`). Extended configuration space reads as
//! zero: no extended capability is offered.
//!
//! Interrupts: INTx at start (its trigger eventfd and KVM's resample
//! eventfd as the device's unmask), switched to MSI or MSI-X when the guest
//! enables one, and back when it disables it. BAR accesses trap to the
//! backend, except the mappable areas of memory BARs, which become guest
//! memory slots (`sync_slots`, called by the VMM after it placed the BARs
//! and on every `BarsMoved`), minus the pages that hold the MSI-X table and
//! PBA. All guest RAM is DMA-mapped at start.
//!
//! A failing backend call on a guest access is logged (rate-limited) and
//! the guest reads all-ones; set-up failures are `VfioError`s.

use std::collections::HashMap;
use std::sync::Arc;

use vm_memory::{GuestMemoryMmap, MmapRegion};

use super::bars::{self, BarSpec, Rom, ROM_BAR};
use super::caps::{CapList, CAP_MSI, CAP_MSIX};
use super::dma::{ram_regions, DmaMapper, DmaRegion};
use super::io::{
    MmapArea, VfioDeviceIo, CONFIG_REGION, DEVICE_FLAGS_PCI, DEVICE_FLAGS_RESET, INTX_IRQ,
    MIN_PCI_REGIONS, MSI_IRQ,
};
use super::msi::MsiCap;
use super::msix::{table_size, VfioMsix};
use super::seams::{IntxIrqfds, MemSlots, MsiAllocator, MsiIrqfds};
use super::{VfioError, WarnLimit};
use crate::bus::BusAction;
use crate::pci::config::{CMD_MEMORY, COMMAND, INTERRUPT_LINE, STATUS, STATUS_CAP_LIST};
use crate::pci::{BarKind, BarRange, MsixLayout, PciConfig, PciDevice, PciIds};

/// The legacy configuration space the model serves.
const LEGACY: u16 = 256;
const PAGE: u64 = 4096;

/// What the model needs to build an assigned function.
pub struct VfioPciParams<'a> {
    /// For logs and errors, e.g. `vfio-user0` or `0000:01:00.0`.
    pub name: String,
    pub io: Arc<dyn VfioDeviceIo>,
    pub dma: Arc<dyn DmaMapper>,
    pub mem: &'a GuestMemoryMmap,
    pub msi: &'a dyn MsiAllocator,
    /// The INTA# line; `None` offers no INTx (interrupt pin 0).
    pub intx: Option<Arc<dyn IntxIrqfds>>,
    /// What the Interrupt Line register holds (the GSI of INTA#).
    pub intx_line: u8,
    pub slots: Arc<dyn MemSlots>,
}

/// Which of the device's interrupt kinds is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IrqMode {
    None,
    Intx,
    Msi,
    Msix,
}

/// A mappable BAR area mapped into the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SlotArea {
    bar: u8,
    offset: u64,
    gpa: u64,
    slot: u32,
}

/// See the module doc.
pub struct VfioPciFunction {
    name: String,
    io: Arc<dyn VfioDeviceIo>,
    dma: Arc<dyn DmaMapper>,
    slots: Arc<dyn MemSlots>,
    can_reset: bool,
    shadow: PciConfig,
    bars: Vec<BarSpec>,
    rom: Option<Rom>,
    caps: CapList,
    msi: Option<(MsiCap, Arc<dyn MsiIrqfds>)>,
    msix: Option<VfioMsix>,
    intx: Option<Arc<dyn IntxIrqfds>>,
    mode: IrqMode,
    dma_mapped: Vec<DmaRegion>,
    mappings: HashMap<(u8, u64), Arc<MmapRegion>>,
    mapped: Vec<SlotArea>,
    warn: WarnLimit,
}

fn u16_at(cfg: &[u8], at: usize) -> u16 {
    cfg.get(at..at + 2)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(cfg: &[u8], at: usize) -> u32 {
    cfg.get(at..at + 4)
        .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn ids_of(cfg: &[u8]) -> PciIds {
    PciIds {
        vendor: u16_at(cfg, 0),
        device: u16_at(cfg, 2),
        revision: cfg[8],
        prog_if: cfg[9],
        subclass: cfg[0x0a],
        class: cfg[0x0b],
        subsys_vendor: u16_at(cfg, 0x2c),
        subsys_id: u16_at(cfg, 0x2e),
    }
}

impl VfioPciFunction {
    /// Read the device, build the model, reset the device, DMA-map all of
    /// guest RAM and wire INTx. BARs get addresses with `place_bar`.
    pub fn new(p: VfioPciParams<'_>) -> Result<Self, VfioError> {
        let name = p.name;
        let io = p.io;
        let be = |op| {
            let name = name.clone();
            move |source| VfioError::backend(&name, op, source)
        };
        let info = io.device_info().map_err(be("device info"))?;
        if info.flags & DEVICE_FLAGS_PCI == 0 {
            return Err(VfioError::NotPci {
                device: name,
                flags: info.flags,
            });
        }
        if info.num_regions < MIN_PCI_REGIONS {
            return Err(VfioError::TooFewRegions {
                device: name,
                count: info.num_regions,
                min: MIN_PCI_REGIONS,
            });
        }
        let cfg_info = io
            .region_info(CONFIG_REGION)
            .map_err(be("configuration region info"))?;
        if cfg_info.size < u64::from(LEGACY) {
            return Err(VfioError::ConfigTooSmall {
                device: name,
                size: cfg_info.size,
            });
        }
        let mut cfg = vec![0u8; usize::from(LEGACY)];
        io.region_read(CONFIG_REGION, 0, &mut cfg)
            .map_err(be("configuration space read"))?;

        let mut shadow = PciConfig::new(&ids_of(&cfg));
        let bars = bars::discover(io.as_ref(), &name, &cfg)?;
        for b in &bars {
            shadow
                .declare_bar(b.index, b.kind, b.size)
                .map_err(|source| VfioError::BarDecl {
                    device: name.clone(),
                    index: b.index,
                    source,
                })?;
        }
        let rom = Rom::discover(io.as_ref(), &name)?;
        let has_list = u16_at(&cfg, usize::from(STATUS)) & STATUS_CAP_LIST != 0;
        let caps = CapList::parse(&cfg, has_list);

        let msix = match caps.find(CAP_MSIX) {
            None => None,
            Some(c) => {
                let at = usize::from(c.offset);
                let ctrl = u16_at(&cfg, at + 2);
                let (table, pba) = (u32_at(&cfg, at + 4), u32_at(&cfg, at + 8));
                let layout = MsixLayout {
                    table_bar: (table & 0x7) as u8,
                    table_offset: table & !0x7,
                    pba_bar: (pba & 0x7) as u8,
                    pba_offset: pba & !0x7,
                };
                let n = table_size(ctrl);
                check_inside(
                    &name,
                    &bars,
                    "table",
                    layout.table_bar,
                    layout.table_offset,
                    u64::from(n) * 16,
                )?;
                check_inside(
                    &name,
                    &bars,
                    "PBA",
                    layout.pba_bar,
                    layout.pba_offset,
                    u64::from(n).div_ceil(64) * 8,
                )?;
                let vectors = p.msi.msi_irqfds(n).map_err(be("MSI-X vector allocation"))?;
                Some(
                    VfioMsix::new(u16::from(c.offset), ctrl, layout, vectors)
                        .map_err(be("MSI-X pending eventfds"))?,
                )
            }
        };
        let msi = match caps.find(CAP_MSI) {
            None => None,
            Some(c) => {
                let ctrl = u16_at(&cfg, usize::from(c.offset) + 2);
                let vectors = p.msi.msi_irqfds(1).map_err(be("MSI vector allocation"))?;
                Some((MsiCap::new(u16::from(c.offset), ctrl), vectors))
            }
        };
        let pin = cfg[usize::from(INTERRUPT_LINE) + 1];
        let intx_count = io.irq_info(INTX_IRQ).map_err(be("INTx irq info"))?.count;
        let intx = p.intx.filter(|_| pin != 0 && intx_count > 0);
        shadow.set_interrupt(p.intx_line, u8::from(intx.is_some()));

        let mut f = Self {
            name,
            io,
            dma: p.dma,
            slots: p.slots,
            can_reset: info.flags & DEVICE_FLAGS_RESET != 0,
            shadow,
            bars,
            rom,
            caps,
            msi,
            msix,
            intx,
            mode: IrqMode::None,
            dma_mapped: Vec::new(),
            mappings: HashMap::new(),
            mapped: Vec::new(),
            warn: WarnLimit::default(),
        };
        f.reset_device()?;
        f.map_ram(p.mem)?;
        f.set_mode(f.idle_mode())?;
        Ok(f)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every BAR the guest sees (the ROM as index 6), with kind and size,
    /// for the VMM to give addresses.
    pub fn bar_specs(&self) -> Vec<(u8, BarKind, u64)> {
        let mut v: Vec<_> = self
            .bars
            .iter()
            .map(|b| (b.index, b.kind, b.size))
            .collect();
        if let Some(r) = &self.rom {
            v.push((ROM_BAR, BarKind::Mem32, r.size));
        }
        v
    }

    /// Give BAR `index` (6: the ROM) its address, as firmware would.
    pub fn place_bar(&mut self, index: u8, addr: u64) -> Result<(), VfioError> {
        if index == ROM_BAR {
            let rom = self.rom.as_mut().ok_or(VfioError::NoSuchBar {
                device: self.name.clone(),
                index,
            })?;
            let a = u32::try_from(addr).map_err(|_| VfioError::BarSize {
                device: self.name.clone(),
                index,
                size: rom.size,
            })?;
            rom.place(a);
            return Ok(());
        }
        self.shadow
            .set_bar_addr(index, addr)
            .map_err(|source| VfioError::BarDecl {
                device: self.name.clone(),
                index,
                source,
            })
    }

    /// Set the command register as firmware leaves it (decode, bus
    /// master), on the shadow and on the device.
    pub fn set_command(&mut self, cmd: u16) -> Result<(), VfioError> {
        self.shadow.set_command(cmd);
        self.io
            .region_write(
                CONFIG_REGION,
                u64::from(COMMAND),
                &self.shadow.command().to_le_bytes(),
            )
            .map_err(|source| VfioError::backend(&self.name, "command register write", source))
    }

    fn idle_mode(&self) -> IrqMode {
        if self.intx.is_some() {
            IrqMode::Intx
        } else {
            IrqMode::None
        }
    }

    fn reset_device(&mut self) -> Result<(), VfioError> {
        if self.can_reset {
            self.io
                .reset()
                .map_err(|source| VfioError::backend(&self.name, "device reset", source))?;
        }
        Ok(())
    }

    fn map_ram(&mut self, mem: &GuestMemoryMmap) -> Result<(), VfioError> {
        for r in ram_regions(mem) {
            if let Err(source) = self.dma.map(&r) {
                self.unmap_ram();
                return Err(VfioError::DmaMap {
                    device: self.name.clone(),
                    iova: r.iova,
                    size: r.size,
                    source,
                });
            }
            self.dma_mapped.push(r);
        }
        Ok(())
    }

    fn unmap_ram(&mut self) {
        for r in std::mem::take(&mut self.dma_mapped) {
            if let Err(e) = self.dma.unmap(r.iova, r.size) {
                log::warn!(
                    "VFIO device {}: DMA unmap of {:#x}+{:#x}: {e}",
                    self.name,
                    r.iova,
                    r.size
                );
            }
        }
    }

    /// Switch the device's interrupts to `want`, turning the current kind
    /// off first (VFIO allows one kind at a time).
    fn set_mode(&mut self, want: IrqMode) -> Result<(), VfioError> {
        let be = |op| {
            let name = self.name.clone();
            move |source| VfioError::backend(&name, op, source)
        };
        if want == self.mode {
            return match (want, &mut self.msix, &self.msi) {
                (IrqMode::Msix, Some(m), _) => m.sync(self.io.as_ref()).map_err(be("MSI-X update")),
                (IrqMode::Msi, _, Some((cap, v))) => {
                    v.route(0, Some(cap.message())).map_err(be("MSI route"))
                }
                _ => Ok(()),
            };
        }
        match self.mode {
            IrqMode::None => {}
            IrqMode::Intx => self.io.disable_irqs(INTX_IRQ).map_err(be("INTx disable"))?,
            IrqMode::Msi => {
                if let Some((_, v)) = &self.msi {
                    v.route(0, None).map_err(be("MSI route"))?;
                }
                self.io.disable_irqs(MSI_IRQ).map_err(be("MSI disable"))?;
            }
            IrqMode::Msix => {
                if let Some(m) = &mut self.msix {
                    m.disable(self.io.as_ref()).map_err(be("MSI-X disable"))?;
                }
            }
        }
        self.mode = IrqMode::None;
        match want {
            IrqMode::None => {}
            IrqMode::Intx => {
                if let Some(l) = &self.intx {
                    self.io
                        .set_irq_eventfds(INTX_IRQ, 0, &[l.trigger()])
                        .map_err(be("INTx eventfd"))?;
                    self.io
                        .set_unmask_eventfd(INTX_IRQ, l.resample())
                        .map_err(be("INTx resample eventfd"))?;
                }
            }
            IrqMode::Msi => {
                if let Some((cap, v)) = &self.msi {
                    v.route(0, Some(cap.message())).map_err(be("MSI route"))?;
                    let fd = v.irqfd(0).map_err(be("MSI irqfd"))?;
                    self.io
                        .set_irq_eventfds(MSI_IRQ, 0, &[fd])
                        .map_err(be("MSI eventfd"))?;
                }
            }
            IrqMode::Msix => {
                if let Some(m) = &mut self.msix {
                    m.sync(self.io.as_ref()).map_err(be("MSI-X enable"))?;
                }
            }
        }
        self.mode = want;
        Ok(())
    }

    /// The kind the guest's MSI and MSI-X enables ask for.
    fn wanted_mode(&self) -> IrqMode {
        if self.msix.as_ref().is_some_and(|m| m.enabled()) {
            IrqMode::Msix
        } else if self.msi.as_ref().is_some_and(|(c, _)| c.enabled()) {
            IrqMode::Msi
        } else {
            self.idle_mode()
        }
    }

    fn update_irqs(&mut self) {
        if let Err(e) = self.set_mode(self.wanted_mode()) {
            if self.warn.allow() {
                log::warn!("{e}: {}", error_chain(&e));
            }
        }
    }

    /// Device reset: on guest reset. Interrupts go back to INTx, MSI and
    /// MSI-X to their power-on state; BAR addresses stay.
    pub fn reset(&mut self) -> Result<(), VfioError> {
        self.set_mode(self.idle_mode())?;
        if let Some(m) = &mut self.msix {
            m.reset();
        }
        if let Some((c, _)) = &mut self.msi {
            c.reset();
        }
        self.reset_device()
    }

    /// The areas of memory BAR `b` at `addr` to map as slots: its mappable
    /// areas, page-aligned, minus the MSI-X table and PBA pages.
    fn slot_areas(&self, b: &BarSpec) -> Vec<MmapArea> {
        let mut holes = Vec::new();
        if let Some(m) = &self.msix {
            if m.layout.table_bar == b.index {
                holes.push((u64::from(m.layout.table_offset), m.table_len()));
            }
            if m.layout.pba_bar == b.index {
                holes.push((u64::from(m.layout.pba_offset), m.pba_len()));
            }
        }
        let mut out = Vec::new();
        for a in &b.areas {
            let end = a.offset.saturating_add(a.size).min(b.region_size);
            carve(a.offset, end, &holes, &mut out);
        }
        out
    }

    /// Make the guest's memory slots match where the memory BARs decode
    /// now: unmap areas that moved away, map areas at their new address.
    /// A failure leaves that area trapping (correct, only slower).
    pub fn sync_slots(&mut self) -> Result<(), VfioError> {
        let mut want = Vec::new();
        for r in self.shadow.active_bars() {
            let Some(b) = self.bars.iter().find(|b| b.index == r.index) else {
                continue;
            };
            if r.kind.is_io() {
                continue;
            }
            for a in self.slot_areas(b) {
                want.push((r.index, a, r.addr + a.offset));
            }
        }
        let mut first_err = None;
        let mut kept = Vec::new();
        for s in std::mem::take(&mut self.mapped) {
            if want
                .iter()
                .any(|&(bar, a, gpa)| (bar, a.offset, gpa) == (s.bar, s.offset, s.gpa))
            {
                kept.push(s);
            } else if let Err(source) = self.slots.unmap(s.slot) {
                first_err.get_or_insert(VfioError::Slot {
                    device: self.name.clone(),
                    bar: s.bar,
                    gpa: s.gpa,
                    source,
                });
            }
        }
        self.mapped = kept;
        for (bar, a, gpa) in want {
            if self
                .mapped
                .iter()
                .any(|s| (s.bar, s.offset) == (bar, a.offset))
            {
                continue;
            }
            match self.map_area(bar, a, gpa) {
                Ok(slot) => self.mapped.push(SlotArea {
                    bar,
                    offset: a.offset,
                    gpa,
                    slot,
                }),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn map_area(&mut self, bar: u8, a: MmapArea, gpa: u64) -> Result<u32, VfioError> {
        let slot_err = |source| VfioError::Slot {
            device: self.name.clone(),
            bar,
            gpa,
            source,
        };
        let host = match self.mappings.get(&(bar, a.offset)) {
            Some(m) => m.clone(),
            None => {
                let m = Arc::new(self.io.region_mmap(u32::from(bar), a).map_err(slot_err)?);
                self.mappings.insert((bar, a.offset), m.clone());
                m
            }
        };
        self.slots.map(gpa, &host).map_err(slot_err)
    }

    /// Where configuration byte `p` comes from.
    fn owner(&self, p: u16) -> Owner {
        if (COMMAND..COMMAND + 2).contains(&p) {
            return Owner::Command;
        }
        if (0x10..0x28).contains(&p) {
            return Owner::Bar;
        }
        if (0x30..0x34).contains(&p) {
            return Owner::Rom;
        }
        if p == 0x34 {
            return Owner::Fixed(self.caps.first());
        }
        if p == STATUS {
            return Owner::Status;
        }
        if p == INTERRUPT_LINE {
            return Owner::Line;
        }
        if p == INTERRUPT_LINE + 1 {
            return Owner::Fixed(u8::from(self.intx.is_some()));
        }
        if let Some(n) = self.caps.next_pointer_at(p) {
            return Owner::Fixed(n);
        }
        if self.msi.as_ref().is_some_and(|(c, _)| c.covers(p)) {
            return Owner::Msi;
        }
        if let Some(m) = &self.msix {
            let at = m.ctrl_offset();
            if (at..at + 2).contains(&p) {
                return Owner::MsixCtrl((p - at) as usize);
            }
        }
        Owner::Device
    }

    fn emulated_byte(&self, p: u16, device: u8) -> u8 {
        let mut b = [0u8];
        match self.owner(p) {
            Owner::Device => device,
            Owner::Command | Owner::Bar | Owner::Line => {
                self.shadow.read(p, &mut b);
                b[0]
            }
            Owner::Status => {
                let caps = if self.caps.kept.is_empty() {
                    0
                } else {
                    STATUS_CAP_LIST as u8
                };
                (device & !(STATUS_CAP_LIST as u8)) | caps
            }
            Owner::Rom => {
                let reg = self.rom.map_or(0, |r| r.reg());
                reg.to_le_bytes()[usize::from(p - 0x30)]
            }
            Owner::Fixed(v) => v,
            Owner::Msi => self.msi.as_ref().map_or(0, |(c, _)| c.read_byte(p)),
            Owner::MsixCtrl(i) => self.msix.as_ref().map_or(0, |m| m.ctrl().to_le_bytes()[i]),
        }
    }

    fn warn_io(&mut self, what: &str, e: &std::io::Error) {
        if self.warn.allow() {
            log::warn!("VFIO device {}: {what}: {e}", self.name);
        }
    }

    fn region_of(&self, bar: u8) -> Option<(u32, u64)> {
        if bar == ROM_BAR {
            return self.rom.map(|r| (super::io::ROM_REGION, r.region_size));
        }
        let b = self.bars.iter().find(|b| b.index == bar)?;
        Some((u32::from(bar), b.region_size))
    }
}

/// Who answers a configuration byte (see `VfioPciFunction::owner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    Device,
    Command,
    Status,
    Bar,
    Rom,
    Line,
    Fixed(u8),
    Msi,
    MsixCtrl(usize),
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = String::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        if !s.is_empty() {
            s.push_str(": ");
        }
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// `[start, end)` minus `holes` (offset, len), each piece shrunk to whole
/// pages, appended to `out`.
fn carve(start: u64, end: u64, holes: &[(u64, u64)], out: &mut Vec<MmapArea>) {
    let mut pieces = vec![(start, end)];
    for &(off, len) in holes {
        let h0 = off & !(PAGE - 1);
        let h1 = off.saturating_add(len).next_multiple_of(PAGE);
        pieces = pieces
            .into_iter()
            .flat_map(|(a, b)| {
                if h1 <= a || b <= h0 {
                    vec![(a, b)]
                } else {
                    vec![(a, h0.max(a)), (h1.min(b), b)]
                }
            })
            .collect();
    }
    for (a, b) in pieces {
        let a = a.next_multiple_of(PAGE);
        let b = b & !(PAGE - 1);
        if a < b {
            out.push(MmapArea {
                offset: a,
                size: b - a,
            });
        }
    }
}

fn check_inside(
    name: &str,
    bars: &[BarSpec],
    what: &'static str,
    bar: u8,
    offset: u32,
    len: u64,
) -> Result<(), VfioError> {
    let fits = bars
        .iter()
        .find(|b| b.index == bar && !b.kind.is_io())
        .is_some_and(|b| u64::from(offset) + len <= b.region_size);
    if fits {
        Ok(())
    } else {
        Err(VfioError::MsixOutside {
            device: name.to_string(),
            what,
            bar,
            offset: u64::from(offset),
        })
    }
}

impl PciDevice for VfioPciFunction {
    fn name(&self) -> &str {
        &self.name
    }

    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        if offset >= LEGACY {
            data.fill(0);
            return;
        }
        let len = data.len().min(usize::from(LEGACY - offset));
        data.fill(0xff);
        let mut dev = vec![0xffu8; len];
        if let Err(e) = self
            .io
            .region_read(CONFIG_REGION, u64::from(offset), &mut dev)
        {
            self.warn_io("configuration read", &e);
            dev.fill(0xff);
        }
        for (i, &d) in dev.iter().enumerate() {
            data[i] = self.emulated_byte(offset + i as u16, d);
        }
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) -> BusAction {
        if offset >= LEGACY {
            return BusAction::None;
        }
        let data = &data[..data.len().min(usize::from(LEGACY - offset))];
        let owners: Vec<Owner> = (0..data.len())
            .map(|i| self.owner(offset + i as u16))
            .collect();
        if owners.iter().all(|o| *o == Owner::Device) {
            if let Err(e) = self.io.region_write(CONFIG_REGION, u64::from(offset), data) {
                self.warn_io("configuration write", &e);
            }
            return BusAction::None;
        }
        let mut irqs = false;
        let mut msix_ctrl = self.msix.as_ref().map(|m| m.ctrl().to_le_bytes());
        let mut rom_reg = self.rom.map(|r| r.reg().to_le_bytes());
        for (i, (&v, o)) in data.iter().zip(owners).enumerate() {
            let p = offset + i as u16;
            match o {
                Owner::Device | Owner::Status => {
                    if let Err(e) = self.io.region_write(CONFIG_REGION, u64::from(p), &[v]) {
                        self.warn_io("configuration write", &e);
                    }
                }
                Owner::Command => {
                    self.shadow.write(p, &[v]);
                    let b = self.shadow.command().to_le_bytes()[usize::from(p - COMMAND)];
                    if let Err(e) = self.io.region_write(CONFIG_REGION, u64::from(p), &[b]) {
                        self.warn_io("command write", &e);
                    }
                }
                Owner::Bar | Owner::Line => self.shadow.write(p, &[v]),
                Owner::Rom => {
                    if let Some(r) = rom_reg.as_mut() {
                        r[usize::from(p - 0x30)] = v;
                    }
                }
                Owner::Fixed(_) => {}
                Owner::Msi => {
                    if let Some((c, _)) = &mut self.msi {
                        c.write_byte(p, v);
                        irqs = true;
                    }
                }
                Owner::MsixCtrl(k) => {
                    if let Some(c) = msix_ctrl.as_mut() {
                        c[k] = v;
                        irqs = true;
                    }
                }
            }
        }
        if let (Some(r), Some(reg)) = (self.rom.as_mut(), rom_reg) {
            r.write(u32::from_le_bytes(reg));
        }
        if let (Some(m), Some(c)) = (self.msix.as_mut(), msix_ctrl) {
            m.set_ctrl(u16::from_le_bytes(c));
        }
        if irqs {
            self.update_irqs();
        }
        BusAction::None
    }

    fn active_bars(&self) -> Vec<BarRange> {
        let mut v = self.shadow.active_bars();
        if let Some(r) = &self.rom {
            if let Some(addr) = r
                .decodes_at()
                .filter(|_| self.shadow.command() & CMD_MEMORY != 0)
            {
                v.push(BarRange {
                    index: ROM_BAR,
                    kind: BarKind::Mem32,
                    addr,
                    size: r.size,
                });
            }
        }
        v
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        if let Some(m) = &mut self.msix {
            if m.in_table(bar, offset) {
                m.table_read(offset, data);
                return;
            }
            if m.in_pba(bar, offset) {
                m.pba_read(offset, data);
                return;
            }
        }
        let Some((region, size)) = self.region_of(bar) else {
            return;
        };
        if offset.saturating_add(data.len() as u64) > size {
            return;
        }
        if let Err(e) = self.io.region_read(region, offset, data) {
            self.warn_io("BAR read", &e);
            data.fill(0xff);
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) -> BusAction {
        if let Some(m) = &mut self.msix {
            if m.in_table(bar, offset) {
                m.table_write(offset, data);
                self.update_irqs();
                return BusAction::None;
            }
            if m.in_pba(bar, offset) {
                return BusAction::None;
            }
        }
        let Some((region, size)) = self.region_of(bar) else {
            return BusAction::None;
        };
        if bar == ROM_BAR || offset.saturating_add(data.len() as u64) > size {
            return BusAction::None;
        }
        if let Err(e) = self.io.region_write(region, offset, data) {
            self.warn_io("BAR write", &e);
        }
        BusAction::None
    }
}

impl Drop for VfioPciFunction {
    fn drop(&mut self) {
        for s in std::mem::take(&mut self.mapped) {
            if let Err(e) = self.slots.unmap(s.slot) {
                log::warn!("VFIO device {}: slot at {:#x}: {e}", self.name, s.gpa);
            }
        }
        self.unmap_ram();
    }
}
