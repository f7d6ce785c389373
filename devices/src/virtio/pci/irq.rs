//! Interrupts of a virtio PCI function: the MSI-X vector each queue and the
//! configuration change are mapped to, the ISR byte and the INTx pin used
//! when MSI-X is off.
//!
//! Shared by the vCPU thread (common configuration, ISR reads, the COMMAND
//! register's INTx disable) and the device's worker (signals). The ISR and
//! the pin change together under one lock, so a worker raising the line
//! and a vCPU reading ISR cannot leave the pin asserted with ISR clear
//! (which a level-triggered guest handler would see as a stuck line).

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::pci::{IntxLine, MsixDelivery, MsixState};
use crate::virtio::VirtioIrq;

/// "No vector" in config_msix_vector and queue_msix_vector.
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xffff;
const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

struct Intx {
    isr: u8,
    /// COMMAND bit 10: the guest forbids asserting the pin.
    disabled: bool,
}

pub struct PciIrq {
    msix: Arc<Mutex<MsixState>>,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
    pin: Arc<dyn IntxLine>,
    intx: Mutex<Intx>,
}

/// The MSI-X state is a register model; a panic elsewhere leaves it usable.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PciIrq {
    pub fn new(msix: Arc<Mutex<MsixState>>, pin: Arc<dyn IntxLine>, queues: usize) -> Self {
        Self {
            msix,
            config_vector: AtomicU16::new(VIRTIO_MSI_NO_VECTOR),
            queue_vectors: (0..queues)
                .map(|_| AtomicU16::new(VIRTIO_MSI_NO_VECTOR))
                .collect(),
            pin,
            intx: Mutex::new(Intx {
                isr: 0,
                disabled: false,
            }),
        }
    }

    /// A vector the table has, else NO_VECTOR: the driver reads the value
    /// back to learn whether the mapping took (virtio 1.x, 4.1.5.1.2).
    fn valid(&self, v: u16) -> u16 {
        if v < lock(&self.msix).table_size() {
            v
        } else {
            VIRTIO_MSI_NO_VECTOR
        }
    }

    pub fn config_vector(&self) -> u16 {
        self.config_vector.load(Ordering::Acquire)
    }

    pub fn set_config_vector(&self, v: u16) {
        self.config_vector.store(self.valid(v), Ordering::Release);
    }

    pub fn queue_vector(&self, q: usize) -> u16 {
        self.queue_vectors
            .get(q)
            .map_or(VIRTIO_MSI_NO_VECTOR, |v| v.load(Ordering::Acquire))
    }

    pub fn set_queue_vector(&self, q: usize, v: u16) {
        let v = self.valid(v);
        if let Some(slot) = self.queue_vectors.get(q) {
            slot.store(v, Ordering::Release);
        }
    }

    /// Device reset: vectors back to NO_VECTOR, ISR clear, pin low.
    pub fn reset(&self) {
        self.config_vector
            .store(VIRTIO_MSI_NO_VECTOR, Ordering::Release);
        for v in &self.queue_vectors {
            v.store(VIRTIO_MSI_NO_VECTOR, Ordering::Release);
        }
        let mut intx = lock(&self.intx);
        intx.isr = 0;
        self.pin.deassert();
    }

    /// An ISR read: returns and clears the byte, and lowers the pin.
    pub fn take_isr(&self) -> u8 {
        let mut intx = lock(&self.intx);
        let isr = std::mem::take(&mut intx.isr);
        self.pin.deassert();
        isr
    }

    /// Whether the function holds INTx asserted (STATUS bit 3).
    pub fn intx_pending(&self) -> bool {
        lock(&self.intx).isr != 0
    }

    /// COMMAND bit 10 changed: lower the pin, or raise it again if an
    /// interrupt is still outstanding.
    pub fn set_intx_disabled(&self, disabled: bool) {
        let mut intx = lock(&self.intx);
        if intx.disabled == disabled {
            return;
        }
        intx.disabled = disabled;
        if disabled {
            self.pin.deassert();
        } else if intx.isr != 0 {
            if let Err(e) = self.pin.assert() {
                log::warn!("INTx: cannot assert: {e}");
            }
        }
    }

    fn signal(&self, vector: u16, isr_bit: u8) -> std::io::Result<()> {
        // Take the MSI-X lock alone, then the INTx lock alone: never both.
        let delivery = lock(&self.msix).fire(vector)?;
        if delivery != MsixDelivery::Disabled {
            return Ok(());
        }
        let mut intx = lock(&self.intx);
        let was = intx.isr;
        intx.isr |= isr_bit;
        // The pin is level-triggered and the VMM re-raises it after EOI
        // while it stays asserted, so only the rising edge needs a call.
        if was == 0 && !intx.disabled {
            self.pin.assert()?;
        }
        Ok(())
    }
}

impl VirtioIrq for PciIrq {
    fn signal_used(&self, queue: u16) -> std::io::Result<()> {
        self.signal(self.queue_vector(queue.into()), ISR_QUEUE)
    }

    fn signal_config(&self) -> std::io::Result<()> {
        self.signal(self.config_vector(), ISR_CONFIG)
    }
}
