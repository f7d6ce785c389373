//! The fixed-hardware ACPI PM1 registers of the pc and q35 machines (PIIX4
//! and ICH9 power management as their FADT describes it): PM1a event block
//! (status, enable) and PM1a control block.
//!
//! ACPI is always enabled (SCI_EN reads 1, there is no SMI command port),
//! the only fixed event is the power button (`press_power_button`, QMP's
//! `system_powerdown`: PWRBTN_STS, and the SCI while PWRBTN_EN is set), and
//! the only sleep state is S5, which powers off. The PM timer is not modelled: the FADT says so by giving it
//! no block, and guests use kvmclock or the TSC instead. Reset goes through
//! port 0xCF9 (pci::root), not here.

use std::sync::Arc;

use crate::bus::{BusAction, BusDevice};
use crate::legacy::acpi_sleep::S5_SLP_TYP;
use crate::pci::IntxLine;

/// Offsets inside the device's port range.
pub const PM1_EVT_OFFSET: u64 = 0;
pub const PM1_EVT_LEN: u8 = 4;
pub const PM1_CNT_OFFSET: u64 = 4;
pub const PM1_CNT_LEN: u8 = 2;
/// Bytes of port space the device covers.
pub const LEN: u64 = 6;

const SCI_EN: u16 = 1;
const SLP_EN: u16 = 1 << 13;
const SLP_TYP_SHIFT: u16 = 10;
/// PM1 status bits are write-one-to-clear; WAK_STS (bit 15) is the one a
/// guest checks after sleeping, and it stays clear because nothing wakes.
const PM1_EN_MASK: u16 = 0x0721;
/// PWRBTN_STS / PWRBTN_EN: the fixed power button event.
pub const PWRBTN: u16 = 1 << 8;

#[derive(Default)]
pub struct AcpiPm {
    status: u16,
    enable: u16,
    slp_typ: u16,
    /// The SCI (level-triggered), when the machine wires one.
    sci: Option<Arc<dyn IntxLine>>,
}

impl AcpiPm {
    /// With the SCI on `sci`: asserted while an enabled event is pending.
    pub fn with_sci(sci: Arc<dyn IntxLine>) -> Self {
        Self {
            sci: Some(sci),
            ..Self::default()
        }
    }

    /// The power button was pressed. As QEMU's PIIX4/ICH9: the event is
    /// latched only while the guest has enabled it (PWRBTN_EN); returns
    /// whether it was.
    pub fn press_power_button(&mut self) -> bool {
        if self.enable & PWRBTN == 0 {
            return false;
        }
        self.status |= PWRBTN;
        self.update_sci();
        true
    }

    fn update_sci(&self) {
        let Some(sci) = &self.sci else { return };
        if self.status & self.enable != 0 {
            if let Err(e) = sci.assert() {
                log::warn!("acpi: raising the SCI failed: {e}");
            }
        } else {
            sci.deassert();
        }
    }

    fn reg16(&self, offset: u64) -> Option<u16> {
        match offset {
            0 => Some(self.status),
            2 => Some(self.enable),
            4 => Some(SCI_EN | (self.slp_typ << SLP_TYP_SHIFT)),
            _ => None,
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset + i as u64;
            if let Some(v) = self.reg16(at & !1) {
                *b = v.to_le_bytes()[(at & 1) as usize];
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        // Accesses are 8 or 16 bits wide in practice; widen a byte write
        // with the register's current other half.
        let v = match (offset, data) {
            (_, [lo, hi]) if offset.is_multiple_of(2) => u16::from_le_bytes([*lo, *hi]),
            (_, [b]) => {
                let cur = self.reg16(offset & !1).unwrap_or(0).to_le_bytes();
                if offset & 1 == 0 {
                    u16::from_le_bytes([*b, cur[1]])
                } else {
                    u16::from_le_bytes([cur[0], *b])
                }
            }
            _ => return BusAction::None,
        };
        match offset & !1 {
            // Status bits are write-one-to-clear.
            0 => {
                self.status &= !v;
                self.update_sci();
            }
            2 => {
                self.enable = v & PM1_EN_MASK;
                self.update_sci();
            }
            PM1_CNT_OFFSET => {
                self.slp_typ = (v >> SLP_TYP_SHIFT) & 7;
                if v & SLP_EN != 0 {
                    if self.slp_typ == u16::from(S5_SLP_TYP) {
                        return BusAction::PowerOff;
                    }
                    log::warn!(
                        "acpi: sleep type {} requested; only S5 is supported",
                        self.slp_typ
                    );
                }
            }
            _ => {}
        }
        BusAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Level(std::sync::Mutex<Vec<bool>>);
    impl IntxLine for Level {
        fn assert(&self) -> std::io::Result<()> {
            self.0.lock().unwrap().push(true);
            Ok(())
        }
        fn deassert(&self) {
            self.0.lock().unwrap().push(false);
        }
    }

    #[test]
    fn power_button_latches_only_when_enabled_and_clears_by_writing_one() {
        let sci = Arc::new(Level::default());
        let mut pm = AcpiPm::with_sci(sci.clone());
        assert!(!pm.press_power_button(), "PWRBTN_EN clear: ignored");
        let mut b = [0u8; 2];
        pm.read(0, &mut b);
        assert_eq!(u16::from_le_bytes(b), 0);
        pm.write(2, &PWRBTN.to_le_bytes());
        assert!(pm.press_power_button());
        pm.read(0, &mut b);
        assert_eq!(u16::from_le_bytes(b), PWRBTN);
        assert_eq!(sci.0.lock().unwrap().last(), Some(&true), "SCI raised");
        pm.write(0, &PWRBTN.to_le_bytes());
        pm.read(0, &mut b);
        assert_eq!(u16::from_le_bytes(b), 0, "write-one-to-clear");
        assert_eq!(sci.0.lock().unwrap().last(), Some(&false), "SCI lowered");
    }

    fn cnt(typ: u16, en: bool) -> [u8; 2] {
        ((typ << SLP_TYP_SHIFT) | if en { SLP_EN } else { 0 }).to_le_bytes()
    }

    #[test]
    fn s5_with_slp_en_powers_off() {
        let mut pm = AcpiPm::default();
        assert_eq!(pm.write(4, &cnt(5, false)), BusAction::None);
        assert_eq!(pm.write(4, &cnt(5, true)), BusAction::PowerOff);
        assert_eq!(pm.write(4, &cnt(3, true)), BusAction::None, "S3 ignored");
        // The high byte alone carries SLP_EN and SLP_TYP.
        assert_eq!(pm.write(5, &[cnt(5, true)[1]]), BusAction::PowerOff);
    }

    #[test]
    fn acpi_reads_enabled_and_status_stays_clear() {
        let mut pm = AcpiPm::default();
        let mut b = [0u8; 2];
        pm.read(4, &mut b);
        assert_eq!(u16::from_le_bytes(b) & SCI_EN, SCI_EN);
        pm.write(0, &[0xff, 0xff]);
        pm.read(0, &mut b);
        assert_eq!(b, [0, 0]);
        pm.write(2, &[0xff, 0xff]);
        pm.read(2, &mut b);
        assert_eq!(u16::from_le_bytes(b), PM1_EN_MASK);
        let mut wide = [0xaa; 4];
        pm.read(0, &mut wide);
        assert_eq!(&wide[..2], &[0, 0]);
        pm.write(6, &[1, 2, 3]);
    }
}
