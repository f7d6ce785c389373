//! The PIIX3 IDE function (8086:7010, class 0x0101, prog-if 0x80: both
//! channels in legacy mode, bus-master capable), as QEMU's `piix3-ide`
//! at 00:01.1 on `pc`. Its one BAR is BAR4, 16 I/O ports of bus-master
//! registers (8 per channel); the channels' legacy ports and ISA IRQs
//! are placed by the VMM (`ide`). Owns the configuration space and the
//! BAR decoding.

use super::ide::{lock, SharedChannel};
use crate::bus::BusAction;
use crate::pci::{BarKind, BarRange, PciConfig, PciConfigError, PciDevice, PciIds};

pub const BM_BAR: u8 = 4;
pub const BM_LEN: u64 = 16;

/// See the module doc.
pub struct PiixIde {
    cfg: PciConfig,
    channels: [SharedChannel; 2],
}

impl PiixIde {
    /// The function with its bus-master BAR at I/O port `bm_port`.
    pub fn new(channels: [SharedChannel; 2], bm_port: u16) -> Result<Self, PciConfigError> {
        let mut cfg = PciConfig::new(&PciIds {
            vendor: 0x8086,
            device: 0x7010,
            revision: 0,
            class: 0x01,
            subclass: 0x01,
            prog_if: 0x80,
            subsys_vendor: 0x1af4,
            subsys_id: 0x1100,
        });
        cfg.declare_bar(BM_BAR, BarKind::Io, BM_LEN)?;
        cfg.set_bar_addr(BM_BAR, bm_port.into())?;
        // Both channels' decode enabled (IDETIM bit 15), as firmware
        // leaves them; Linux's ata_piix checks these before probing.
        cfg.set_u16(0x40, 0x8000);
        cfg.set_u16(0x42, 0x8000);
        cfg.set_command(crate::pci::config::CMD_IO | crate::pci::config::CMD_BUS_MASTER);
        Ok(Self { cfg, channels })
    }
}

impl PciDevice for PiixIde {
    fn name(&self) -> &str {
        "piix3-ide"
    }

    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.cfg.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) -> BusAction {
        self.cfg.write(offset, data);
        BusAction::None
    }

    fn active_bars(&self) -> Vec<BarRange> {
        self.cfg.active_bars()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        match (bar, self.channels.get(offset as usize / 8)) {
            (BM_BAR, Some(c)) => lock(c).bm_read(offset % 8, data),
            _ => data.fill(0xff),
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) -> BusAction {
        if let (BM_BAR, Some(c)) = (bar, self.channels.get(offset as usize / 8)) {
            lock(c).bm_write(offset % 8, data);
        }
        BusAction::None
    }
}
