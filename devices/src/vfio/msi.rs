//! The MSI capability, emulated: the guest programs address and data here
//! and the model routes the device's MSI irqfd to that message.
//!
//! The model offers one vector and no per-vector masking (the Multiple
//! Message Capable and Per-Vector Masking bits read as zero): one vector is
//! what a guest takes when MSI-X is absent, and an unmasked-only vector
//! needs no pending state. The bytes past the emulated registers pass
//! through to the device.

use crate::pci::MsiMessage;

const CTRL_ENABLE: u16 = 1 << 0;
const CTRL_64BIT: u16 = 1 << 7;

/// See the module doc. Offsets are configuration-space offsets.
#[derive(Debug, Clone)]
pub struct MsiCap {
    offset: u16,
    is64: bool,
    /// Control, address (low, high) and data, from the control word on.
    regs: [u8; 12],
}

impl MsiCap {
    /// The capability at `offset`, with the device's control word `ctrl`.
    pub fn new(offset: u16, ctrl: u16) -> Self {
        let is64 = ctrl & CTRL_64BIT != 0;
        let mut regs = [0; 12];
        regs[0..2].copy_from_slice(&(ctrl & CTRL_64BIT).to_le_bytes());
        Self { offset, is64, regs }
    }

    /// Bytes from the control word to the end of the data register.
    fn len(&self) -> u16 {
        if self.is64 {
            12
        } else {
            8
        }
    }

    fn index(&self, off: u16) -> Option<usize> {
        let rel = off.checked_sub(self.offset + 2)?;
        (rel < self.len()).then_some(usize::from(rel))
    }

    /// Whether configuration byte `off` is emulated here.
    pub fn covers(&self, off: u16) -> bool {
        self.index(off).is_some()
    }

    pub fn read_byte(&self, off: u16) -> u8 {
        self.index(off).map_or(0, |i| self.regs[i])
    }

    pub fn write_byte(&mut self, off: u16, v: u8) {
        let Some(i) = self.index(off) else {
            return;
        };
        self.regs[i] = match i {
            // Only Enable is writable; Multiple Message Enable stays 0
            // (one vector), the 64-bit bit is read-only.
            0 => (v & CTRL_ENABLE as u8) | (self.regs[0] & CTRL_64BIT as u8),
            1 => 0,
            // Message addresses are dword aligned.
            2 => v & !0x3,
            _ => v,
        };
    }

    fn u32_at(&self, i: usize) -> u32 {
        u32::from_le_bytes([
            self.regs[i],
            self.regs[i + 1],
            self.regs[i + 2],
            self.regs[i + 3],
        ])
    }

    pub fn enabled(&self) -> bool {
        self.regs[0] & CTRL_ENABLE as u8 != 0
    }

    /// The message the guest programmed.
    pub fn message(&self) -> MsiMessage {
        let lo = u64::from(self.u32_at(2));
        let (hi, data_at) = if self.is64 {
            (u64::from(self.u32_at(6)), 10)
        } else {
            (0, 6)
        };
        MsiMessage {
            addr: (hi << 32) | lo,
            data: u32::from(u16::from_le_bytes([
                self.regs[data_at],
                self.regs[data_at + 1],
            ])),
        }
    }

    /// Power-on state: disabled, address and data zero.
    pub fn reset(&mut self) {
        let ctrl = u16::from_le_bytes([self.regs[0], self.regs[1]]) & CTRL_64BIT;
        self.regs = [0; 12];
        self.regs[0..2].copy_from_slice(&ctrl.to_le_bytes());
    }
}
