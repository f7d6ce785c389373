//! COM1: a 16550A UART (vm-superio's model) as a port-I/O `BusDevice`.
//!
//! Owns the register model and the output sink (stdout, a file, or nothing).
//! Interrupts go out through an `IrqLine`. Guest input (the console) is
//! fed through `enqueue_input`, never more than the receive FIFO holds:
//! the caller keeps the rest until the guest has read.

use std::io::Write;
use std::sync::Arc;

use crate::bus::{BusAction, BusDevice};
use crate::irq::IrqLine;

/// Adapts an `IrqLine` to vm-superio's `Trigger`.
pub struct IrqTrigger(Arc<dyn IrqLine>);

impl vm_superio::Trigger for IrqTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.trigger()
    }
}

type Uart = vm_superio::Serial<IrqTrigger, vm_superio::serial::NoEvents, Box<dyn Write + Send>>;

pub struct Serial {
    uart: Uart,
    /// Output errors (a closed stdout) are reported once, not per byte.
    warned: bool,
}

impl Serial {
    pub fn new(irq: Arc<dyn IrqLine>, out: Box<dyn Write + Send>) -> Self {
        Self {
            uart: vm_superio::Serial::new(IrqTrigger(irq), out),
            warned: false,
        }
    }
}

impl Serial {
    /// Bytes the receive FIFO can take now.
    pub fn input_room(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Queue `bytes` for the guest (raising the receive interrupt if the
    /// guest enabled it); returns how many fit.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.uart.fifo_capacity());
        if n == 0 {
            return 0;
        }
        match self.uart.enqueue_raw_bytes(&bytes[..n]) {
            Ok(n) => n,
            Err(e) => {
                log::debug!("serial: input not queued: {e:?}");
                0
            }
        }
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // Registers are bytes; wider reads see the register in the low byte.
        data.fill(0);
        if let (Some(b), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *b = self.uart.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        let (Some(&v), Ok(off)) = (data.first(), u8::try_from(offset)) else {
            return BusAction::None;
        };
        if let Err(e) = self.uart.write(off, v) {
            if !self.warned {
                log::warn!("serial: output failed, further errors suppressed: {e:?}");
                self.warned = true;
            }
        }
        BusAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::testing::CountingIrq;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn bytes_reach_the_sink_and_thre_interrupt_fires_when_enabled() {
        let out = Shared::default();
        let irq = Arc::new(CountingIrq::default());
        let mut s = Serial::new(irq.clone(), Box::new(out.clone()));
        for b in b"hi\n" {
            s.write(0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi\n");
        assert_eq!(irq.count(), 0, "IER is 0: no interrupt");
        // Enabling THRE with the holder empty asserts the line at once.
        s.write(1, &[0x02]);
        assert_eq!(irq.count(), 1);
        let mut lsr = [0u8];
        s.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0, "THR empty");
    }

    #[test]
    fn input_takes_what_the_fifo_holds_and_the_guest_reads_it() {
        let irq = Arc::new(CountingIrq::default());
        let mut s = Serial::new(irq.clone(), Box::new(std::io::sink()));
        let room = s.input_room();
        assert!(room > 0);
        let big = vec![b'a'; room + 10];
        assert_eq!(s.enqueue_input(&big), room, "no more than the FIFO holds");
        assert_eq!(s.enqueue_input(b"b"), 0, "full");
        let mut lsr = [0u8];
        s.read(5, &mut lsr);
        assert_ne!(lsr[0] & 0x01, 0, "data ready");
        let mut rbr = [0u8];
        s.read(0, &mut rbr);
        assert_eq!(rbr[0], b'a');
        assert_eq!(s.input_room(), 1, "a read makes room");
    }
}
