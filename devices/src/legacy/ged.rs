//! The ACPI Generic Event Device of hardware-reduced machines (microvm),
//! as QEMU's microvm has it: a 32-bit event selector register at offset
//! 0 that reads the pending events and clears them, and an edge
//! interrupt raised when an event is latched. The only event is the power
//! button (`system_powerdown`), QEMU's bit for it included.

use std::sync::Arc;

use crate::bus::{BusAction, BusDevice};
use crate::irq::IrqLine;

/// Bytes of MMIO space the device covers.
pub const LEN: u64 = 4;
/// QEMU's `ACPI_GED_PWR_DOWN_EVT`.
pub const PWR_DOWN_EVT: u32 = 1 << 1;

pub struct Ged {
    pending: u32,
    irq: Arc<dyn IrqLine>,
}

impl Ged {
    pub fn new(irq: Arc<dyn IrqLine>) -> Self {
        Self { pending: 0, irq }
    }

    /// Latch the power-button event and interrupt the guest.
    pub fn press_power_button(&mut self) -> bool {
        self.pending |= PWR_DOWN_EVT;
        if let Err(e) = self.irq.trigger() {
            log::warn!("ged: raising the interrupt failed: {e}");
        }
        true
    }
}

impl BusDevice for Ged {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset != 0 {
            return;
        }
        let v = std::mem::take(&mut self.pending).to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&v[..n]);
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) -> BusAction {
        BusAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::testing::CountingIrq;

    #[test]
    fn a_press_is_read_once_and_interrupts() {
        let irq = Arc::new(CountingIrq::default());
        let mut g = Ged::new(irq.clone());
        let mut b = [0u8; 4];
        g.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0);
        assert!(g.press_power_button());
        assert_eq!(irq.count(), 1);
        g.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), PWR_DOWN_EVT);
        g.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0, "reading clears");
    }
}
