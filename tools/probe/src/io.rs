//! Port I/O, physical-memory access, rdtsc and the CPUID values boot.rs
//! snapshots at CPL0. Port I/O works at CPL3 because the TSS I/O bitmap allows
//! every port; memory below 4 GiB because the page tables map it for CPL3.

use core::arch::asm;

/// Highest physical address + 1 that the page tables map.
pub const MAPPED_LIMIT: u64 = 1 << 32;

pub fn outb(port: u16, val: u8) {
    // SAFETY: port writes have no effect on Rust memory; the TSS allows them.
    unsafe { asm!("out dx, al", in("dx") port, in("al") val, options(nomem, nostack, preserves_flags)) }
}

pub fn outw(port: u16, val: u16) {
    // SAFETY: as for `outb`.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") val, options(nomem, nostack, preserves_flags)) }
}

pub fn outl(port: u16, val: u32) {
    // SAFETY: as for `outb`.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") val, options(nomem, nostack, preserves_flags)) }
}

pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port reads have no effect on Rust memory; the TSS allows them.
    unsafe { asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags)) }
    v
}

pub fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: as for `inb`.
    unsafe { asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack, preserves_flags)) }
    v
}

pub fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: as for `inb`.
    unsafe { asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags)) }
    v
}

/// True when `[addr, addr+len)` lies in mapped memory and does not touch
/// address 0 (which Rust treats as null).
pub fn phys_ok(addr: u64, len: u64) -> bool {
    addr != 0 && len <= MAPPED_LIMIT && addr <= MAPPED_LIMIT - len
}

/// Reads a plain-data value from physical memory (RAM or firmware tables).
/// Returns None outside the mapped range.
pub fn phys_read<T: Copy>(addr: u64) -> Option<T> {
    if !phys_ok(addr, core::mem::size_of::<T>() as u64) {
        return None;
    }
    // SAFETY: the range is identity-mapped and non-null (checked above); T
    // is Copy plain data used only for integers here, valid for any bits.
    Some(unsafe { core::ptr::read_unaligned(addr as *const T) })
}

pub fn phys_u8(addr: u64) -> Option<u8> {
    phys_read::<u8>(addr)
}

pub fn phys_u16(addr: u64) -> Option<u16> {
    phys_read::<u16>(addr)
}

pub fn phys_u32(addr: u64) -> Option<u32> {
    phys_read::<u32>(addr)
}

pub fn phys_u64(addr: u64) -> Option<u64> {
    phys_read::<u64>(addr)
}

/// MMIO read; every call is one access (each may exit to the VMM).
pub fn mmio_read32(addr: u64) -> u32 {
    assert!(phys_ok(addr, 4) && addr % 4 == 0);
    // SAFETY: mapped, aligned, non-null (asserted); device registers are
    // not Rust memory.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

pub fn mmio_read16(addr: u64) -> u16 {
    assert!(phys_ok(addr, 2) && addr % 2 == 0);
    // SAFETY: as for `mmio_read32`.
    unsafe { core::ptr::read_volatile(addr as *const u16) }
}

pub fn mmio_read8(addr: u64) -> u8 {
    assert!(phys_ok(addr, 1));
    // SAFETY: as for `mmio_read32`.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

pub fn mmio_write32(addr: u64, val: u32) {
    assert!(phys_ok(addr, 4) && addr % 4 == 0);
    // SAFETY: as for `mmio_read32`.
    unsafe { core::ptr::write_volatile(addr as *mut u32, val) }
}

pub fn mmio_write8(addr: u64, val: u8) {
    assert!(phys_ok(addr, 1));
    // SAFETY: as for `mmio_read32`.
    unsafe { core::ptr::write_volatile(addr as *mut u8, val) }
}

pub fn mmio_write16(addr: u64, val: u16) {
    assert!(phys_ok(addr, 2) && addr % 2 == 0);
    // SAFETY: as for `mmio_read32`.
    unsafe { core::ptr::write_volatile(addr as *mut u16, val) }
}

/// Copies `src` into physical memory at `addr`.
pub fn phys_write_bytes(addr: u64, src: &[u8]) {
    assert!(phys_ok(addr, src.len() as u64));
    // SAFETY: the target range is mapped RAM (asserted in range; callers
    // pick a range the probe owns) and cannot overlap `src`, which is in the
    // probe image above 1 MiB.
    unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), addr as *mut u8, src.len()) }
}

#[derive(Clone, Copy)]
#[repr(C)]
#[allow(dead_code)] // edx: part of the layout the asm writes
pub struct CpuidResult {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

extern "C" {
    /// Filled by boot.rs at CPL0: (eax, ebx, ecx, edx) per CPUID_LEAVES entry.
    static cpuid_snapshot: [CpuidResult; CPUID_LEAVES.len()];
}

/// Leaves boot.rs snapshots (subleaf 0). Must match the asm list there.
pub const CPUID_LEAVES: [u32; 7] = [0, 1, 0xb, 0x15, 0x16, 0x4000_0000, 0x4000_0010];

/// The VMM's CPUID for `leaf` (subleaf 0), as the BSP saw it at CPL0.
/// `cpuid` executed at CPL3 on the target host runs on the host CPU and
/// reports the host's values, so the probe never executes it there.
pub fn cpuid(leaf: u32) -> Option<CpuidResult> {
    let i = CPUID_LEAVES.iter().position(|&l| l == leaf)?;
    // SAFETY: written once by the BSP at CPL0 before any Rust code ran,
    // read-only afterwards.
    Some(unsafe { core::ptr::read_volatile(core::ptr::addr_of!(cpuid_snapshot[i])) })
}

pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc is allowed at CPL3 (CR4.TSD is clear) and has no memory effects.
    #[allow(unused_unsafe)]
    unsafe { core::arch::x86_64::_rdtsc() }
}
