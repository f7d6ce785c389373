//! `Ctl` (`cm-ctl`, one per boot): builds the VM (KVM_CREATE_VM, memory
//! slot, irqchip, PIT), its devices (eventfds, irqfds, ioeventfds, GSI
//! routes, io_uring rings, timerfds) and vCPUs, loads the kernel from the
//! files opened at start-up, then runs the control loop: starts and stops
//! device workers, moves BARs, kicks vCPUs out of KVM_RUN.

use super::kvm::*;
use super::Rule;
use libc::*;

pub fn rules() -> Vec<Rule> {
    vec![
        Rule::ioctl(
            KVM_CREATE_VM,
            "a VM per boot, from the /dev/kvm fd opened at start-up",
        ),
        Rule::ioctl(
            KVM_CHECK_EXTENSION,
            "capability checks while building the VM",
        ),
        Rule::ioctl(KVM_GET_VCPU_MMAP_SIZE, "mapping each vCPU's kvm_run page"),
        Rule::ioctl(KVM_SET_USER_MEMORY_REGION, "guest RAM slots"),
        Rule::ioctl(
            KVM_REGISTER_COALESCED_MMIO,
            "IDE data ports queue their writes (vstate::coalesced)",
        ),
        Rule::ioctl(
            KVM_SET_TSS_ADDR,
            "the VM's TSS address (Intel VMX needs it)",
        ),
        Rule::ioctl(
            KVM_SET_IDENTITY_MAP_ADDR,
            "the identity map page (Intel VMX needs it)",
        ),
        Rule::ioctl(KVM_CREATE_IRQCHIP, "in-kernel PIC, IOAPIC and LAPICs"),
        Rule::ioctl(KVM_CREATE_PIT2, "in-kernel PIT"),
        Rule::ioctl(
            libc::TUNSETOFFLOAD,
            "virtio-net: the offloads the guest accepted go to its tap at start and reset",
        ),
        Rule::ioctl(
            libc::TUNSETQUEUE,
            "virtio-net multiqueue: tap queues past the pairs in use are detached at start",
        ),
        Rule::ioctl(
            KVM_IRQFD,
            "wiring device interrupts (INTx, MSI-X) to eventfds",
        ),
        Rule::ioctl(
            KVM_IOEVENTFD,
            "queue notifications as ioeventfds; re-registered on BAR moves",
        ),
        Rule::ioctl(
            KVM_SET_GSI_ROUTING,
            "the default IRQ routes and MSI-X routes",
        ),
        Rule::ioctl(
            KVM_IRQ_LINE,
            "legacy interrupt lines set from the control thread",
        ),
        Rule::ioctl(KVM_CREATE_VCPU, "the vCPUs of each boot"),
        Rule::ioctl(KVM_SET_CPUID2, "each vCPU's CPUID"),
        Rule::ioctl(KVM_SET_MSRS, "each vCPU's boot MSRs"),
        Rule::ioctl(KVM_SET_FPU, "each vCPU's FPU state"),
        Rule::ioctl(
            KVM_GET_LAPIC,
            "LINT0/LINT1 set-up of each vCPU's local APIC",
        ),
        Rule::ioctl(
            KVM_SET_LAPIC,
            "LINT0/LINT1 set-up of each vCPU's local APIC",
        ),
        Rule::ioctl(KVM_GET_TSC_KHZ, "the TSC frequency for the CPUID leaves"),
        Rule::ioctl(KVM_GET_SREGS, "boot vCPU segment and paging state"),
        Rule::ioctl(KVM_SET_SREGS, "boot vCPU segment and paging state"),
        Rule::ioctl(KVM_SET_REGS, "boot vCPU entry registers"),
        Rule::no_exec(
            SYS_mmap,
            "kvm_run pages and io_uring rings (shared, never executable)",
        ),
        Rule::arg(
            SYS_eventfd2,
            1,
            (EFD_NONBLOCK) as u64,
            "irqfds, ioeventfds and worker wake-ups",
        ),
        Rule::arg(
            SYS_eventfd2,
            1,
            (EFD_NONBLOCK | EFD_CLOEXEC) as u64,
            "irqfds, ioeventfds and worker wake-ups",
        ),
        Rule::arg(SYS_eventfd2, 1, 0, "irqfds, ioeventfds and worker wake-ups"),
        Rule::arg(
            SYS_eventfd2,
            1,
            EFD_CLOEXEC as u64,
            "irqfds, ioeventfds and worker wake-ups",
        ),
        Rule::arg(
            SYS_fcntl,
            1,
            F_DUPFD_CLOEXEC as u64,
            "sharing an eventfd between a device and its worker",
        ),
        Rule::arg(
            SYS_fcntl,
            1,
            F_GETFD as u64,
            "std checks an fd before closing it",
        ),
        Rule::any(SYS_epoll_create1, "each device worker's epoll set"),
        Rule::any(SYS_epoll_ctl, "each device worker's epoll set"),
        Rule::any(SYS_io_uring_setup, "a block device's io_uring ring"),
        Rule::any(SYS_io_uring_register, "the ring's completion eventfd"),
        Rule::any(SYS_timerfd_create, "the entropy device's rate-limit timer"),
        Rule::any(
            SYS_timerfd_settime,
            "a display's refresh timer, armed at boot",
        ),
        Rule::any(
            SYS_read,
            "reading the kernel and initrd from their open files; eventfds",
        ),
        Rule::any(
            SYS_pread64,
            "reading the kernel and initrd from their open files",
        ),
        Rule::any(SYS_lseek, "kernel and initrd sizes"),
        Rule::arg(
            SYS_statx,
            2,
            AT_EMPTY_PATH as u64,
            "the size of an open file (fd only, no path)",
        ),
        Rule::any(SYS_fstat, "the size of an open file"),
        Rule::arg(
            SYS_madvise,
            2,
            MADV_POPULATE_WRITE as u64,
            "helping guest RAM population finish before the first boot",
        ),
        Rule::arg(
            SYS_prctl,
            0,
            PR_SET_THP_DISABLE as u64,
            "guest RAM population toggles THP as the prealloc threads do",
        ),
        Rule::arg(
            SYS_prctl,
            0,
            PR_GET_THP_DISABLE as u64,
            "guest RAM population toggles THP as the prealloc threads do",
        ),
        Rule::any(
            SYS_tgkill,
            "kicking vCPU threads out of KVM_RUN (pthread_kill)",
        ),
        Rule::any(
            SYS_sendmsg,
            "vfio-user: setting up an assigned device each boot (DMA map with RAM fds, irq eventfds)",
        ),
        Rule::any(SYS_recvmsg, "vfio-user: the device process's replies (region fds)"),
        Rule::any(SYS_shutdown, "vfio-user: closing a connection that broke"),
        Rule::any(SYS_sendto, "vfio-user: requests (std sends on a UNIX stream)"),
        Rule::any(SYS_recvfrom, "vfio-user: replies (std receives on a UNIX stream)"),
        Rule::ioctl(
            VFIO_DEVICE_SET_IRQS,
            "kernel VFIO: MSI/MSI-X enable and vector eventfds of an assigned device",
        ),
        Rule::any(SYS_pread64, "kernel VFIO: region reads of an assigned device"),
        Rule::any(SYS_pwrite64, "kernel VFIO: region writes of an assigned device"),
        Rule::ioctl(VFIO_DEVICE_RESET, "kernel VFIO: device reset each boot"),
        Rule::ioctl(VFIO_IOMMU_MAP_DMA, "kernel VFIO: guest RAM mapped for DMA each boot"),
        Rule::ioctl(VFIO_IOMMU_UNMAP_DMA, "kernel VFIO: DMA unmapped at the end of a boot"),
    ]
}
