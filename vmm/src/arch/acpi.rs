//! ACPI tables for the microvm machine: RSDP, XSDT, FADT (hardware-reduced,
//! with sleep and reset registers), DSDT (`\_S5`, COM1 and one `LNRO0005`
//! device per virtio-mmio transport, as QEMU's microvm describes them) and
//! MADT (one LAPIC per vCPU, the IOAPIC, the IRQ 0 override and the LINT1
//! NMI).
//! Built with the acpi_tables crate; MADT entries the crate lacks for x86
//! (overrides, NMI) are appended as bytes.

use acpi_tables::aml;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;

use super::layout::{ACPI_SLEEP_PORT, IOAPIC, IOAPIC_ID, LAPIC};
use casemate_devices::legacy::acpi_sleep;

const OEM_ID: [u8; 6] = *b"CSMATE";
const OEM_TABLE: [u8; 8] = *b"MICROVM ";

/// FADT IA-PC boot architecture flags: legacy devices present, an 8042, no
/// VGA, no MSI quirks.
const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
const IAPC_8042: u16 = 1 << 1;
const IAPC_NO_VGA: u16 = 1 << 2;

/// A virtio-mmio transport the DSDT announces: its register window and the
/// IOAPIC pin (GSI) its irqfd drives.
///
/// With a hardware-reduced FADT Linux has no legacy PIC, so its IRQ numbers
/// are not GSIs: a `virtio_mmio.device=...:5` command-line word names a
/// Linux IRQ 5 that does not exist and the driver's probe fails (-EINVAL).
/// The DSDT's GSI is mapped properly, which is why QEMU's microvm (with
/// ACPI) announces its transports there and not on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioMmioSlot {
    pub base: u64,
    pub len: u64,
    pub gsi: u32,
}

/// Laid-out tables: bytes to copy to `base`, and the RSDP's address.
pub struct AcpiTables {
    pub base: u64,
    pub bytes: Vec<u8>,
    pub rsdp: u64,
}

/// Appends tables 16-byte aligned and remembers where each went.
struct Placer {
    base: u64,
    bytes: Vec<u8>,
}

impl Placer {
    fn put(&mut self, t: &[u8]) -> u64 {
        let pad = self.bytes.len().next_multiple_of(16);
        self.bytes.resize(pad, 0);
        let at = self.base + pad as u64;
        self.bytes.extend_from_slice(t);
        at
    }
}

fn bytes_of(t: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    t.to_aml_bytes(&mut v);
    v
}

/// `Device (_SB.VRnn)`: `_HID "LNRO0005"` (Linux's virtio_mmio ACPI id),
/// the register window and an edge-triggered, active-high interrupt (the
/// transport's irqfd pulses its GSI).
fn virtio_mmio_device(index: usize, slot: &VirtioMmioSlot) -> Vec<u8> {
    let mem = aml::Memory32Fixed::new(true, slot.base as u32, slot.len as u32);
    let irq = aml::Interrupt::new(true, true, false, false, slot.gsi);
    let crs = aml::ResourceTemplate::new(vec![&mem, &irq]);
    let hid = aml::Name::new("_HID".into(), &"LNRO0005");
    let uid = aml::Name::new("_UID".into(), &(index as u32));
    let crs = aml::Name::new("_CRS".into(), &crs);
    let path = format!("_SB_.VR{index:02X}");
    bytes_of(&aml::Device::new(
        path.as_str().into(),
        vec![&hid, &uid, &crs],
    ))
}

fn dsdt(virtio_mmio: &[VirtioMmioSlot]) -> Vec<u8> {
    let mut dsdt = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE, 1);
    let s5 = aml::Name::new(
        "_S5_".into(),
        &aml::Package::new(vec![&acpi_sleep::S5_SLP_TYP, &0u8, &0u8, &0u8]),
    );
    let io = aml::IO::new(0x3f8, 0x3f8, 0, 8);
    let irq = aml::Interrupt::new(true, true, false, false, 4);
    let com1_crs = aml::ResourceTemplate::new(vec![&io, &irq]);
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501"));
    let uid = aml::Name::new("_UID".into(), &0u8);
    let crs = aml::Name::new("_CRS".into(), &com1_crs);
    let com1 = aml::Device::new("_SB_.COM1".into(), vec![&hid, &uid, &crs]);
    s5.to_aml_bytes(&mut dsdt);
    com1.to_aml_bytes(&mut dsdt);
    for (i, slot) in virtio_mmio.iter().enumerate() {
        dsdt.append_slice(&virtio_mmio_device(i, slot));
    }
    dsdt.update_checksum();
    dsdt.as_slice().to_vec()
}

fn fadt(dsdt_addr: u64) -> Vec<u8> {
    let port = |off: u64| {
        GAS::new(
            AddressSpace::SystemIo,
            8,
            0,
            AccessSize::ByteAccess,
            u64::from(ACPI_SLEEP_PORT) + off,
        )
    };
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE, 1)
        .dsdt_64(dsdt_addr)
        .flag(Flags::HwReducedAcpi)
        .flag(Flags::ResetRegSup)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton);
    f.sleep_control_reg = port(acpi_sleep::SLEEP_CONTROL_OFFSET);
    f.sleep_status_reg = port(acpi_sleep::SLEEP_STATUS_OFFSET);
    f.reset_reg = port(acpi_sleep::RESET_OFFSET);
    f.reset_value = acpi_sleep::RESET_VALUE;
    f.iapc_boot_arch = (IAPC_LEGACY_DEVICES | IAPC_8042 | IAPC_NO_VGA).into();
    bytes_of(&f.finalize())
}

fn madt(apic_ids: &[u32]) -> Vec<u8> {
    let mut m = Sdt::new(*b"APIC", 36, 3, OEM_ID, OEM_TABLE, 1);
    m.append_slice(&(LAPIC as u32).to_le_bytes());
    m.append_slice(&1u32.to_le_bytes()); // PCAT_COMPAT: 8259s present
    for (uid, &id) in apic_ids.iter().enumerate() {
        m.append_slice(&[0, 8, uid as u8, id as u8, 1, 0, 0, 0]);
    }
    let mut ioapic = vec![1, 12, IOAPIC_ID, 0];
    ioapic.extend_from_slice(&(IOAPIC as u32).to_le_bytes());
    ioapic.extend_from_slice(&0u32.to_le_bytes());
    m.append_slice(&ioapic);
    // Interrupt source override: ISA IRQ 0 -> GSI 2, bus default polarity.
    let mut iso = vec![2, 10, 0, 0];
    iso.extend_from_slice(&2u32.to_le_bytes());
    iso.extend_from_slice(&0u16.to_le_bytes());
    m.append_slice(&iso);
    // Local APIC NMI on LINT1 of every processor.
    m.append_slice(&[4, 6, 0xff, 0, 0, 1]);
    m.as_slice().to_vec()
}

/// Lay the tables out from `base`; the RSDP comes first so a guest scanning
/// the BIOS area finds it at a 16-byte boundary.
pub fn build(base: u64, apic_ids: &[u32], virtio_mmio: &[VirtioMmioSlot]) -> AcpiTables {
    let mut p = Placer {
        base,
        bytes: Vec::new(),
    };
    let rsdp_len = Rsdp::len();
    p.bytes.resize(rsdp_len, 0);
    let dsdt_addr = p.put(&dsdt(virtio_mmio));
    let fadt_addr = p.put(&fadt(dsdt_addr));
    let madt_addr = p.put(&madt(apic_ids));
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE, 1);
    xsdt.add_entry(fadt_addr);
    xsdt.add_entry(madt_addr);
    let xsdt_addr = p.put(&bytes_of(&xsdt));
    let rsdp = bytes_of(&Rsdp::new(OEM_ID, xsdt_addr));
    p.bytes[..rsdp_len].copy_from_slice(&rsdp);
    AcpiTables {
        base,
        bytes: p.bytes,
        rsdp: base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn table_at(t: &AcpiTables, addr: u64) -> &[u8] {
        let off = (addr - t.base) as usize;
        let len = u32::from_le_bytes(t.bytes[off + 4..off + 8].try_into().unwrap()) as usize;
        &t.bytes[off..off + len]
    }

    #[test]
    fn tables_chain_and_checksum() {
        let t = build(0xe0000, &[0, 1], &[]);
        assert_eq!(&t.bytes[..8], b"RSD PTR ");
        assert_eq!(sum(&t.bytes[..20]), 0);
        assert_eq!(sum(&t.bytes[..36]), 0);
        let xsdt_addr = u64::from_le_bytes(t.bytes[24..32].try_into().unwrap());
        let xsdt = table_at(&t, xsdt_addr);
        assert_eq!(&xsdt[..4], b"XSDT");
        assert_eq!(sum(xsdt), 0);
        let entries: Vec<u64> = xsdt[36..]
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let sigs: Vec<&[u8]> = entries.iter().map(|&a| &table_at(&t, a)[..4]).collect();
        assert_eq!(sigs, vec![b"FACP", b"APIC"]);
        for &a in &entries {
            assert_eq!(sum(table_at(&t, a)), 0);
        }
        let madt = table_at(&t, entries[1]);
        let lapics = madt[44..].windows(2).filter(|w| w == &[0, 8]).count();
        assert!(lapics >= 2);
        let fadt = table_at(&t, entries[0]);
        let flags = u32::from_le_bytes(fadt[112..116].try_into().unwrap());
        assert_ne!(flags & (1 << 20), 0, "hardware-reduced");
        let dsdt = u64::from_le_bytes(fadt[140..148].try_into().unwrap());
        let dsdt = table_at(&t, dsdt);
        assert_eq!(sum(dsdt), 0);
        assert!(dsdt.windows(4).any(|w| w == b"_S5_"));
        assert!(t.bytes.len() as u64 <= super::super::layout::ACPI_END - 0xe0000);
    }

    fn dsdt_of(t: &AcpiTables) -> &[u8] {
        let xsdt_addr = u64::from_le_bytes(t.bytes[24..32].try_into().unwrap());
        let fadt = u64::from_le_bytes(table_at(t, xsdt_addr)[36..44].try_into().unwrap());
        let dsdt = u64::from_le_bytes(table_at(t, fadt)[140..148].try_into().unwrap());
        table_at(t, dsdt)
    }

    #[test]
    fn dsdt_announces_each_virtio_mmio_transport_with_its_gsi() {
        let slots = [
            VirtioMmioSlot {
                base: 0xfeb0_0000,
                len: 0x200,
                gsi: 5,
            },
            VirtioMmioSlot {
                base: 0xfeb0_0200,
                len: 0x200,
                gsi: 6,
            },
        ];
        let t = build(0xe0000, &[0], &slots);
        let dsdt = dsdt_of(&t);
        assert_eq!(sum(dsdt), 0);
        let hid = b"\x0dLNRO0005\x00";
        let at: Vec<usize> = (0..dsdt.len() - hid.len())
            .filter(|&i| &dsdt[i..i + hid.len()] == hid)
            .collect();
        assert_eq!(at.len(), 2, "one LNRO0005 device per transport");
        for (slot, &from) in slots.iter().zip(&at) {
            let rest = &dsdt[from..];
            // Memory32Fixed: 0x86, length 9, read-write, base, length.
            let mut mem = vec![0x86, 9, 0, 1];
            mem.extend_from_slice(&(slot.base as u32).to_le_bytes());
            mem.extend_from_slice(&(slot.len as u32).to_le_bytes());
            assert!(rest.windows(mem.len()).any(|w| w == mem), "window {slot:?}");
            // Extended IRQ: 0x89, length 6, consumer + edge, one GSI.
            let mut irq = vec![0x89, 6, 0, 0b11, 1];
            irq.extend_from_slice(&slot.gsi.to_le_bytes());
            assert!(rest.windows(irq.len()).any(|w| w == irq), "gsi {slot:?}");
        }
        assert!(build(0xe0000, &[0], &[])
            .bytes
            .windows(8)
            .all(|w| w != b"LNRO0005"));
    }
}
