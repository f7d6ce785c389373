//! A range that accepts writes and reads as all-ones: port 0x80 (POST codes)
//! and other ports that guests poke but that need no model.

use crate::bus::{BusAction, BusDevice};

#[derive(Default)]
pub struct Sink;

impl BusDevice for Sink {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) -> BusAction {
        BusAction::None
    }
}
