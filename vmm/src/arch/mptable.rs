//! The Intel MultiProcessor Specification 1.4 table: processors, the PCI
//! bus (machines with PCI) and the ISA bus, the IOAPIC, the legacy IRQ
//! routing and every PCI slot's INTA-D routing, for guests that look for
//! it before (or instead of) ACPI: a kernel without ACPI, or booted with
//! `acpi=off`, finds its PCI interrupts here. The PCI routing is the one
//! the DSDT's `_PRT` describes (`layout::pci_intx_gsi`). Written by hand:
//! no rust-vmm crate builds it.

use super::layout::{pci_intx_gsi, IOAPIC, IOAPIC_ID, LAPIC};

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

fn checksum(b: &[u8]) -> u8 {
    0u8.wrapping_sub(b.iter().fold(0u8, |a, x| a.wrapping_add(*x)))
}

/// PCI slots whose INTx pins the table routes (all of bus 0's).
const PCI_SLOTS: u8 = 32;

/// The floating pointer followed by the configuration table, to be placed
/// at guest address `at`. `apic_ids` lists every vCPU, BSP first; `pci`
/// adds the PCI bus and its interrupt routing.
pub fn build(at: u64, apic_ids: &[u32], pci: bool) -> Vec<u8> {
    let mut entries: Vec<u8> = Vec::new();
    let mut count = 0u16;
    for (i, &id) in apic_ids.iter().enumerate() {
        entries.push(0);
        entries.push(id as u8);
        entries.push(APIC_VERSION);
        entries.push(CPU_ENABLED | if i == 0 { CPU_BSP } else { 0 });
        entries.extend_from_slice(&0x600u32.to_le_bytes()); // family 6 signature
        entries.extend_from_slice(&0x201u32.to_le_bytes()); // FPU, APIC
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    // Bus ids: PCI is bus 0 as the guest numbers it, ISA follows.
    let isa = u8::from(pci);
    if pci {
        entries.extend_from_slice(&[1, 0, b'P', b'C', b'I', b' ', b' ', b' ']);
        count += 1;
    }
    entries.extend_from_slice(&[1, isa, b'I', b'S', b'A', b' ', b' ', b' ']);
    entries.extend_from_slice(&[2, IOAPIC_ID, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC as u32).to_le_bytes());
    count += 2;
    // PCI: level-triggered, active low (flags 0x0f), as SeaBIOS writes.
    let mut io_int = |kind: u8, flags: u8, bus: u8, irq: u8, pin: u8| {
        entries.extend_from_slice(&[3, kind, flags, 0, bus, irq, IOAPIC_ID, pin]);
        count += 1;
    };
    io_int(INT_TYPE_EXTINT, 0, isa, 0, 0);
    io_int(INT_TYPE_INT, 0, isa, 0, 2); // the PIT's IRQ 0 arrives on pin 2
    for irq in (1..16u8).filter(|&i| i != 2) {
        io_int(INT_TYPE_INT, 0, isa, irq, irq);
    }
    if pci {
        for slot in 0..PCI_SLOTS {
            for pin in 0..4u8 {
                // Source bus IRQ: device number in bits 6:2, pin in 1:0.
                let gsi = pci_intx_gsi(slot, pin) as u8;
                io_int(INT_TYPE_INT, 0x0f, 0, (slot << 2) | pin, gsi);
            }
        }
    }
    entries.extend_from_slice(&[4, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    entries.extend_from_slice(&[4, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let mut table = Vec::with_capacity(44 + entries.len());
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    table.push(4); // spec revision 1.4
    table.push(0); // checksum, below
    table.extend_from_slice(b"CASEMATE");
    table.extend_from_slice(b"MICROVM     ");
    table.extend_from_slice(&[0; 6]); // no OEM table
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&(LAPIC as u32).to_le_bytes());
    table.extend_from_slice(&[0; 4]); // no extended table
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = Vec::with_capacity(16 + table.len());
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&((at + 16) as u32).to_le_bytes());
    fp.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
    fp[10] = checksum(&fp);
    fp.extend_from_slice(&table);
    fp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts() {
        let b = build(0xf0000, &[0, 1, 2], false);
        assert_eq!(&b[0..4], b"_MP_");
        assert_eq!(b[..16].iter().fold(0u8, |a, x| a.wrapping_add(*x)), 0);
        let len = u16::from_le_bytes([b[20], b[21]]) as usize;
        assert_eq!(len, b.len() - 16);
        assert_eq!(b[16..].iter().fold(0u8, |a, x| a.wrapping_add(*x)), 0);
        let count = u16::from_le_bytes([b[16 + 34], b[16 + 35]]);
        assert_eq!(count, 3 + 2 + 16 + 2);
        let cpu_flags: Vec<u8> = (0..3).map(|i| b[16 + 44 + 20 * i + 3]).collect();
        assert_eq!(cpu_flags, vec![3, 1, 1]);
    }

    #[test]
    fn pci_machines_route_every_slot_pin_like_the_prt() {
        let b = build(0xf0000, &[0], true);
        let count = u16::from_le_bytes([b[16 + 34], b[16 + 35]]) as usize;
        assert_eq!(count, 1 + 3 + 16 + 32 * 4 + 2);
        assert_eq!(b[16..].iter().fold(0u8, |a, x| a.wrapping_add(*x)), 0);
        // Entries after the header: CPU (20 bytes) then 8-byte entries.
        let e = &b[16 + 44 + 20..];
        assert_eq!(&e[..8], &[1, 0, b'P', b'C', b'I', b' ', b' ', b' ']);
        assert_eq!(&e[8..16], &[1, 1, b'I', b'S', b'A', b' ', b' ', b' ']);
        let ints: Vec<&[u8]> = e.chunks(8).filter(|c| c[0] == 3 && c[4] == 0).collect();
        // Slot 2 INTA#: bus 0, source irq 2 << 2, the GSI the _PRT names.
        let slot2 = ints.iter().find(|c| c[5] == 2 << 2).unwrap();
        assert_eq!(slot2[7] as u32, pci_intx_gsi(2, 0));
        assert_eq!(slot2[2], 0x0f, "level, active low");
    }
}
