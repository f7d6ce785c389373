/* A tiny PVH guest for the boot bench (benches/benches/boot.rs): one byte
   to COM1, then end the VM: isa-debug-exit (port 0xf4) for QEMU, the
   hardware-reduced ACPI sleep control register (port 0x600) for Casemate. */
    .section .note.Xen, "a"
    .p2align 2
    .long 4            /* name size */
    .long 4            /* desc size */
    .long 18           /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long _start
    .text
    .code32
    .globl _start
_start:
    mov $0x3f8, %dx
    mov $'x', %al
    out %al, %dx
    mov $'\n', %al
    out %al, %dx
    mov $0xf4, %dx
    xor %eax, %eax
    out %eax, %dx
    mov $0x600, %dx
    mov $0x34, %al
    out %al, %dx
1:  hlt
    jmp 1b
