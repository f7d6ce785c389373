//! The interrupt seam between device models and the hypervisor.
//!
//! Devices raise edge interrupts through `IrqLine`; the VMM implements it with
//! an irqfd (an `EventFd` registered on a GSI), tests with a counter.

use std::io;

/// One interrupt line a device may raise.
pub trait IrqLine: Send + Sync {
    /// Raise an edge on the line.
    fn trigger(&self) -> io::Result<()>;
}

impl IrqLine for vmm_sys_util::eventfd::EventFd {
    fn trigger(&self) -> io::Result<()> {
        self.write(1)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts how often a device raised its line.
    #[derive(Default)]
    pub struct CountingIrq(pub AtomicUsize);

    impl super::IrqLine for CountingIrq {
        fn trigger(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    impl CountingIrq {
        pub fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }
}
