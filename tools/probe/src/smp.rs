//! Application-processor bring-up. The BSP copies a real-mode trampoline to
//! 0x8000 and sends INIT-SIPI-SIPI through the xAPIC ICR (MMIO, from CPL3).
//! Each AP goes straight to long mode, takes the next CPU index, loads its
//! TSS, drops to CPL3, records its APIC id in `ap_main`, then parks.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::boot::{AP_STACK_SIZE, KSTACK_SIZE, MAX_CPUS};
use crate::io::{mmio_read32, mmio_write32, phys_write_bytes, rdtsc};
use crate::tsc;

/// Where the trampoline runs; the SIPI vector is this address >> 12.
pub const TRAMPOLINE: u64 = 0x8000;

const LAPIC: u64 = 0xfee0_0000;
const LAPIC_ID: u64 = LAPIC + 0x20;
const LAPIC_SVR: u64 = LAPIC + 0xf0;
const LAPIC_ICR_LO: u64 = LAPIC + 0x300;
const LAPIC_ICR_HI: u64 = LAPIC + 0x310;
const ICR_INIT_ASSERT: u32 = 0x4500;
const ICR_STARTUP: u32 = 0x4600;
const ICR_PENDING: u32 = 1 << 12;

global_asm!(
    r#"
    .section .text.ap_tramp, "ax", @progbits
    .code16
    .globl ap_tramp_start, ap_tramp_end
ap_tramp_start:
    cli
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (ap_tramp_gdtr - ap_tramp_start)
    movl $0x620, %eax
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    /* PG and PE together: from real mode straight into long mode. */
    movl $0x80000033, %eax
    movl %eax, %cr0
    ljmpl $0x08, $ap_long64
    .balign 8
ap_tramp_gdtr:
    .short gdt_end - gdt - 1
    .long gdt
ap_tramp_end:

    .code64
ap_long64:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $1, %eax
    lock xaddl %eax, ap_next_index(%rip)
    cmpl ${max_cpus}, %eax
    jae 9f
    movl %eax, %edi
    movl %eax, %ecx
    shll $4, %ecx
    addl $0x28, %ecx
    ltrw %cx
    lidt idtr(%rip)
    leal 1(%rdi), %ecx
    imull ${kstack}, %ecx
    leaq kstacks(%rip), %rsp
    addq %rcx, %rsp
    leal 1(%rdi), %ecx
    imull ${ap_stack}, %ecx
    leaq ustack_ap(%rip), %rdx
    addq %rcx, %rdx
    pushq $0x1b
    pushq %rdx
    pushq $0x2
    pushq $0x23
    leaq ap_user_entry(%rip), %rax
    pushq %rax
    iretq
9:  cli
    hlt
    jmp 9b

ap_user_entry:
    call ap_main
    jmp park_ud2

    .section .data.boot, "aw", @progbits
    .balign 4
ap_next_index:
    .long 1
"#,
    max_cpus = const MAX_CPUS,
    kstack = const KSTACK_SIZE,
    ap_stack = const AP_STACK_SIZE,
    options(att_syntax)
);

extern "C" {
    static ap_tramp_start: u8;
    static ap_tramp_end: u8;
}

/// APIC id + 1 reported by the AP with that CPU index (0 = not yet).
static AP_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
static AP_COUNT: AtomicU32 = AtomicU32::new(0);

/// This CPU's APIC id, from the xAPIC ID register. Not from CPUID: on the
/// target host `cpuid` at CPL3 runs on the host CPU (it reported the host's
/// APIC ids, so the BSP once sent INIT to itself).
pub fn apic_id() -> u32 {
    mmio_read32(LAPIC_ID) >> 24
}

/// First Rust code an AP runs, at CPL3 on its own stack.
#[no_mangle]
extern "C" fn ap_main(index: u32) {
    let id = apic_id();
    AP_IDS[index as usize].store(id + 1, Ordering::Release);
    AP_COUNT.fetch_add(1, Ordering::AcqRel);
}

fn send_ipi(apic_id: u32, icr_lo: u32) {
    mmio_write32(LAPIC_ICR_HI, apic_id << 24);
    mmio_write32(LAPIC_ICR_LO, icr_lo);
    // Wait (briefly) for the delivery-status bit; KVM's LAPIC clears it at once.
    for _ in 0..1000 {
        if mmio_read32(LAPIC_ICR_LO) & ICR_PENDING == 0 {
            break;
        }
    }
}

/// Starts every AP in `ids` (all but `bsp`) and waits up to `timeout_us`
/// for them to report. Writes the reported APIC ids to `out` and returns how
/// many APs reported.
pub fn start_aps(ids: &[u32], bsp: u32, timeout_us: u64, out: &mut [u32]) -> usize {
    let aps = ids.iter().filter(|&&id| id != bsp).count();
    if aps == 0 {
        return 0;
    }
    // SAFETY: the two labels bound the trampoline's bytes inside the
    // image's .text, which is mapped, initialized and never written.
    let tramp = unsafe {
        let start = core::ptr::addr_of!(ap_tramp_start);
        let end = core::ptr::addr_of!(ap_tramp_end);
        core::slice::from_raw_parts(start, end as usize - start as usize)
    };
    // Boot info has been copied out already, so low memory is free to reuse.
    phys_write_bytes(TRAMPOLINE, tramp);

    // Software-enable the LAPIC (spurious vector 0xff, which the IDT drops).
    mmio_write32(LAPIC_SVR, 0x1ff);
    let sipi = ICR_STARTUP | (TRAMPOLINE >> 12) as u32;
    for &id in ids.iter().filter(|&&id| id != bsp) {
        send_ipi(id, ICR_INIT_ASSERT);
    }
    // The MP spec's 10 ms INIT-to-SIPI wait is for real hardware; KVM
    // latches INIT and SIPI and handles them in order, and Linux waits 0 on
    // modern CPUs. A short pause keeps slower emulations safe.
    tsc::delay_us(100);
    for &id in ids.iter().filter(|&&id| id != bsp) {
        send_ipi(id, sipi);
    }
    tsc::delay_us(200);
    // A second SIPI is ignored by an AP that already left wait-for-SIPI.
    if (AP_COUNT.load(Ordering::Acquire) as usize) < aps {
        for &id in ids.iter().filter(|&&id| id != bsp) {
            send_ipi(id, sipi);
        }
    }

    let deadline = rdtsc().wrapping_add(tsc::us_to_ticks(timeout_us));
    while (AP_COUNT.load(Ordering::Acquire) as usize) < aps {
        if (rdtsc().wrapping_sub(deadline) as i64) >= 0 {
            break;
        }
        core::hint::spin_loop();
    }
    let mut n = 0;
    for slot in AP_IDS.iter().skip(1) {
        let v = slot.load(Ordering::Acquire);
        if v != 0 && n < out.len() {
            out[n] = v - 1;
            n += 1;
        }
    }
    n
}
