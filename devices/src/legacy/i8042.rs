//! The i8042 keyboard controller: enough of it for a guest to reset the
//! machine and for Linux's probe to get correct answers quickly.
//!
//! Owns the controller command set (CTR read/write, self-tests, output port,
//! loopback writes) and a keyboard that acknowledges commands and types
//! keys from the host (`key`, fed by the VNC server through `keymap`): set
//! 1 scancodes, as the controller's translation gives them, while the
//! keyboard scans (F4/F5) and its port is enabled. No AUX device
//! is attached: commands sent to it get the "no device" reply. A reset pulse
//! (command 0xFE, or an output-port write that clears bit 0) returns
//! `BusAction::Reset`.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::bus::{BusAction, BusDevice};
use crate::irq::IrqLine;

/// The device covers ports 0x60..=0x64; offsets are relative to 0x60.
pub const LEN: u64 = 5;
const DATA: u64 = 0;
const CMD: u64 = 4;

const ST_OBF: u8 = 1 << 0;
const ST_SYS: u8 = 1 << 2;
const ST_CMD: u8 = 1 << 3;
const ST_UNLOCKED: u8 = 1 << 4;
const ST_AUXB: u8 = 1 << 5;

const CTR_KBD_INT: u8 = 1 << 0;
const CTR_AUX_INT: u8 = 1 << 1;
const CTR_SYS: u8 = 1 << 2;
const CTR_KBD_OFF: u8 = 1 << 4;
const CTR_AUX_OFF: u8 = 1 << 5;
const CTR_XLATE: u8 = 1 << 6;

/// Output-port bit 0 low holds the CPU in reset.
const OUTPORT_RESET_N: u8 = 1 << 0;
/// Output buffer bound: a guest that never reads can't grow it without limit.
const QUEUE_MAX: usize = 16;

/// A controller command waiting for its data byte on port 0x60.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pending {
    None,
    WriteCtr,
    WriteOutport,
    KbdLoopback,
    AuxLoopback,
    ToAux,
}

pub struct I8042 {
    ctr: u8,
    status: u8,
    outport: u8,
    pending: Pending,
    out: VecDeque<(u8, bool)>,
    kbd_irq: Arc<dyn IrqLine>,
    /// The keyboard sends keys (F4 enables, F5 disables, reset enables).
    scanning: bool,
}

impl I8042 {
    /// `kbd_irq` is IRQ 1.
    pub fn new(kbd_irq: Arc<dyn IrqLine>) -> Self {
        Self {
            ctr: CTR_KBD_INT | CTR_SYS | CTR_XLATE | CTR_AUX_OFF,
            status: ST_UNLOCKED | ST_SYS,
            outport: OUTPORT_RESET_N | 0x02,
            pending: Pending::None,
            out: VecDeque::new(),
            kbd_irq,
            scanning: true,
        }
    }

    /// A key typed on the host: scancode `bytes` (one key's make or
    /// break), queued whole or not at all, dropped while the keyboard
    /// does not scan or the buffer is full.
    pub fn key(&mut self, bytes: &[u8]) {
        if !self.scanning || self.ctr & CTR_KBD_OFF != 0 {
            return;
        }
        if self.out.len() + bytes.len() > QUEUE_MAX {
            return;
        }
        for &b in bytes {
            self.push(b, false);
        }
    }

    fn push(&mut self, byte: u8, aux: bool) {
        if self.out.len() >= QUEUE_MAX {
            return;
        }
        self.out.push_back((byte, aux));
        let enabled = if aux { CTR_AUX_INT } else { CTR_KBD_INT };
        if !aux && self.ctr & enabled != 0 {
            if let Err(e) = self.kbd_irq.trigger() {
                log::warn!("i8042: raising IRQ 1 failed: {e}");
            }
        }
    }

    fn status(&self) -> u8 {
        let mut s = self.status & !(ST_OBF | ST_AUXB);
        if let Some(&(_, aux)) = self.out.front() {
            s |= ST_OBF;
            if aux {
                s |= ST_AUXB;
            }
        }
        s
    }

    fn command(&mut self, cmd: u8) -> BusAction {
        self.status |= ST_CMD;
        self.pending = Pending::None;
        match cmd {
            0x20 => self.push(self.ctr, false),
            0x60 => self.pending = Pending::WriteCtr,
            0xa7 => self.ctr |= CTR_AUX_OFF,
            0xa8 => self.ctr &= !CTR_AUX_OFF,
            0xa9 | 0xab => self.push(0x00, false), // interface tests pass
            0xaa => {
                self.status |= ST_SYS;
                self.push(0x55, false);
            }
            0xad => self.ctr |= CTR_KBD_OFF,
            0xae => self.ctr &= !CTR_KBD_OFF,
            0xc0 => self.push(0x00, false),
            0xd0 => self.push(self.outport, false),
            0xd1 => self.pending = Pending::WriteOutport,
            0xd2 => self.pending = Pending::KbdLoopback,
            0xd3 => self.pending = Pending::AuxLoopback,
            0xd4 => self.pending = Pending::ToAux,
            // Pulse output lines; bit 0 clear pulses the reset line.
            0xf0..=0xff if cmd & 1 == 0 => return BusAction::Reset,
            0xf0..=0xff => {}
            _ => log::debug!("i8042: ignoring controller command {cmd:#x}"),
        }
        BusAction::None
    }

    fn data(&mut self, v: u8) -> BusAction {
        self.status &= !ST_CMD;
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::WriteCtr => {
                self.ctr = v;
                self.status = (self.status & !ST_SYS) | (v & CTR_SYS);
            }
            Pending::WriteOutport => {
                self.outport = v;
                if v & OUTPORT_RESET_N == 0 {
                    return BusAction::Reset;
                }
            }
            Pending::KbdLoopback => self.push(v, false),
            Pending::AuxLoopback => self.push(v, true),
            // No mouse: the controller answers for the missing device.
            Pending::ToAux => self.push(0xfe, true),
            Pending::None => self.keyboard(v),
        }
        BusAction::None
    }

    /// The keyboard acknowledges every command; the few that answer more
    /// (reset, identify, echo) get their real replies.
    fn keyboard(&mut self, v: u8) {
        match v {
            0xff => {
                self.scanning = true;
                self.push(0xfa, false);
                self.push(0xaa, false);
            }
            0xf2 => {
                self.push(0xfa, false);
                self.push(0xab, false);
                self.push(0x83, false);
            }
            0xee => self.push(0xee, false),
            0xf4 => {
                self.scanning = true;
                self.push(0xfa, false);
            }
            0xf5 => {
                self.scanning = false;
                self.push(0xfa, false);
            }
            _ => self.push(0xfa, false),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let v = match offset {
            DATA => {
                let v = self.out.pop_front().map_or(0, |(b, _)| b);
                // The next byte fills the output buffer: interrupt again,
                // as a guest handles one byte per interrupt.
                if self.out.front().is_some_and(|&(_, aux)| !aux) && self.ctr & CTR_KBD_INT != 0 {
                    if let Err(e) = self.kbd_irq.trigger() {
                        log::warn!("i8042: raising IRQ 1 failed: {e}");
                    }
                }
                v
            }
            CMD => self.status(),
            _ => 0xff,
        };
        data.fill(0);
        if let Some(b) = data.first_mut() {
            *b = v;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        match (offset, data.first()) {
            (DATA, Some(&v)) => self.data(v),
            (CMD, Some(&v)) => self.command(v),
            _ => BusAction::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::testing::CountingIrq;

    fn dev() -> (I8042, Arc<CountingIrq>) {
        let irq = Arc::new(CountingIrq::default());
        (I8042::new(irq.clone()), irq)
    }

    fn rd(d: &mut I8042, off: u64) -> u8 {
        let mut b = [0u8];
        d.read(off, &mut b);
        b[0]
    }

    #[test]
    fn reset_pulse_and_outport_reset() {
        let (mut d, _) = dev();
        assert_eq!(d.write(CMD, &[0xfe]), BusAction::Reset);
        assert_eq!(
            d.write(CMD, &[0xff]),
            BusAction::None,
            "bit 0 set: no pulse"
        );
        assert_eq!(d.write(CMD, &[0xd1]), BusAction::None);
        assert_eq!(d.write(DATA, &[0x00]), BusAction::Reset);
    }

    #[test]
    fn ctr_round_trips_and_self_test_answers() {
        let (mut d, irq) = dev();
        assert_eq!(rd(&mut d, CMD) & ST_OBF, 0);
        d.write(CMD, &[0x60]);
        d.write(DATA, &[0x65]);
        d.write(CMD, &[0x20]);
        assert_ne!(rd(&mut d, CMD) & ST_OBF, 0);
        assert_eq!(rd(&mut d, DATA), 0x65);
        assert_eq!(rd(&mut d, CMD) & ST_OBF, 0);
        d.write(CMD, &[0xaa]);
        assert_eq!(rd(&mut d, DATA), 0x55);
        assert!(irq.count() >= 2, "kbd interrupt enabled in CTR 0x65");
    }

    #[test]
    fn keyboard_reset_and_aux_absent() {
        let (mut d, _) = dev();
        d.write(DATA, &[0xff]);
        assert_eq!(rd(&mut d, DATA), 0xfa);
        assert_eq!(rd(&mut d, DATA), 0xaa);
        d.write(CMD, &[0xd4]);
        d.write(DATA, &[0xf2]);
        assert_ne!(rd(&mut d, CMD) & ST_AUXB, 0);
        assert_eq!(rd(&mut d, DATA), 0xfe);
    }

    #[test]
    fn typed_keys_arrive_in_order_while_scanning() {
        let (mut d, irq) = dev();
        d.key(&[0xe0, 0x48]);
        let before = irq.count();
        assert_eq!(rd(&mut d, DATA), 0xe0);
        assert!(irq.count() > before, "the second byte interrupts again");
        assert_eq!(rd(&mut d, DATA), 0x48);
        d.write(DATA, &[0xf5]);
        assert_eq!(rd(&mut d, DATA), 0xfa);
        d.key(&[0x1e]);
        assert_eq!(rd(&mut d, CMD) & ST_OBF, 0, "not scanning: dropped");
        d.write(DATA, &[0xf4]);
        assert_eq!(rd(&mut d, DATA), 0xfa);
        for _ in 0..100 {
            d.key(&[0xe0, 0x48]);
        }
        let mut n = 0;
        while rd(&mut d, CMD) & ST_OBF != 0 {
            rd(&mut d, DATA);
            n += 1;
        }
        assert_eq!(n, QUEUE_MAX, "whole keys only, bounded");
    }

    #[test]
    fn output_queue_is_bounded() {
        let (mut d, _) = dev();
        for _ in 0..1000 {
            d.write(DATA, &[0xf4]);
        }
        let mut n = 0;
        while rd(&mut d, CMD) & ST_OBF != 0 {
            rd(&mut d, DATA);
            n += 1;
        }
        assert_eq!(n, QUEUE_MAX);
    }
}
