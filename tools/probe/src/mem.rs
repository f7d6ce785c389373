//! memcpy, memmove, memset, memcmp and bcmp, which the compiler emits calls
//! to and which no libc provides here. Written with string instructions in
//! inline asm so LLVM cannot turn their bodies back into calls to themselves.

use core::arch::asm;

#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid for n bytes.
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize).wrapping_sub(src as usize) >= n {
        // dst is below src or past its end: a forward copy never reads a
        // byte it already overwrote.
        // SAFETY: the caller guarantees both ranges are valid for n bytes.
        unsafe {
            asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
                 options(nostack, preserves_flags));
        }
    } else {
        // SAFETY: as above; copies backwards from the last byte, then
        // restores DF=0 as the ABI requires.
        unsafe {
            asm!("std", "rep movsb", "cld",
                 inout("rcx") n => _,
                 inout("rdi") dst.add(n - 1) => _,
                 inout("rsi") src.add(n - 1) => _,
                 options(nostack));
        }
    }
    dst
}

#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, val: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees dst is valid for n bytes.
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") val as u8,
             options(nostack, preserves_flags));
    }
    dst
}

#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let res: i32;
    // SAFETY: the caller guarantees both ranges are valid for n bytes.
    // `repe cmpsb` stops one past the first differing byte.
    unsafe {
        asm!(
            "xor eax, eax",
            "test rcx, rcx",
            "jz 2f",
            "repe cmpsb",
            "je 2f",
            "movzx eax, byte ptr [rdi - 1]",
            "movzx edx, byte ptr [rsi - 1]",
            "sub eax, edx",
            "2:",
            inout("rcx") n => _, inout("rdi") a => _, inout("rsi") b => _,
            out("eax") res, out("edx") _,
            options(nostack, readonly),
        );
    }
    res
}

#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}
