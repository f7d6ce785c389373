//! AHCI: the ICH9 SATA controller in AHCI mode (8086:2922, class 0x0106
//! prog-if 0x01) that QEMU's q35 has at 00:1f.2, with six ports for disks
//! and ATAPI CD-ROMs. The HBA registers sit in BAR5 (memory, 4 KiB); the
//! command lists, FIS receive areas and command tables live in guest RAM
//! (`port`). Commands run on the vCPU thread that writes PxCI, as the IDE
//! channel's do, except the data transfers of READ and WRITE commands once
//! `enable_offload` gave the HBA a handle on itself: those move on a helper
//! thread (`offload`). Interrupts: one MSI vector (an MSI
//! capability, 64-bit, no masking) sent for every new enabled cause once
//! the guest enables it; otherwise INTx, level-triggered, asserted while
//! any enabled port has an enabled cause pending. NCQ is not offered
//! (CAP.SNCQ clear).
//!
//! Once `enable_coalescing` gave it the seam, each port's PxIS is a
//! coalesced MMIO zone: KVM queues the guest's writes there instead of
//! exiting, and the vCPUs apply them, in order, before they dispatch the
//! next exit (`CoalescedZones`). On this host an exit costs about 115 us;
//! the probe's command (clear PxIS, set PxCI, poll) then takes five exits
//! instead of six, and Linux's interrupt handler (read IS and PxIS, write
//! PxIS back, write IS) three instead of four. It is safe because a PxIS
//! write only clears causes the guest has seen, and the next cause on a
//! port needs a command the guest issues through PxCI, which exits (and so
//! applies the queued clear first): with one command per port at a time
//! (no NCQ) a delayed clear cannot meet a newer cause, unless a driver
//! acknowledges old causes after it issued the next command. IS stays an
//! exit, so INTx falls when the guest clears it, as before. The zones
//! follow ABAR when the guest moves or disables it, and go with the VM
//! (a reboot makes a new one; the chipset function is never unplugged).

pub mod offload;
pub mod port;

use std::sync::{Arc, Mutex, Weak};

use vm_memory::GuestMemoryMmap;

use crate::bus::BusAction;
use crate::pci::config::overlaps;
use crate::pci::{
    BarKind, BarRange, CoalescedZones, IntxLine, MsiMessage, MsiVectors, PciConfig, PciConfigError,
    PciDevice, PciIds,
};
use offload::{Finished, Offload};
use port::Port;

use super::unit::Unit;

pub const PORTS: usize = 6;
pub const ABAR: u8 = 5;
pub const ABAR_LEN: u64 = 0x1000;
const GHC_HR: u32 = 1 << 0;
const GHC_IE: u32 = 1 << 1;
const GHC_AE: u32 = 1 << 31;

/// See the module doc.
pub struct Ahci {
    cfg: PciConfig,
    ghc: u32,
    is: u32,
    ports: Vec<Port>,
    mem: GuestMemoryMmap,
    intx: Arc<dyn IntxLine>,
    asserted: bool,
    msi: Arc<dyn MsiVectors>,
    /// The MSI capability's offset, and whether the guest enabled it.
    msi_cap: u16,
    msi_on: bool,
    offload: Option<Offload>,
    /// The coalescing seam, and the ABAR address its zones are at now.
    zones: Option<(Arc<dyn CoalescedZones>, Option<u64>)>,
}

/// MSI capability body: control (64-bit, one vector), address, data.
const MSI_BODY: [u8; 14] = [0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// Enable and the multiple-message enable field; address and data.
const MSI_MASK: [u8; 14] = [
    0x71, 0, 0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0,
];

impl Ahci {
    /// The function with `units` on ports 0..6, BAR5 at `abar`, INTA# on
    /// interrupt line `line`, and one MSI vector.
    pub fn new(
        units: [Option<Unit>; PORTS],
        mem: GuestMemoryMmap,
        (intx, line): (Arc<dyn IntxLine>, u8),
        msi: Arc<dyn MsiVectors>,
        abar: u64,
    ) -> Result<Self, PciConfigError> {
        let mut cfg = PciConfig::new(&PciIds {
            vendor: 0x8086,
            device: 0x2922,
            revision: 0x02,
            class: 0x01,
            subclass: 0x06,
            prog_if: 0x01,
            subsys_vendor: 0x1af4,
            subsys_id: 0x1100,
        });
        cfg.declare_bar(ABAR, BarKind::Mem32, ABAR_LEN)?;
        cfg.set_bar_addr(ABAR, abar)?;
        cfg.set_interrupt(line, 1);
        cfg.set_command(crate::pci::config::CMD_MEMORY | crate::pci::config::CMD_BUS_MASTER);
        let msi_cap = cfg.add_capability(0x05, &MSI_BODY, &MSI_MASK)?;
        Ok(Self {
            cfg,
            ghc: GHC_AE,
            is: 0,
            ports: units
                .into_iter()
                .enumerate()
                .map(|(i, u)| {
                    let mut p = Port::new(u);
                    p.index = i;
                    p
                })
                .collect(),
            mem,
            intx,
            asserted: false,
            msi,
            msi_cap,
            msi_on: false,
            offload: None,
            zones: None,
        })
    }

    /// Queue the guest's PxIS writes in KVM's coalesced ring (module doc).
    pub fn enable_coalescing(&mut self, zones: Arc<dyn CoalescedZones>) {
        self.zones = Some((zones, None));
        self.update_zones();
    }

    /// PxIS of port `i` when ABAR decodes at `base`.
    fn pxis(base: u64, i: usize) -> u64 {
        base + 0x100 + 0x80 * i as u64 + 0x10
    }

    /// Move the zones to where ABAR decodes now, or drop them.
    fn update_zones(&mut self) {
        let base = self
            .cfg
            .active_bars()
            .iter()
            .find(|b| b.index == ABAR)
            .map(|b| b.addr);
        let Some((z, at)) = &mut self.zones else {
            return;
        };
        if *at == base {
            return;
        }
        if let Some(old) = at.take() {
            for i in 0..PORTS {
                if let Err(e) = z.unregister(Self::pxis(old, i), 4) {
                    log::warn!("ahci: port {i}: unqueueing PxIS writes: {e}");
                }
            }
        }
        let Some(base) = base else {
            return;
        };
        // All or none: a zone that failed leaves that port exiting, which
        // is merely slower; but the set must be known to unregister it.
        for i in 0..PORTS {
            if let Err(e) = z.register(Self::pxis(base, i), 4) {
                log::warn!("ahci: port {i}: PxIS writes will exit: {e}");
                for j in 0..i {
                    let _ = z.unregister(Self::pxis(base, j), 4);
                }
                return;
            }
        }
        *at = Some(base);
    }

    /// Move READ and WRITE transfers off the vCPU thread (`offload`);
    /// `me` is this HBA as the bus shares it, so that the helper thread
    /// can complete them.
    pub fn enable_offload(&mut self, me: Weak<Mutex<Ahci>>) {
        self.offload = Some(Offload::new(me, self.mem.clone()));
    }

    /// Apply every result the helper thread posted, waiting up to `wait`
    /// for one.
    pub fn apply_posted(&mut self, wait: std::time::Duration) {
        let Some(o) = &self.offload else {
            return;
        };
        for f in o.posted.take(wait) {
            self.finish(f);
        }
    }

    /// An offloaded transfer ended: complete its slot as a register write
    /// would have.
    pub fn finish(&mut self, f: Finished) {
        let Some(p) = self.ports.get_mut(f.port) else {
            return;
        };
        let before = p.is & p.ie;
        if !p.finish(&self.mem, f, self.offload.as_mut()) {
            return;
        }
        if p.is & p.ie & !before != 0 {
            self.new_cause();
        }
        self.update_irq();
    }

    fn cap(&self) -> u32 {
        // 64-bit addressing, AHCI only, Gen1, 32 slots, PORTS ports.
        (1 << 31) | (1 << 18) | (1 << 20) | ((port::SLOTS - 1) << 8) | (PORTS as u32 - 1)
    }

    fn reg(&self, off: u64) -> u32 {
        match off {
            0x00 => self.cap(),
            0x04 => self.ghc,
            0x08 => self.is,
            0x0c => (1 << PORTS) - 1,
            0x10 => 0x0001_0000,
            0x100..=0x4ff => {
                let p = ((off - 0x100) / 0x80) as usize;
                self.ports.get(p).map_or(0, |p| p.read(off % 0x80))
            }
            _ => 0,
        }
    }

    fn set_reg(&mut self, off: u64, v: u32) {
        match off {
            0x04 => {
                if v & GHC_HR != 0 {
                    for p in &mut self.ports {
                        p.reset();
                    }
                    self.is = 0;
                    self.ghc = GHC_AE;
                } else {
                    self.ghc = GHC_AE | (v & GHC_IE);
                }
            }
            0x08 => self.is &= !v,
            0x100..=0x4ff => {
                let i = ((off - 0x100) / 0x80) as usize;
                if let Some(p) = self.ports.get_mut(i) {
                    let before = p.is & p.ie;
                    p.write(off % 0x80, v, &self.mem, self.offload.as_mut());
                    if p.is & p.ie & !before != 0 {
                        self.new_cause();
                    }
                }
            }
            _ => {}
        }
        self.update_irq();
    }

    /// A port gained an enabled cause: with MSI on, that is a message.
    fn new_cause(&mut self) {
        if self.msi_on && self.ghc & GHC_IE != 0 {
            if let Err(e) = self.msi.trigger(0) {
                log::error!("ahci: sending MSI: {e}");
            }
        }
    }

    /// Follow the guest's MSI capability: route the vector when enabled.
    fn msi_update(&mut self) {
        let c = self.msi_cap;
        let on = self.cfg.u16_at(c + 2) & 1 != 0;
        let msg = MsiMessage {
            addr: u64::from(self.cfg.u32_at(c + 4)) | u64::from(self.cfg.u32_at(c + 8)) << 32,
            data: u32::from(self.cfg.u16_at(c + 12)),
        };
        if let Err(e) = self.msi.route(0, on.then_some(msg)) {
            log::error!("ahci: routing MSI: {e}");
        }
        self.msi_on = on;
        self.update_irq();
    }

    /// Pending causes roll up into IS, and INTx follows IS and GHC.IE.
    fn update_irq(&mut self) {
        for (i, p) in self.ports.iter().enumerate() {
            if p.is & p.ie != 0 {
                self.is |= 1 << i;
            }
        }
        let want = self.ghc & GHC_IE != 0 && self.is != 0 && !self.msi_on;
        if want && !self.asserted {
            if let Err(e) = self.intx.assert() {
                log::error!("ahci: raising INTx: {e}");
            }
        } else if !want && self.asserted {
            self.intx.deassert();
        }
        self.asserted = want;
    }
}

impl PciDevice for Ahci {
    fn name(&self) -> &str {
        "ich9-ahci"
    }

    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.cfg.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) -> BusAction {
        self.cfg.write(offset, data);
        if overlaps(offset, data.len(), self.msi_cap, MSI_BODY.len() + 2) {
            self.msi_update();
        }
        self.update_zones();
        BusAction::None
    }

    fn active_bars(&self) -> Vec<BarRange> {
        self.cfg.active_bars()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        if bar != ABAR {
            return data.fill(0xff);
        }
        let reg = offset & !3;
        if (0x100..0x100 + 0x80 * PORTS as u64).contains(&reg)
            && matches!(reg % 0x80, 0x10 | 0x20 | 0x38)
            && self.ports[((reg - 0x100) / 0x80) as usize].busy()
        {
            // A driver polling a busy port: its answer may be moments away.
            self.apply_posted(offload::POLL_WAIT);
        }
        let v = self.reg(reg).to_le_bytes();
        for (i, d) in data.iter_mut().enumerate() {
            *d = v.get((offset % 4) as usize + i).copied().unwrap_or(0);
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) -> BusAction {
        // Drivers write these registers 32 bits at a time; a narrower
        // write merges into the register's current value.
        if bar == ABAR && offset % 4 + data.len() as u64 <= 4 {
            let mut v = self.reg(offset & !3).to_le_bytes();
            let w1c = if offset < 0x100 {
                offset & !3 == 0x08
            } else {
                matches!(offset & !3 & 0x7f, 0x10 | 0x30 | 0x38)
            };
            if data.len() < 4 && w1c {
                // W1C and issue registers must not write back their reads.
                v = [0; 4];
            }
            let at = (offset % 4) as usize;
            v[at..at + data.len()].copy_from_slice(data);
            self.set_reg(offset & !3, u32::from_le_bytes(v));
        }
        BusAction::None
    }
}

#[cfg(test)]
mod tests;
