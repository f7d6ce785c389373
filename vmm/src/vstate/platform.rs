//! `KvmHypervisor`: the device manager's `Hypervisor` on KVM: irqfds on
//! IOAPIC pins, MSI-X vectors with their own GSI routes, INTx lines with
//! resample eventfds (collected so the builder can start the one worker
//! that re-raises them), and KVM_IOEVENTFD registration.

use std::sync::{Arc, Mutex};

use casemate_devices::display::vga::FramebufferSlot;
use casemate_devices::pci::{IntxLine, IoEvents, MsiVectors};
use casemate_devices::IrqLine;

use super::fbslot::{KvmFbSlot, FIRST_DEVICE_SLOT};
use super::gsi::{GsiRouter, KvmMsiVectors};
use super::intx::KvmIntx;
use super::ioevents::KvmIoEvents;
use super::vm::Vm;
use crate::devmgr::{DevError, Hypervisor};

pub struct KvmHypervisor<'a> {
    vm: &'a Vm,
    router: Arc<GsiRouter>,
    intx: Mutex<Vec<Arc<KvmIntx>>>,
    slots: Arc<super::vfio::KvmSlots>,
    /// Framebuffer slots handed out.
    fb_slots: std::sync::atomic::AtomicU32,
}

impl<'a> KvmHypervisor<'a> {
    pub fn new(vm: &'a Vm) -> Self {
        Self {
            vm,
            router: Arc::new(GsiRouter::new(vm.fd.clone())),
            intx: Mutex::new(Vec::new()),
            slots: Arc::new(super::vfio::KvmSlots::new(vm.fd.clone())),
            fb_slots: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// The INTx lines handed out, for the resample worker.
    pub fn take_intx(&self) -> Vec<Arc<KvmIntx>> {
        std::mem::take(&mut *self.intx.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Hypervisor for KvmHypervisor<'_> {
    fn irq_line(&self, what: &'static str, gsi: u32) -> Result<Arc<dyn IrqLine>, DevError> {
        Ok(Arc::new(self.vm.irqfd(what, gsi)?))
    }

    fn msi_vectors(&self, count: u16) -> Result<Arc<dyn MsiVectors>, DevError> {
        Ok(Arc::new(KvmMsiVectors::new(
            self.router.clone(),
            &self.vm.fd,
            count,
        )?))
    }

    fn intx(&self, gsi: u32) -> Result<Arc<dyn IntxLine>, DevError> {
        let line = KvmIntx::new(&self.vm.fd, gsi)?;
        self.intx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(line.clone());
        Ok(line)
    }

    fn ioevents(&self) -> Arc<dyn IoEvents> {
        Arc::new(KvmIoEvents(self.vm.fd.clone()))
    }

    fn coalesced_zones(&self) -> Arc<dyn casemate_devices::pci::CoalescedZones> {
        Arc::new(super::ioevents::KvmCoalescedZones(self.vm.fd.clone()))
    }

    fn msi_irqfds(
        &self,
        count: u16,
    ) -> Result<Arc<dyn casemate_devices::vfio::MsiIrqfds>, DevError> {
        Ok(Arc::new(KvmMsiVectors::new(
            self.router.clone(),
            &self.vm.fd,
            count,
        )?))
    }

    fn intx_irqfds(
        &self,
        gsi: u32,
    ) -> Result<Arc<dyn casemate_devices::vfio::IntxIrqfds>, DevError> {
        Ok(Arc::new(super::vfio::KvmVfioIntx::new(&self.vm.fd, gsi)?))
    }

    fn mem_slots(&self) -> Arc<dyn casemate_devices::vfio::MemSlots> {
        self.slots.clone()
    }

    fn framebuffer_slot(
        &self,
        _device: &str,
        host_addr: u64,
        size: u64,
    ) -> Result<Arc<dyn FramebufferSlot>, DevError> {
        let n = self
            .fb_slots
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Arc::new(KvmFbSlot::new(
            self.vm.fd.clone(),
            FIRST_DEVICE_SLOT + n,
            host_addr,
            size,
        )))
    }
}
