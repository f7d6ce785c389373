//! virtio-mmio placement for machines without PCI: one 512-byte window
//! per device from the machine's base, one IOAPIC pin each, announced to
//! the guest in the DSDT (`acpi::VirtioMmioSlot` says why) or, without
//! ACPI, on its kernel command line (`virtio_mmio.device=`) as
//! Firecracker does. Queue notifications are ioeventfds on QueueNotify.

use std::sync::{Arc, Mutex};

use casemate_devices::pci::IoSpace;
use casemate_devices::virtio::common::VirtioLifecycle;
use casemate_devices::virtio::mmio::{MmioTransport, MMIO_LEN, QUEUE_NOTIFY};
use casemate_devices::virtio::VirtioDevice;
use casemate_devices::DeviceKey;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::alloc::{FreeList, Window};
use super::{DevError, Placement, Wiring};
use crate::arch::acpi::VirtioMmioSlot;
use crate::machine::MmioSlots;
use crate::vstate::exit::Buses;

/// The kernel command-line words that announce `slots` to a guest without
/// ACPI (`-machine acpi=off`), each with a leading space, as Linux parses
/// them: `virtio_mmio.device=<size>@<base>:<irq>`.
pub fn virtio_mmio_cmdline(slots: &[VirtioMmioSlot]) -> String {
    slots
        .iter()
        .map(|s| format!(" virtio_mmio.device={}@{:#x}:{}", s.len, s.base, s.gsi))
        .collect()
}

pub struct MmioPlatform {
    windows: Window,
    gsis: FreeList<u32>,
    slots: Vec<VirtioMmioSlot>,
}

impl MmioPlatform {
    pub fn new(m: MmioSlots) -> Self {
        Self {
            windows: Window::new("virtio-mmio window", m.base, MMIO_LEN * m.gsis.len() as u64),
            gsis: FreeList::new("virtio-mmio interrupt pin", m.gsis.iter().copied()),
            slots: Vec::new(),
        }
    }

    pub fn slots(&self) -> Vec<VirtioMmioSlot> {
        self.slots.clone()
    }

    pub fn add(
        &mut self,
        w: &Wiring<'_>,
        buses: &Buses,
        key: DeviceKey,
        dev: Box<dyn VirtioDevice>,
    ) -> Result<(Placement, Arc<Mutex<dyn VirtioLifecycle>>), DevError> {
        let name = dev.name().to_string();
        let gsi = self.gsis.take(&name)?;
        let base = self.windows.take(&name, MMIO_LEN, MMIO_LEN)?;
        let ioevents = w.hv.ioevents();
        let mut notify = Vec::new();
        for _ in dev.queue_max_sizes() {
            let evt = EventFd::new(EFD_NONBLOCK).map_err(|source| DevError::EventFd {
                device: name.clone(),
                source,
            })?;
            notify.push(evt);
        }
        // Notifications never reach the exit loop: KVM signals the
        // worker's eventfd directly when the guest writes QueueNotify. One
        // address serves every queue, so each eventfd matches its index.
        for (q, evt) in notify.iter().enumerate() {
            ioevents
                .register_datamatch(evt, IoSpace::Mmio, base + QUEUE_NOTIFY, q as u32)
                .map_err(|source| DevError::IoEvent {
                    device: name.clone(),
                    source,
                })?;
        }
        let line = w.hv.irq_line("virtio-mmio", gsi)?;
        let t = Arc::new(Mutex::new(MmioTransport::new(
            dev,
            w.mem.clone(),
            notify,
            line,
            key,
        )));
        buses
            .mmio
            .insert(&format!("virtio-mmio {name}"), base, MMIO_LEN, t.clone())?;
        self.slots.push(VirtioMmioSlot {
            base,
            len: MMIO_LEN,
            gsi,
        });
        Ok((Placement::Mmio { base, gsi }, t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_words_for_guests_without_acpi() {
        let slots = [
            VirtioMmioSlot {
                base: 0xfeb0_0000,
                len: 0x200,
                gsi: 5,
            },
            VirtioMmioSlot {
                base: 0xfeb0_0200,
                len: 0x200,
                gsi: 6,
            },
        ];
        assert_eq!(
            virtio_mmio_cmdline(&slots),
            " virtio_mmio.device=512@0xfeb00000:5 virtio_mmio.device=512@0xfeb00200:6"
        );
        assert_eq!(virtio_mmio_cmdline(&[]), "");
    }
}
