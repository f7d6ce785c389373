//! The probe's static page tables: an identity map of the first 4 GiB with
//! 2 MiB pages, all present, writable and user-accessible, so CPL3 code can
//! reach RAM, firmware tables and MMIO (LAPIC, IOAPIC, virtio) directly.
//! Built entirely by the assembler: loading CR3 is the only CPL0 work.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .data.boot, "aw", @progbits
    .balign 4096
    .globl pml4
pml4:
    .quad pdpt + 0x7
    .fill 511, 8, 0
pdpt:
    .quad pd + 0x0000 + 0x7
    .quad pd + 0x1000 + 0x7
    .quad pd + 0x2000 + 0x7
    .quad pd + 0x3000 + 0x7
    .fill 508, 8, 0
    /* 2048 PDEs: PS | U/S | RW | P. */
pd:
    pd_i = 0
    .rept 2048
    .quad (pd_i << 21) | 0x87
    pd_i = pd_i + 1
    .endr
"#,
    options(att_syntax)
);
