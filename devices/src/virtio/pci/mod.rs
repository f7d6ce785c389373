//! The virtio 1.x PCI transport (modern only) as a `PciDevice`.
//!
//! Owns the function's configuration space (ids, one 64-bit BAR 0, the
//! virtio and MSI-X capabilities), the BAR 0 layout (`caps`), the common
//! configuration registers (`common_cfg`), interrupt routing (`irq`) and
//! the queue notification ioeventfds, which it re-registers whenever the
//! guest moves BAR 0 or turns memory decode off. The device's lifecycle
//! (DRIVER_OK, reset) is returned as `PlatformRequest::Virtio` and carried
//! out by the control thread through `common::Activation`, as in
//! virtio-mmio. Runs on vCPU threads under the function's own lock; the
//! worker only touches the shared `PciIrq`.

mod caps;
mod common_cfg;
mod irq;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::{Arc, Mutex};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub use caps::VIRTIO_PCI_BAR_SIZE;
use caps::{PciCfgCap, ISR_OFFSET, MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET, NOTIFY_OFFSET};
pub use irq::VIRTIO_MSI_NO_VECTOR;
use irq::{lock, PciIrq};

use super::common::{Activation, StatusChange, VirtioCommonState, VirtioLifecycle};
use super::{VirtioDevice, WorkerHost, TYPE_BLOCK};
use crate::bus::{BusAction, DeviceKey};
use crate::pci::config::{self, overlaps, CMD_BUS_MASTER, CMD_INTX_DISABLE, CMD_MEMORY};
use crate::pci::msix::{MsixCap, MsixLayout, MsixState};
use crate::pci::{
    BarKind, BarRange, IntxLine, IoEvents, IoSpace, MsiVectors, PciConfig, PciDevice, PciIds,
};

const VIRTIO_VENDOR: u16 = 0x1af4;
/// Modern devices are 0x1040 + the virtio device type.
const DEVICE_ID_BASE: u16 = 0x1040;
const SUBSYS_ID: u16 = 0x1100;
/// The MSI-X table page holds 256 entries: one per queue plus config.
const MAX_VECTORS: u16 = 256;
const MAX_QUEUES: usize = MAX_VECTORS as usize - 1;

/// Everything the VMM hands a virtio PCI function.
pub struct VirtioPciParams {
    pub dev: Box<dyn VirtioDevice>,
    pub mem: GuestMemoryMmap,
    /// One per queue, in queue order.
    pub notify: Vec<EventFd>,
    /// `count()` should be `msix_vectors_for(queues)`.
    pub msix: Arc<dyn MsiVectors>,
    pub intx: Arc<dyn IntxLine>,
    /// Interrupt Line register value (the GSI).
    pub intx_line: u8,
    /// Interrupt Pin register value, 1 = INTA#.
    pub intx_pin: u8,
    pub ioevents: Arc<dyn IoEvents>,
    /// Names this function in the lifecycle requests it returns.
    pub key: DeviceKey,
    /// BAR 0's initial address, `VIRTIO_PCI_BAR_SIZE` aligned.
    pub bar_addr: u64,
}

/// MSI-X vectors a function with `num_queues` queues wants: one per queue
/// and one for configuration changes.
pub fn msix_vectors_for(num_queues: usize) -> u16 {
    u16::try_from(num_queues.saturating_add(1)).unwrap_or(u16::MAX)
}

/// PCI class, subclass and programming interface per virtio device type,
/// as QEMU presents them.
fn class_of(device_type: u32) -> (u8, u8, u8) {
    match device_type {
        1 => (0x02, 0x00, 0x00),          // network: Ethernet
        TYPE_BLOCK => (0x01, 0x00, 0x00), // mass storage: SCSI
        3 => (0x07, 0x80, 0x00),          // console: other communication
        16 => (0x03, 0x80, 0x00),         // GPU: other display
        _ => (0xff, 0x00, 0x00),          // unclassified
    }
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, why)
}

/// See the module doc.
pub struct VirtioPciTransport {
    key: DeviceKey,
    name: String,
    dev: Box<dyn VirtioDevice>,
    state: VirtioCommonState,
    cfg: PciConfig,
    msix_cap: MsixCap,
    msix: Arc<Mutex<MsixState>>,
    pci_cfg: PciCfgCap,
    irq: Arc<PciIrq>,
    life: Activation,
    ioevents: Arc<dyn IoEvents>,
    /// Where the notify region was when the ioeventfds were last placed.
    notify_at: Option<u64>,
    /// (queue, address) of every notify ioeventfd registered now.
    registered: Vec<(usize, u64)>,
}

impl VirtioPciTransport {
    pub fn new(p: VirtioPciParams) -> io::Result<Self> {
        let name = format!("virtio-{}-pci", p.dev.name());
        let queues = p.dev.queue_max_sizes().len();
        if queues > MAX_QUEUES || p.notify.len() != queues {
            return Err(invalid(format!(
                "{name}: {queues} queues with {} notify eventfds (at most {MAX_QUEUES})",
                p.notify.len()
            )));
        }
        if !(1..=MAX_VECTORS).contains(&p.msix.count()) {
            return Err(invalid(format!(
                "{name}: {} MSI-X vectors (1 to {MAX_VECTORS})",
                p.msix.count()
            )));
        }
        let device = u16::try_from(p.dev.device_type())
            .ok()
            .and_then(|t| DEVICE_ID_BASE.checked_add(t))
            .ok_or_else(|| invalid(format!("{name}: device type out of range")))?;
        let (class, subclass, prog_if) = class_of(p.dev.device_type());
        let mut cfg = PciConfig::new(&PciIds {
            vendor: VIRTIO_VENDOR,
            device,
            revision: 1,
            class,
            subclass,
            prog_if,
            subsys_vendor: VIRTIO_VENDOR,
            subsys_id: SUBSYS_ID,
        });
        let bad = |e: config::PciConfigError| invalid(format!("{name}: {e}"));
        let bar = BarKind::Mem64 {
            prefetchable: false,
        };
        cfg.declare_bar(0, bar, VIRTIO_PCI_BAR_SIZE).map_err(bad)?;
        cfg.set_bar_addr(0, p.bar_addr).map_err(bad)?;
        cfg.set_interrupt(p.intx_line, p.intx_pin);
        cfg.set_command(CMD_MEMORY | CMD_BUS_MASTER);
        let pci_cfg = caps::add_virtio_caps(&mut cfg).map_err(bad)?;
        let msix = MsixState::new(p.msix);
        let layout = MsixLayout {
            table_bar: 0,
            table_offset: MSIX_TABLE_OFFSET as u32,
            pba_bar: 0,
            pba_offset: MSIX_PBA_OFFSET as u32,
        };
        let msix_cap = MsixCap::add(&mut cfg, msix.table_size(), &layout).map_err(bad)?;
        let msix = Arc::new(Mutex::new(msix));
        let mut t = Self {
            state: VirtioCommonState::new(p.dev.as_ref()),
            irq: Arc::new(PciIrq::new(msix.clone(), p.intx, queues)),
            key: p.key,
            name,
            dev: p.dev,
            cfg,
            msix_cap,
            msix,
            pci_cfg,
            life: Activation::new(p.mem, p.notify),
            ioevents: p.ioevents,
            notify_at: None,
            registered: Vec::new(),
        };
        t.update_ioevents();
        Ok(t)
    }

    /// Where queue notifications land now: BAR 0's notify region while
    /// BAR 0 decodes.
    fn notify_base(&self) -> Option<u64> {
        self.cfg
            .active_bars()
            .iter()
            .find(|b| b.index == 0)
            .map(|b| b.addr + NOTIFY_OFFSET)
    }

    /// Move the notify ioeventfds to where BAR 0 decodes now (or drop them
    /// when it does not). A failed registration is logged: notifications
    /// then reach `bar_write`, which forwards them to the same eventfd.
    fn update_ioevents(&mut self) {
        let base = self.notify_base();
        if base == self.notify_at {
            return;
        }
        self.notify_at = base;
        for (q, addr) in std::mem::take(&mut self.registered) {
            if let Some(evt) = self.life.notify().get(q) {
                if let Err(e) = self.ioevents.unregister(evt, IoSpace::Mmio, addr) {
                    log::warn!("{}: queue {q}: unregistering {addr:#x}: {e}", self.name);
                }
            }
        }
        let Some(base) = base else {
            return;
        };
        let step = u64::from(caps::NOTIFY_OFF_MULTIPLIER);
        for (q, evt) in self.life.notify().iter().enumerate() {
            let addr = base + q as u64 * step;
            match self.ioevents.register(evt, IoSpace::Mmio, addr) {
                Ok(()) => self.registered.push((q, addr)),
                Err(e) => log::warn!("{}: queue {q}: registering {addr:#x}: {e}", self.name),
            }
        }
    }

    /// Run the BAR access the PCI_CFG window describes, filling its data.
    fn pci_cfg_read(&mut self) {
        if let Some((off, len)) = self.pci_cfg.access(&self.cfg) {
            let mut buf = [0u8; 4];
            let buf = &mut buf[..len];
            self.read_bar0(off, buf);
            self.pci_cfg.set_data(&mut self.cfg, buf);
        }
    }

    fn pci_cfg_write(&mut self) -> BusAction {
        match self.pci_cfg.access(&self.cfg) {
            Some((off, len)) => {
                let data = self.pci_cfg.data(&self.cfg);
                self.write_bar0(off, &data[..len])
            }
            None => BusAction::None,
        }
    }

    fn read_bar0(&mut self, off: u64, data: &mut [u8]) {
        data.fill(0);
        let page = off & !(caps::REGION_LEN - 1);
        let inner = off - page;
        match page {
            caps::COMMON_OFFSET => self.common_read(inner, data),
            ISR_OFFSET if inner == 0 => {
                if let Some(b) = data.first_mut() {
                    *b = self.irq.take_isr();
                }
            }
            caps::DEVICE_OFFSET => self.dev.read_config(inner, data),
            MSIX_TABLE_OFFSET => lock(&self.msix).table_read(inner, data),
            MSIX_PBA_OFFSET => lock(&self.msix).pba_read(inner, data),
            _ => {}
        }
    }

    fn write_bar0(&mut self, off: u64, data: &[u8]) -> BusAction {
        let page = off & !(caps::REGION_LEN - 1);
        let inner = off - page;
        match page {
            caps::COMMON_OFFSET => return self.common_write(inner, data),
            caps::DEVICE_OFFSET => self.dev.write_config(inner, data),
            NOTIFY_OFFSET if inner.is_multiple_of(u64::from(caps::NOTIFY_OFF_MULTIPLIER)) => {
                self.life
                    .kick(inner / u64::from(caps::NOTIFY_OFF_MULTIPLIER));
            }
            MSIX_TABLE_OFFSET => lock(&self.msix).table_write(inner, data),
            _ => {}
        }
        BusAction::None
    }
}

impl VirtioLifecycle for VirtioPciTransport {
    fn lifecycle(&mut self, change: StatusChange, host: &dyn WorkerHost) {
        let irq = self.irq.clone();
        let pci_irq = &self.irq;
        self.life.apply(
            change,
            self.dev.as_mut(),
            &self.state.queues,
            irq,
            host,
            || pci_irq.reset(),
        );
    }
}

impl PciDevice for VirtioPciTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        if self.pci_cfg.touches_data(offset, data.len()) {
            self.pci_cfg_read();
        }
        self.cfg.set_interrupt_status(self.irq.intx_pending());
        self.cfg.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) -> BusAction {
        self.cfg.write(offset, data);
        self.msix_cap
            .config_written(&self.cfg, offset, data.len(), &mut lock(&self.msix));
        if overlaps(offset, data.len(), config::COMMAND, 2) {
            let off = self.cfg.command() & CMD_INTX_DISABLE != 0;
            self.irq.set_intx_disabled(off);
        }
        let action = if self.pci_cfg.touches_data(offset, data.len()) {
            self.pci_cfg_write()
        } else {
            BusAction::None
        };
        self.update_ioevents();
        action
    }

    fn active_bars(&self) -> Vec<BarRange> {
        self.cfg.active_bars()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        if bar == 0 && offset < VIRTIO_PCI_BAR_SIZE {
            self.read_bar0(offset, data);
        } else {
            data.fill(0xff);
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) -> BusAction {
        if bar == 0 && offset < VIRTIO_PCI_BAR_SIZE {
            return self.write_bar0(offset, data);
        }
        BusAction::None
    }
}

impl Drop for VirtioPciTransport {
    /// Leave no ioeventfd pointing at a device that is gone (hot unplug).
    fn drop(&mut self) {
        for (q, addr) in std::mem::take(&mut self.registered) {
            if let Some(evt) = self.life.notify().get(q) {
                let _ = self.ioevents.unregister(evt, IoSpace::Mmio, addr);
            }
        }
    }
}
