//! IDT and exception handling. Vectors 0-31 report the vector, error code,
//! RIP (and CR2 for #PF) on COM1 and end the VM with reason=exception, except
//! a #UD at `park_ud2`, which is how a CPL3 CPU asks to halt. Vectors 32-255
//! are interrupts the probe never enables; they are dropped with a bare iretq.

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::report::Line;

global_asm!(
    r#"
    /* Stubs are 16 bytes apart so the IDT can be a table of constants:
       gate n points at isr_stubs + 16*n (isr_o* come from link.ld). */
    .section .isr, "ax", @progbits
    .balign 4096
    .globl isr_stubs
isr_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .balign 16
    .if (\v == 8) || (\v == 10) || (\v == 11) || (\v == 12) || (\v == 13) || (\v == 14) || (\v == 17) || (\v == 21) || (\v == 29) || (\v == 30)
    .else
    pushq $0
    .endif
    pushq $\v
    jmp isr_common
    .endr
    .balign 16
isr_ignore:
    iretq

    /* Stack: vector, error, rip, cs, rflags, rsp, ss. */
isr_common:
    cmpq $6, (%rsp)
    jne 1f
    pushq %rax
    leaq park_ud2(%rip), %rax
    cmpq %rax, 24(%rsp)
    popq %rax
    jne 1f
2:  cli
    hlt
    jmp 2b
1:  movq %rsp, %rdi
    movq %cr2, %rsi
    andq $-16, %rsp
    call exception_report
    jmp 2b

    .section .data.boot, "aw", @progbits
    .balign 16
    .globl idt, idtr
idt:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32
    .short isr_o0 + 16*\v
    .short 0x08
    .byte 0
    .byte 0x8e
    .short isr_o1
    .long isr_o2
    .long 0
    .endr
    .rept 256 - 33
    .short isr_o0 + 16*32
    .short 0x08
    .byte 0
    .byte 0x8e
    .short isr_o1
    .long isr_o2
    .long 0
    .endr
idt_end:
    .balign 8
idtr:
    .short idt_end - idt - 1
    .quad idt
"#,
    options(att_syntax)
);

/// What the stubs push, lowest address first.
#[repr(C)]
struct Frame {
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

static IN_REPORT: AtomicBool = AtomicBool::new(false);

/// Runs at CPL0 (emulated, slow, but this is the failure path only).
#[no_mangle]
extern "C" fn exception_report(frame: *const Frame, cr2: u64) -> ! {
    // A fault inside the reporter, or a second CPU faulting at the same
    // time, must not recurse or interleave: the first report wins.
    if IN_REPORT.swap(true, Ordering::AcqRel) {
        crate::boot::park();
    }
    // SAFETY: `frame` is the stack pointer isr_common had after the stub
    // pushed vector and error code onto the CPU-pushed frame; it points at
    // seven valid u64s.
    let f = unsafe { &*frame };
    let mut line = Line::topic("exception");
    line.kv_u("vector", f.vector)
        .kv_hex("error", f.error)
        .kv_hex("rip", f.rip)
        .kv_hex("cs", f.cs)
        .kv_hex("rflags", f.rflags)
        .kv_hex("rsp", f.rsp)
        .kv_hex("ss", f.ss);
    if f.vector == 14 {
        line.kv_hex("cr2", cr2);
    }
    line.emit();
    crate::finish(Err("exception"))
}
