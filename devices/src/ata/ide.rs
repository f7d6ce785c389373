//! The legacy IDE port blocks of one channel on the port bus: the eight
//! command-block ports (0x1f0-0x1f7 or 0x170-0x177) and the one control
//! port (0x3f6 or 0x376). Owns only the port decoding; the registers are
//! the `Channel`'s.

use std::sync::{Arc, Mutex, MutexGuard};

use super::channel::Channel;
use crate::bus::{BusAction, BusDevice};

/// Ports of a command block, and the legacy bases and IRQs.
pub const CMD_LEN: u64 = 8;
pub const PRIMARY: (u64, u64, u32) = (0x1f0, 0x3f6, 14);
pub const SECONDARY: (u64, u64, u32) = (0x170, 0x376, 15);

pub type SharedChannel = Arc<Mutex<Channel>>;

pub fn lock(c: &SharedChannel) -> MutexGuard<'_, Channel> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// The command block of a channel.
pub struct CommandPorts(pub SharedChannel);

/// The control port of a channel.
pub struct ControlPort(pub SharedChannel);

impl BusDevice for CommandPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        lock(&self.0).cmd_read(offset, data);
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        lock(&self.0).cmd_write(offset, data);
        BusAction::None
    }
}

impl BusDevice for ControlPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        let v = lock(&self.0).ctl_read();
        data.fill(v);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> BusAction {
        if let Some(&v) = data.first() {
            lock(&self.0).ctl_write(v);
        }
        BusAction::None
    }
}
