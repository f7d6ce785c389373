//! Boot-time vCPU state: segment and control registers for the PVH and Linux
//! 64-bit entries, the boot GDT and identity page tables the latter needs,
//! FPU, MSRs and the LAPIC's local interrupt pins.

use kvm_bindings::{kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, Msrs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{BOOT_GDT, BOOT_IDT, BOOT_STACK, PD, PDPT, PD_COUNT, PML4};

#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("writing boot {what} to guest memory")]
    Memory {
        what: &'static str,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("KVM {what} on vCPU {vcpu}")]
    Kvm {
        what: &'static str,
        vcpu: u32,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("KVM accepted only {set} of {want} MSRs on vCPU {vcpu}")]
    Msrs { set: usize, want: usize, vcpu: u32 },
}

/// How the first vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// 32-bit protected mode, paging off, EBX = `hvm_start_info`.
    Pvh { entry: u64, start_info: u64 },
    /// Long mode, identity-mapped, RSI = zero page.
    Linux64 { entry: u64, zero_page: u64 },
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

const CODE_SEL: u16 = 0x10;
const DATA_SEL: u16 = 0x18;
const TSS_SEL: u16 = 0x20;

/// A flat segment; `long` picks a 64-bit code segment.
fn segment(selector: u16, type_: u8, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!long),
        s: 1,
        l: u8::from(long),
        g: 1,
        ..Default::default()
    }
}

/// The 8-byte GDT descriptor matching a `kvm_segment`.
fn descriptor(s: &kvm_segment) -> u64 {
    let limit = if s.g == 1 { s.limit >> 12 } else { s.limit };
    let base = s.base;
    let access = u64::from(s.type_)
        | u64::from(s.s) << 4
        | u64::from(s.dpl) << 5
        | u64::from(s.present) << 7;
    let flags = u64::from(s.l) << 1 | u64::from(s.db) << 2 | u64::from(s.g) << 3;
    (u64::from(limit) & 0xffff)
        | (base & 0xff_ffff) << 16
        | access << 40
        | (u64::from(limit >> 16) & 0xf) << 48
        | flags << 52
        | (base >> 24 & 0xff) << 56
}

fn tr() -> kvm_segment {
    kvm_segment {
        selector: TSS_SEL,
        limit: 0x67,
        type_: 0xb,
        present: 1,
        ..Default::default()
    }
}

fn write_gdt(
    mem: &GuestMemoryMmap,
    code: &kvm_segment,
    data: &kvm_segment,
) -> Result<(), RegsError> {
    let gdt: [u64; 5] = [0, 0, descriptor(code), descriptor(data), descriptor(&tr())];
    for (i, d) in gdt.iter().enumerate() {
        mem.write_obj(*d, GuestAddress(BOOT_GDT + 8 * i as u64))
            .map_err(|source| RegsError::Memory {
                what: "GDT",
                source,
            })?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT))
        .map_err(|source| RegsError::Memory {
            what: "IDT",
            source,
        })
}

/// Identity map of the first 4 GiB with 2 MiB pages.
fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let w = |v: u64, at: u64| {
        mem.write_obj(v, GuestAddress(at))
            .map_err(|source| RegsError::Memory {
                what: "page tables",
                source,
            })
    };
    w(PDPT | 0x3, PML4)?;
    for d in 0..PD_COUNT {
        w((PD + d * 0x1000) | 0x3, PDPT + d * 8)?;
        for i in 0..512u64 {
            let addr = (d * 512 + i) << 21;
            w(addr | 0x83, PD + d * 0x1000 + i * 8)?;
        }
    }
    Ok(())
}

/// Program the boot vCPU's registers for `entry`, writing the boot GDT (and
/// page tables for the 64-bit entry) into guest memory.
pub fn setup_boot_vcpu(
    vcpu: &VcpuFd,
    id: u32,
    mem: &GuestMemoryMmap,
    entry: Entry,
) -> Result<(), RegsError> {
    let kvm = |what| {
        move |source| RegsError::Kvm {
            what,
            vcpu: id,
            source,
        }
    };
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(kvm("get_sregs"))?;
    let long = matches!(entry, Entry::Linux64 { .. });
    let code = segment(CODE_SEL, 0xb, long);
    let data = segment(DATA_SEL, 0x3, false);
    write_gdt(mem, &code, &data)?;
    sregs.cs = code;
    (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss) = (data, data, data, data, data);
    sregs.tr = tr();
    sregs.gdt.base = BOOT_GDT;
    sregs.gdt.limit = 5 * 8 - 1;
    sregs.idt.base = BOOT_IDT;
    sregs.idt.limit = 7;
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match entry {
        Entry::Pvh { entry, start_info } => {
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = entry;
            regs.rbx = start_info;
        }
        Entry::Linux64 { entry, zero_page } => {
            write_page_tables(mem)?;
            sregs.cr3 = PML4;
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.cr4 = CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
            regs.rip = entry;
            regs.rsi = zero_page;
            regs.rsp = BOOT_STACK;
            regs.rbp = BOOT_STACK;
        }
    }
    vcpu.set_sregs(&sregs).map_err(kvm("set_sregs"))?;
    vcpu.set_regs(&regs).map_err(kvm("set_regs"))
}

/// x87 and SSE control words as after a reset.
pub fn setup_fpu(vcpu: &VcpuFd, id: u32) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(|source| RegsError::Kvm {
        what: "set_fpu",
        vcpu: id,
        source,
    })
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;

/// Boot MSRs: syscall MSRs cleared, fast strings on, MTRRs enabled with
/// write-back as the default type (else guests map RAM uncached).
pub fn setup_msrs(vcpu: &VcpuFd, id: u32) -> Result<(), RegsError> {
    let list = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, 1),
        (MSR_MTRR_DEF_TYPE, (1 << 11) | 6),
    ];
    let entries: Vec<kvm_msr_entry> = list
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|_| RegsError::Msrs {
        set: 0,
        want: entries.len(),
        vcpu: id,
    })?;
    let set = vcpu.set_msrs(&msrs).map_err(|source| RegsError::Kvm {
        what: "set_msrs",
        vcpu: id,
        source,
    })?;
    if set != entries.len() {
        return Err(RegsError::Msrs {
            set,
            want: entries.len(),
            vcpu: id,
        });
    }
    Ok(())
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// LINT0 delivers the PIC's ExtINT, LINT1 NMIs, as a BIOS leaves them.
pub fn setup_lapic(vcpu: &VcpuFd, id: u32) -> Result<(), RegsError> {
    let kvm = |what| {
        move |source| RegsError::Kvm {
            what,
            vcpu: id,
            source,
        }
    };
    let mut lapic = vcpu.get_lapic().map_err(kvm("get_lapic"))?;
    for (reg, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let bytes: Vec<u8> = lapic.regs[reg..reg + 4].iter().map(|b| *b as u8).collect();
        let v = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let v = (v & !0x700) | (mode << 8);
        for (i, b) in v.to_le_bytes().iter().enumerate() {
            lapic.regs[reg + i] = *b as _;
        }
    }
    vcpu.set_lapic(&lapic).map_err(kvm("set_lapic"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_match_the_well_known_encodings() {
        assert_eq!(
            descriptor(&segment(CODE_SEL, 0xb, true)),
            0x00af_9b00_0000_ffff
        );
        assert_eq!(
            descriptor(&segment(CODE_SEL, 0xb, false)),
            0x00cf_9b00_0000_ffff
        );
        assert_eq!(
            descriptor(&segment(DATA_SEL, 0x3, false)),
            0x00cf_9300_0000_ffff
        );
    }
}
