//! KVM ioctl request numbers for the filters, computed as the kernel's
//! `_IO`/`_IOR`/`_IOW`/`_IOWR` macros do from kvm-bindings' structs
//! (kvm-ioctls keeps its own numbers private). A unit test pins them to
//! the values in <linux/kvm.h> for x86_64.

use kvm_bindings::{
    kvm_cpuid2, kvm_fpu, kvm_ioeventfd, kvm_irq_level, kvm_irq_routing, kvm_irqfd, kvm_lapic_state,
    kvm_msi, kvm_msrs, kvm_pit_config, kvm_regs, kvm_sregs, kvm_userspace_memory_region,
};

const KVMIO: u64 = 0xAE;

const fn io(nr: u64) -> u64 {
    (KVMIO << 8) | nr
}

const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (KVMIO << 8) | nr
}

const W: u64 = 1;
const R: u64 = 2;

pub const KVM_CREATE_VM: u64 = io(0x01);
pub const KVM_CHECK_EXTENSION: u64 = io(0x03);
pub const KVM_GET_VCPU_MMAP_SIZE: u64 = io(0x04);
pub const KVM_GET_SUPPORTED_CPUID: u64 = ioc(R | W, 0x05, size_of::<kvm_cpuid2>());
pub const KVM_CREATE_VCPU: u64 = io(0x41);
pub const KVM_SET_USER_MEMORY_REGION: u64 = ioc(W, 0x46, size_of::<kvm_userspace_memory_region>());
pub const KVM_GET_DIRTY_LOG: u64 = ioc(W, 0x42, size_of::<kvm_bindings::kvm_dirty_log>());
pub const KVM_SET_TSS_ADDR: u64 = io(0x47);
pub const KVM_SET_IDENTITY_MAP_ADDR: u64 = ioc(W, 0x48, size_of::<u64>());
pub const KVM_CREATE_IRQCHIP: u64 = io(0x60);
pub const KVM_IRQ_LINE: u64 = ioc(W, 0x61, size_of::<kvm_irq_level>());
pub const KVM_SET_GSI_ROUTING: u64 = ioc(W, 0x6a, size_of::<kvm_irq_routing>());
pub const KVM_IRQFD: u64 = ioc(W, 0x76, size_of::<kvm_irqfd>());
pub const KVM_CREATE_PIT2: u64 = ioc(W, 0x77, size_of::<kvm_pit_config>());
pub const KVM_IOEVENTFD: u64 = ioc(W, 0x79, size_of::<kvm_ioeventfd>());
pub const KVM_RUN: u64 = io(0x80);
pub const KVM_GET_REGS: u64 = ioc(R, 0x81, size_of::<kvm_regs>());
pub const KVM_SET_REGS: u64 = ioc(W, 0x82, size_of::<kvm_regs>());
pub const KVM_GET_SREGS: u64 = ioc(R, 0x83, size_of::<kvm_sregs>());
pub const KVM_SET_SREGS: u64 = ioc(W, 0x84, size_of::<kvm_sregs>());
pub const KVM_SET_MSRS: u64 = ioc(W, 0x89, size_of::<kvm_msrs>());
pub const KVM_SET_FPU: u64 = ioc(W, 0x8d, size_of::<kvm_fpu>());
pub const KVM_GET_LAPIC: u64 = ioc(R, 0x8e, size_of::<kvm_lapic_state>());
pub const KVM_SET_LAPIC: u64 = ioc(W, 0x8f, size_of::<kvm_lapic_state>());
pub const KVM_SET_CPUID2: u64 = ioc(W, 0x90, size_of::<kvm_cpuid2>());
pub const KVM_GET_TSC_KHZ: u64 = io(0xa3);
pub const KVM_REGISTER_COALESCED_MMIO: u64 =
    ioc(W, 0x67, size_of::<kvm_bindings::kvm_coalesced_mmio_zone>());
pub const KVM_UNREGISTER_COALESCED_MMIO: u64 =
    ioc(W, 0x68, size_of::<kvm_bindings::kvm_coalesced_mmio_zone>());
pub const KVM_SIGNAL_MSI: u64 = ioc(W, 0xa5, size_of::<kvm_msi>());

/// VFIO's ioctls an assigned host device needs after set-up (type ';',
/// base 100, all `_IO`: linux/vfio.h).
pub const VFIO_DEVICE_SET_IRQS: u64 = 0x3b00 | 110;
pub const VFIO_DEVICE_RESET: u64 = 0x3b00 | 111;
pub const VFIO_IOMMU_MAP_DMA: u64 = 0x3b00 | 113;
pub const VFIO_IOMMU_UNMAP_DMA: u64 = 0x3b00 | 114;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_linux_kvm_h() {
        assert_eq!(KVM_CREATE_VM, 0xae01);
        assert_eq!(KVM_GET_SUPPORTED_CPUID, 0xc008_ae05);
        assert_eq!(KVM_SET_USER_MEMORY_REGION, 0x4020_ae46);
        assert_eq!(KVM_GET_DIRTY_LOG, 0x4010_ae42);
        assert_eq!(KVM_SET_IDENTITY_MAP_ADDR, 0x4008_ae48);
        assert_eq!(KVM_SET_GSI_ROUTING, 0x4008_ae6a);
        assert_eq!(KVM_IRQFD, 0x4020_ae76);
        assert_eq!(KVM_CREATE_PIT2, 0x4040_ae77);
        assert_eq!(KVM_IOEVENTFD, 0x4040_ae79);
        assert_eq!(KVM_RUN, 0xae80);
        assert_eq!(KVM_GET_REGS, 0x8090_ae81);
        assert_eq!(KVM_GET_SREGS, 0x8138_ae83);
        assert_eq!(KVM_SET_MSRS, 0x4008_ae89);
        assert_eq!(KVM_GET_LAPIC, 0x8400_ae8e);
        assert_eq!(KVM_SET_CPUID2, 0x4008_ae90);
        assert_eq!(KVM_SIGNAL_MSI, 0x4020_aea5);
        assert_eq!(KVM_REGISTER_COALESCED_MMIO, 0x4010_ae67);
        assert_eq!(KVM_UNREGISTER_COALESCED_MMIO, 0x4010_ae68);
    }
}
