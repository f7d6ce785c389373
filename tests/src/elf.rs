//! Tiny 64-bit ELF guests made of a few instructions, entered through the
//! Linux 64-bit protocol at CPL0, for exit-path tests the probe should not
//! exercise (triple faults, reset pulses).

/// A minimal ELF64 whose single segment holds `code` at 1 MiB.
pub fn tiny_elf64(code: &[u8]) -> Vec<u8> {
    const BASE: u64 = 0x100000;
    let data_off = 64u64 + 56;
    let mut b = vec![0u8; 64];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[6] = 1;
    b[16] = 2;
    b[18] = 62;
    b[20] = 1;
    b[24..32].copy_from_slice(&BASE.to_le_bytes());
    b[32..40].copy_from_slice(&64u64.to_le_bytes());
    b[52..54].copy_from_slice(&64u16.to_le_bytes());
    b[54..56].copy_from_slice(&56u16.to_le_bytes());
    b[56..58].copy_from_slice(&1u16.to_le_bytes());
    let mut ph = vec![0u8; 56];
    ph[0..4].copy_from_slice(&1u32.to_le_bytes());
    ph[4..8].copy_from_slice(&5u32.to_le_bytes());
    ph[8..16].copy_from_slice(&data_off.to_le_bytes());
    ph[16..24].copy_from_slice(&BASE.to_le_bytes());
    ph[24..32].copy_from_slice(&BASE.to_le_bytes());
    ph[32..40].copy_from_slice(&(code.len() as u64).to_le_bytes());
    ph[40..48].copy_from_slice(&(code.len() as u64).to_le_bytes());
    b.extend_from_slice(&ph);
    b.extend_from_slice(code);
    b
}

/// `mov $0xfe, %al; out %al, $0x64` (i8042 reset pulse), then `ud2`.
pub const RESET_THEN_UD2: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64, 0x0f, 0x0b];
/// `ud2` with no IDT: #UD, #GP, #DF, triple fault.
pub const UD2: &[u8] = &[0x0f, 0x0b];
/// Prints `X` on COM1 then `ud2`.
pub const PRINT_X_THEN_UD2: &[u8] = &[0x66, 0xba, 0xf8, 0x03, 0xb0, b'X', 0xee, 0x0f, 0x0b];

/// A copy of a PVH-capable ELF with its PVH note's type changed so VMMs
/// enter it through the Linux 64-bit protocol instead.
pub fn without_pvh_note(elf: &[u8]) -> Option<Vec<u8>> {
    let mut v = elf.to_vec();
    // Note header: namesz=4, descsz, type=18, then "Xen\0".
    let at = v.windows(4).position(|w| w == b"Xen\0")?;
    let ty = at.checked_sub(4)?;
    (v[ty..ty + 4] == 18u32.to_le_bytes()).then_some(())?;
    v[ty..ty + 4].copy_from_slice(&0x7fff_u32.to_le_bytes());
    Some(v)
}

/// A minimal 32-bit ELF with a PVH note, whose code at 1 MiB is entered in
/// 32-bit protected mode with paging off.
pub fn tiny_elf32_pvh(code: &[u8]) -> Vec<u8> {
    const BASE: u32 = 0x100000;
    let data_off = 52u32 + 2 * 32;
    let note_off = data_off + code.len() as u32;
    let mut b = vec![0u8; 52];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 1;
    b[5] = 1;
    b[6] = 1;
    b[16] = 2;
    b[18] = 3;
    b[20] = 1;
    b[24..28].copy_from_slice(&BASE.to_le_bytes());
    b[28..32].copy_from_slice(&52u32.to_le_bytes());
    b[40..42].copy_from_slice(&52u16.to_le_bytes());
    b[42..44].copy_from_slice(&32u16.to_le_bytes());
    b[44..46].copy_from_slice(&2u16.to_le_bytes());
    let ph = |kind: u32, off: u32, addr: u32, size: u32| {
        let mut p = vec![0u8; 32];
        for (i, v) in [kind, off, addr, addr, size, size, 5, 4].iter().enumerate() {
            p[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        p
    };
    b.extend(ph(1, data_off, BASE, code.len() as u32));
    b.extend(ph(4, note_off, 0, 20));
    b.extend_from_slice(code);
    for v in [4u32, 4, 18] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(b"Xen\0");
    b.extend_from_slice(&BASE.to_le_bytes());
    b
}

/// 32-bit: print `P` on COM1, enter S5 through Casemate's microvm sleep
/// control register (port 0x600), then `ud2` if still running.
pub const PVH32_PRINT_P_POWER_OFF: &[u8] = &[
    0x66, 0xba, 0xf8, 0x03, // mov $0x3f8, %dx
    0xb0, b'P', 0xee, // mov $'P', %al; out %al, %dx
    0x66, 0xba, 0x00, 0x06, // mov $0x600, %dx
    0xb0, 0x34, 0xee, // mov $(5 << 2 | 0x20), %al; out %al, %dx
    0x0f, 0x0b,
];
