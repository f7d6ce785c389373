//! Entry points and the one-way trip from the loader's CPU state to CPL3.
//! PVH (32-bit, paging off) and the Linux 64-bit boot protocol both load the
//! probe's own page tables, GDT, TSS and IDT, then `iretq` to `probe_main` at
//! CPL3. Every CPL0 instruction is emulated on the target host (~1 us each),
//! so this path is a few dozen instructions and builds no tables at run time.

use core::arch::global_asm;

/// Values of `probe_main`'s first argument: which entry the loader used.
pub const ENTRY_PVH: u32 = 1;
pub const ENTRY_LINUX64: u32 = 2;

/// Kernel (CPL0) stack per CPU: exception reports run on it.
pub const KSTACK_SIZE: usize = 8192;
/// User stack of an application processor; the BSP gets `BSP_STACK_SIZE`.
pub const AP_STACK_SIZE: usize = 16384;
pub const BSP_STACK_SIZE: usize = 65536;
pub const MAX_CPUS: usize = 16;

global_asm!(
    r#"
    .set KCODE, 0x08
    .set KDATA, 0x10
    .set UDATA, 0x1b
    .set UCODE, 0x23
    .set TSS0,  0x28
    /* CR4: PAE | OSFXSR | OSXMMEXCPT. CR0: PG | NE | ET | MP | PE (EM clear). */
    .set BOOT_CR4, 0x620
    .set BOOT_CR0, 0x80000033
    .set MSR_EFER, 0xc0000080
    .set EFER_LME, 0x100

    /* XEN_ELFNOTE_PHYS32_ENTRY. desc is 8 bytes because QEMU reads a
       size_t there for ELF64 images (as Linux emits it). */
    .section .note.pvh, "a", @note
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad pvh_entry

    .section .text.boot, "ax", @progbits

    /* PVH: 32-bit protected mode, paging off, EBX = hvm_start_info. */
    .code32
    .globl pvh_entry
pvh_entry:
    cli
    movl %ebx, %esi
    movl ${entry_pvh}, %edi
    lgdtl gdtr
    movl $BOOT_CR4, %eax
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LME, %eax
    wrmsr
    movl $BOOT_CR0, %eax
    movl %eax, %cr0
    ljmpl $KCODE, $pvh_long

    .code64
pvh_long:
    /* Upper halves of GPRs are undefined after leaving 32-bit mode. */
    movl %esi, %esi
    movl %edi, %edi
    jmp long_common

    /* Linux 64-bit boot protocol: long mode, CPL0, RSI = boot_params. */
    .globl linux64_entry
linux64_entry:
    cli
    movl ${entry_linux64}, %edi
    lgdt gdtr(%rip)
    /* OR into the loader's CR4 rather than replace it: clearing a bit such
       as LA57 with paging on would #GP. */
    movq %cr4, %rax
    orq $BOOT_CR4, %rax
    movq %rax, %cr4
    leaq pml4(%rip), %rax
    movq %rax, %cr3
    /* Rust code uses SSE: EM off, MP and NE on. */
    movq %cr0, %rax
    andq $~4, %rax
    orq $0x22, %rax
    movq %rax, %cr0
    /* Far return reloads CS from our GDT; the loader's stack may be gone
       with its page tables, so switch first. */
    leaq kstacks+{kstack}(%rip), %rsp
    pushq $KCODE
    leaq long_common(%rip), %rax
    pushq %rax
    lretq

    /* Both entries: EDI = entry kind, RSI = boot info address. */
long_common:
    movl $KDATA, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movw $TSS0, %ax
    ltrw %ax
    lidt idtr(%rip)
    /* CPUID executed at CPL3 here reaches the host CPU, not the VMM's
       CPUID table, so the leaves the probe needs are read now, at CPL0.
       Must match io::CPUID_LEAVES. */
    .irp k, 0,1,2,3,4,5,6
    movl cpuid_leaves+4*\k(%rip), %eax
    xorl %ecx, %ecx
    cpuid
    movl %eax, cpuid_snapshot+16*\k(%rip)
    movl %ebx, cpuid_snapshot+16*\k+4(%rip)
    movl %ecx, cpuid_snapshot+16*\k+8(%rip)
    movl %edx, cpuid_snapshot+16*\k+12(%rip)
    .endr
    leaq kstacks+{kstack}(%rip), %rsp
    pushq $UDATA
    leaq ustack_bsp+{bsp_stack}(%rip), %rax
    pushq %rax
    /* IF=0: no interrupt is ever wanted; IOPL=0 (ports go via the TSS). */
    pushq $0x2
    pushq $UCODE
    leaq bsp_user_entry(%rip), %rax
    pushq %rax
    iretq

    /* CPL3 from here on. The BSS is cleared here, natively, rather than
       trusting every loader to zero memsz beyond filesz. */
bsp_user_entry:
    movq %rdi, %r12
    movq %rsi, %r13
    leaq __bss_start(%rip), %rdi
    leaq __bss_end(%rip), %rcx
    subq %rdi, %rcx
    xorl %eax, %eax
    cld
    rep stosb
    movq %r12, %rdi
    movq %r13, %rsi
    call probe_main
    /* A CPL3 CPU stops by faulting here: the #UD handler recognizes this
       address and halts at CPL0 (hlt itself faults at CPL3). */
    .globl park_ud2
park_ud2:
    ud2
    jmp park_ud2

    .section .data.boot, "aw", @progbits
    .balign 16
cpuid_leaves:
    .long 0, 1, 0xb, 0x15, 0x16, 0x40000000, 0x40000010
    .globl cpuid_snapshot
cpuid_snapshot:
    .fill 7 * 16, 1, 0

    .section .stacks, "aw", @nobits
    .balign 4096
    .globl kstacks, ustack_bsp, ustack_ap
kstacks:
    .skip {kstack} * {max_cpus}
ustack_bsp:
    .skip {bsp_stack}
ustack_ap:
    .skip {ap_stack} * {max_cpus}
"#,
    entry_pvh = const ENTRY_PVH,
    entry_linux64 = const ENTRY_LINUX64,
    kstack = const KSTACK_SIZE,
    bsp_stack = const BSP_STACK_SIZE,
    ap_stack = const AP_STACK_SIZE,
    max_cpus = const MAX_CPUS,
    options(att_syntax)
);

/// Stops the calling CPU for good. At CPL3 this faults into the #UD handler,
/// which halts with interrupts off; at CPL0 (exception path) it does the same.
pub fn park() -> ! {
    // SAFETY: jumps to the park label, which never returns and touches no
    // Rust state; the stack is abandoned.
    unsafe { core::arch::asm!("jmp park_ud2", options(noreturn)) }
}
