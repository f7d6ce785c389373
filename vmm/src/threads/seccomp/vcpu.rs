//! `Vcpu` (`cm-vcpuN`): KVM_RUN and exit dispatch. MMIO and port I/O are
//! emulated on this thread (serial output, PCI config and MSI-X tables,
//! virtio registers); platform changes go to the control thread by
//! channel. Nothing is created here: no fds, no threads. The emulated
//! IDE controller does its disk I/O here, synchronously, as the exit
//! that asked for it waits anyway (`casemate_devices::ata::channel`).

use super::kvm::*;
use super::Rule;
use libc::*;

pub fn rules() -> Vec<Rule> {
    vec![
        Rule::ioctl(KVM_RUN, "running the guest"),
        Rule::ioctl(
            KVM_GET_REGS,
            "registers for the report of a triple fault or fatal stop",
        ),
        Rule::ioctl(
            KVM_GET_SREGS,
            "registers for the report of a triple fault or fatal stop",
        ),
        Rule::ioctl(
            KVM_IOEVENTFD,
            "queue notify ioeventfds follow a BAR the guest moves",
        ),
        Rule::ioctl(
            KVM_REGISTER_COALESCED_MMIO,
            "AHCI's queued PxIS writes follow ABAR when the guest moves it",
        ),
        Rule::ioctl(
            KVM_UNREGISTER_COALESCED_MMIO,
            "AHCI's queued PxIS writes follow ABAR when the guest moves it",
        ),
        Rule::ioctl(
            KVM_SET_GSI_ROUTING,
            "MSI-X table writes update the vector's route",
        ),
        Rule::ioctl(KVM_IRQ_LINE, "legacy devices raising a line from an exit"),
        Rule::ioctl(KVM_SIGNAL_MSI, "an MSI written by an exit"),
        Rule::any(SYS_read, "the serial port's input on stdin"),
        Rule::any(SYS_pread64, "IDE reads (PIO and bus-master DMA)"),
        Rule::any(SYS_pwrite64, "IDE writes (PIO and bus-master DMA)"),
        Rule::any(SYS_preadv, "IDE reads through the disk layer"),
        Rule::any(SYS_pwritev, "IDE writes through the disk layer"),
        Rule::any(SYS_fdatasync, "IDE FLUSH CACHE"),
        Rule::any(SYS_fsync, "IDE FLUSH CACHE"),
        Rule::any(SYS_fallocate, "qcow2 cluster allocation on an IDE write"),
        Rule::any(
            SYS_ftruncate,
            "a qcow2 image grows its file on an IDE write",
        ),
        Rule::any(SYS_lseek, "a qcow2 image finds its file's end"),
        Rule::any(SYS_fstat, "an image's size"),
        Rule::arg(
            SYS_fcntl,
            1,
            F_GETFD as u64,
            "std checks an fd before closing it",
        ),
        Rule::any(
            SYS_sendmsg,
            "vfio-user: region accesses and irq eventfds sent to the device process",
        ),
        Rule::any(SYS_recvmsg, "vfio-user: the device process's replies"),
        Rule::any(SYS_shutdown, "vfio-user: closing a connection that broke"),
        Rule::any(
            SYS_sendto,
            "vfio-user: requests (std sends on a UNIX stream)",
        ),
        Rule::any(
            SYS_recvfrom,
            "vfio-user: replies (std receives on a UNIX stream)",
        ),
        Rule::ioctl(
            VFIO_DEVICE_SET_IRQS,
            "kernel VFIO: MSI/MSI-X enable and vector eventfds of an assigned device",
        ),
        Rule::any(
            SYS_pread64,
            "kernel VFIO: region reads of an assigned device",
        ),
        Rule::any(
            SYS_pwrite64,
            "kernel VFIO: region writes of an assigned device",
        ),
    ]
}
