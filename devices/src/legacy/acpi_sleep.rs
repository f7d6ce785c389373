//! ACPI hardware-reduced sleep control/status and reset registers.
//!
//! The machine's FADT points `SLEEP_CONTROL_REG` at offset 0,
//! `SLEEP_STATUS_REG` at offset 1 and `RESET_REG` at offset 2 of this
//! device. Entering S5 (`SLP_TYP` 5 with `SLP_EN`) powers off; the reset value
//! resets. Other sleep states are not supported and are ignored with a log.

use crate::bus::{BusAction, BusDevice};

/// The `SLP_TYP` value the DSDT's `\_S5` package announces.
pub const S5_SLP_TYP: u8 = 5;
/// The value the FADT tells the guest to write to `RESET_REG`.
pub const RESET_VALUE: u8 = 1;
pub const SLEEP_CONTROL_OFFSET: u64 = 0;
pub const SLEEP_STATUS_OFFSET: u64 = 1;
pub const RESET_OFFSET: u64 = 2;
/// Bytes of port space the device covers.
pub const LEN: u64 = 3;

const SLP_EN: u8 = 1 << 5;

#[derive(Default)]
pub struct AcpiSleep;

impl BusDevice for AcpiSleep {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // No wake events are ever pending.
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        let Some(&v) = data.first() else {
            return BusAction::None;
        };
        match offset {
            SLEEP_CONTROL_OFFSET if v & SLP_EN != 0 => {
                let typ = (v >> 2) & 0x7;
                if typ == S5_SLP_TYP {
                    return BusAction::PowerOff;
                }
                log::warn!("acpi: sleep type {typ} requested; only S5 is supported");
            }
            RESET_OFFSET if v == RESET_VALUE => return BusAction::Reset,
            _ => {}
        }
        BusAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s5_powers_off_and_reset_value_resets() {
        let mut d = AcpiSleep;
        assert_eq!(d.write(0, &[(5 << 2) | SLP_EN]), BusAction::PowerOff);
        assert_eq!(d.write(0, &[5 << 2]), BusAction::None, "no SLP_EN");
        assert_eq!(d.write(0, &[(3 << 2) | SLP_EN]), BusAction::None, "S3");
        assert_eq!(d.write(2, &[RESET_VALUE]), BusAction::Reset);
        assert_eq!(d.write(2, &[7]), BusAction::None);
        assert_eq!(d.write(1, &[0xff]), BusAction::None);
    }
}
