//! Level-triggered PCI INTx lines on KVM: an irqfd with a resample eventfd
//! per line, and one worker that re-raises a line after the guest's EOI
//! while its device still holds it asserted.
//!
//! KVM lowers a resample irqfd's line at EOI; without re-raising, a device
//! that completed more work between the guest's ISR read and its EOI would
//! lose that interrupt.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use casemate_devices::pci::IntxLine;
use casemate_devices::virtio::{Worker, WorkerError};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::vm::VmError;

pub struct KvmIntx {
    gsi: u32,
    irqfd: EventFd,
    resample: EventFd,
    level: AtomicBool,
}

impl KvmIntx {
    pub fn new(vm: &VmFd, gsi: u32) -> Result<Arc<Self>, VmError> {
        let irqfd = EventFd::new(EFD_NONBLOCK).map_err(|e| VmError::EventFd("INTx", e))?;
        let resample = EventFd::new(EFD_NONBLOCK).map_err(|e| VmError::EventFd("INTx", e))?;
        vm.register_irqfd_with_resample(&irqfd, &resample, gsi)
            .map_err(|e| VmError::Kvm("register_irqfd_with_resample", e))?;
        Ok(Arc::new(Self {
            gsi,
            irqfd,
            resample,
            level: AtomicBool::new(false),
        }))
    }

    /// The guest EOI'd the line and KVM lowered it.
    fn resampled(&self) -> std::io::Result<()> {
        // Draining first: a raise below must produce a fresh resample.
        let _ = self.resample.read();
        if self.level.load(Ordering::Acquire) {
            self.irqfd.write(1)?;
        }
        Ok(())
    }
}

impl IntxLine for KvmIntx {
    fn assert(&self) -> std::io::Result<()> {
        self.level.store(true, Ordering::Release);
        self.irqfd.write(1)
    }

    fn deassert(&self) {
        self.level.store(false, Ordering::Release);
    }
}

/// Watches every INTx line's resample eventfd.
pub struct ResampleWorker {
    pub lines: Vec<Arc<KvmIntx>>,
}

impl Worker for ResampleWorker {
    fn fds(&self) -> Vec<(RawFd, u32)> {
        self.lines
            .iter()
            .enumerate()
            .map(|(i, l)| (l.resample.as_raw_fd(), i as u32))
            .collect()
    }

    fn on_event(&mut self, token: u32) -> Result<(), WorkerError> {
        let Some(line) = self.lines.get(token as usize) else {
            return Ok(());
        };
        line.resampled().map_err(|source| WorkerError::Irq {
            device: format!("INTx GSI {}", line.gsi),
            source,
        })
    }
}
