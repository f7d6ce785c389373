//! Disks on virtio-mmio for the microvm machine: one 512-byte window per
//! device from 0xfeb00000, one IOAPIC pin each, announced to the guest in
//! the DSDT (`acpi::VirtioMmioSlot` says why) or, with `acpi=off`, on its
//! kernel command line (`virtio_mmio.device=`) as Firecracker does.

use std::sync::{Arc, Mutex};

use casemate_devices::virtio::mmio::{MmioTransport, MMIO_LEN, QUEUE_NOTIFY};
use casemate_devices::virtio::WorkerHost;
use kvm_ioctls::IoEventAddress;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{block_device, DevError};
use crate::arch::acpi::VirtioMmioSlot;
use crate::config::VmConfig;
use crate::vstate::exit::Buses;
use crate::vstate::vm::Vm;
use crate::workers::Workers;

/// virtio-mmio windows, as on QEMU's microvm: 512 bytes each from here.
pub const VIRTIO_MMIO_BASE: u64 = 0xfeb0_0000;
/// IOAPIC pins for virtio-mmio devices: everything the legacy devices and
/// the RTC's conventional IRQ 8 leave free.
const VIRTIO_GSIS: [u32; 16] = [5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21];

/// The kernel command-line words that announce `slots` to a guest without
/// ACPI (`-machine acpi=off`), each with a leading space, as Linux parses
/// them: `virtio_mmio.device=<size>@<base>:<irq>`.
pub fn virtio_mmio_cmdline(slots: &[VirtioMmioSlot]) -> String {
    slots
        .iter()
        .map(|s| format!(" virtio_mmio.device={}@{:#x}:{}", s.len, s.base, s.gsi))
        .collect()
}

/// One virtio-mmio block device per drive on the MMIO bus; returns the
/// transports for the DSDT or the command line to announce.
pub fn add_virtio_mmio_drives(
    vm: &Vm,
    config: &VmConfig,
    mem: &GuestMemoryMmap,
    workers: &Arc<Workers>,
    buses: &mut Buses,
) -> Result<Vec<VirtioMmioSlot>, DevError> {
    let mut slots = Vec::new();
    for (i, (d, gsi)) in config.drives.iter().zip(VIRTIO_GSIS).enumerate() {
        let base = VIRTIO_MMIO_BASE + i as u64 * MMIO_LEN;
        let dev = block_device(i, d)?;
        let mut notify = Vec::new();
        for q in 0..u32::from(d.num_queues.max(1)) {
            let evt = EventFd::new(EFD_NONBLOCK).map_err(|source| DevError::EventFd {
                id: d.id.clone(),
                source,
            })?;
            // Notifications never reach the exit loop: KVM signals the
            // worker's eventfd directly when the guest writes this queue's
            // index to QueueNotify.
            vm.fd
                .register_ioevent(&evt, &IoEventAddress::Mmio(base + QUEUE_NOTIFY), q)
                .map_err(|source| DevError::IoEvent {
                    id: d.id.clone(),
                    source,
                })?;
            notify.push(evt);
        }
        let line = Arc::new(vm.irqfd("virtio-mmio", gsi)?);
        let host: Arc<dyn WorkerHost> = workers.clone();
        let t = MmioTransport::new(Box::new(dev), mem.clone(), notify, line, host);
        buses.mmio.insert(
            &format!("virtio-mmio-{i}"),
            base,
            MMIO_LEN,
            Arc::new(Mutex::new(t)),
        )?;
        slots.push(VirtioMmioSlot {
            base,
            len: MMIO_LEN,
            gsi,
        });
    }
    Ok(slots)
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
