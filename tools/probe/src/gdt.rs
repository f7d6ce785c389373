//! GDT and per-CPU TSSs, assembled statically. Selectors: 0x08 kernel code,
//! 0x10 kernel data, 0x1b user data, 0x23 user code, 0x28 + 16*n the TSS of
//! CPU n. All TSSs share one I/O bitmap that allows every port: IOPL=3 does
//! not work at CPL3 on the target host, the bitmap does.

use core::arch::global_asm;

use crate::boot::{KSTACK_SIZE, MAX_CPUS};

/// TSSs are 128 bytes apart; the shared bitmap follows the last one.
const TSS_STRIDE: usize = 128;
const IOMAP_OFFSET: usize = TSS_STRIDE * MAX_CPUS;

global_asm!(
    r#"
    .section .data.boot, "aw", @progbits
    .balign 16
    .globl gdt, gdt_end, gdtr
gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00cff2000000ffff
    .quad 0x00affa000000ffff
    /* 64-bit available TSS descriptors; tss_b* come from link.ld. The limit
       covers the bitmap and its terminating 0xff byte. */
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    .short {iomap} - {stride}*\n + 8192
    .short tss_b0 + {stride}*\n
    .byte tss_b2
    .byte 0x89
    .byte 0
    .byte tss_b3
    .long tss_b4
    .long 0
    .endr
gdt_end:
    .balign 8
gdtr:
    .short gdt_end - gdt - 1
    .quad gdt

    .balign 4096
    .globl tss_area
tss_area:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    .long 0
    .quad kstacks + {kstack}*(\n + 1)
    .quad 0, 0, 0
    .quad 0, 0, 0, 0, 0, 0, 0
    .quad 0
    .short 0
    .short {iomap} - {stride}*\n
    .fill {stride} - 104, 1, 0
    .endr
io_bitmap:
    .fill 8192, 1, 0
    .byte 0xff
"#,
    iomap = const IOMAP_OFFSET,
    stride = const TSS_STRIDE,
    kstack = const KSTACK_SIZE,
    options(att_syntax)
);

const _: () = assert!(IOMAP_OFFSET + 8192 <= 0xffff);
