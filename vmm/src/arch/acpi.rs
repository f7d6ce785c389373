//! ACPI tables: RSDP, XSDT, FADT, DSDT and MADT for every machine, plus
//! FACS on pc/q35 and MCFG on q35.
//!
//! microvm's FADT is hardware-reduced (sleep and reset registers) and its
//! DSDT has one `LNRO0005` device per virtio-mmio transport, as QEMU's
//! microvm describes them; pc and
//! q35 get fixed-hardware PM1 blocks, the 0xCF9 reset register and a DSDT
//! that describes the PCI root (`PNP0A03`, or `PNP0A08` on q35): its bus,
//! I/O and memory windows and a `_PRT` routing every slot's INTx to IOAPIC
//! pins. The MADT holds one LAPIC per vCPU, the IOAPIC, the IRQ 0 override
//! (and the SCI's on pc/q35) and the LINT1 NMI. Built with the acpi_tables
//! crate; MADT entries the crate lacks for x86 (overrides, NMI) are
//! appended as bytes.

use acpi_tables::aml;
use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;

use super::layout::GED_GSI;
use super::layout::{
    pci_intx_gsi, ACPI_PM_PORT, ACPI_SCI_IRQ, ACPI_SLEEP_PORT, IOAPIC, IOAPIC_ID, LAPIC, PCI_ECAM,
    PCI_ECAM_SIZE, PCI_IO_END, PCI_IO_START, PCI_MMIO32_END, PCI_MMIO32_START,
};
use casemate_devices::legacy::{acpi_pm, acpi_sleep};

/// What the tables describe beyond CPUs and the legacy devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// No PCI; hardware-reduced ACPI.
    Microvm,
    /// A PCI root on mechanism #1, with the 64-bit window `[start, end)`;
    /// `ecam` adds the q35 PCIe root with its MCFG.
    Pci { ecam: bool, mmio64: (u64, u64) },
}

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

/// The PIIX/ICH reset control register and the value that resets.
const RESET_PORT: u64 = 0xcf9;
const RESET_VALUE: u8 = 0x06;

const OEM_ID: [u8; 6] = *b"CSMATE";
const OEM_TABLE: [u8; 8] = *b"CASEMATE";

/// FADT IA-PC boot architecture flags: legacy devices present, an 8042, no
/// VGA, no MSI quirks.
const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
const IAPC_8042: u16 = 1 << 1;
const IAPC_NO_VGA: u16 = 1 << 2;

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
        self.put_aligned(t, 16)
    }

    fn put_aligned(&mut self, t: &[u8], align: usize) -> u64 {
        let pad = self.bytes.len().next_multiple_of(align);
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

/// `\_SB.PCI0`: the root bridge's windows and INTx routing.
fn pci_root(ecam: bool, mmio64: (u64, u64)) -> Vec<u8> {
    let hid = if ecam {
        aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0A08"))
    } else {
        aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0A03"))
    };
    let cid = aml::Name::new("_CID".into(), &aml::EISAName::new("PNP0A03"));
    let adr = aml::Name::new("_ADR".into(), &0u8);
    let seg = aml::Name::new("_SEG".into(), &0u8);
    let uid = aml::Name::new("_UID".into(), &0u8);
    let bbn = aml::Name::new("_BBN".into(), &0u8);
    let bus = aml::AddressSpace::new_bus_number(0u16, 0u16);
    let cfg_io = aml::IO::new(0xcf8, 0xcf8, 1, 8);
    let io_lo = aml::AddressSpace::new_io(0u16, 0xcf7u16, None);
    let io_hi = aml::AddressSpace::new_io(PCI_IO_START as u16, (PCI_IO_END - 1) as u16, None);
    let vga = aml::AddressSpace::new_memory(
        aml::AddressSpaceCacheable::Cacheable,
        true,
        0xa_0000u32,
        0xb_ffffu32,
        None,
    );
    let mem32 = aml::AddressSpace::new_memory(
        aml::AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO32_START as u32,
        (PCI_MMIO32_END - 1) as u32,
        None,
    );
    let mem64 = aml::AddressSpace::new_memory(
        aml::AddressSpaceCacheable::NotCacheable,
        true,
        mmio64.0,
        mmio64.1 - 1,
        None,
    );
    let crs = aml::Name::new(
        "_CRS".into(),
        &aml::ResourceTemplate::new(vec![&bus, &cfg_io, &io_lo, &io_hi, &vga, &mem32, &mem64]),
    );
    // Static routing straight to IOAPIC pins (no link devices): entry =
    // { slot address 0xSSSSFFFF, pin, source 0, GSI }.
    let rows: Vec<(u32, u8, u32)> = (0u8..32)
        .flat_map(|slot| {
            (0u8..4).map(move |pin| {
                (
                    (u32::from(slot) << 16) | 0xffff,
                    pin,
                    pci_intx_gsi(slot, pin),
                )
            })
        })
        .collect();
    let entries: Vec<aml::Package> = rows
        .iter()
        .map(|(addr, pin, gsi)| aml::Package::new(vec![addr, pin, &0u8, gsi]))
        .collect();
    let prt = aml::Name::new(
        "_PRT".into(),
        &aml::Package::new(entries.iter().map(|e| e as &dyn Aml).collect()),
    );
    let mut children: Vec<&dyn Aml> = vec![&hid, &adr, &seg, &uid, &bbn, &crs, &prt];
    if ecam {
        children.insert(1, &cid);
    }
    let mut out = bytes_of(&aml::Device::new("_SB_.PCI0".into(), children));
    if ecam {
        // Linux trusts an MCFG window only when a motherboard resource
        // device (or the e820 map) reserves it; do both.
        let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C02"));
        let uid = aml::Name::new("_UID".into(), &1u8);
        let win = aml::Memory32Fixed::new(false, PCI_ECAM as u32, PCI_ECAM_SIZE as u32);
        let crs = aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&win]));
        out.extend(bytes_of(&aml::Device::new(
            "_SB_.MRES".into(),
            vec![&hid, &uid, &crs],
        )));
    }
    out
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

/// `Device (_SB.GED)`: the Generic Event Device (`ACPI0013`, its selector
/// register at `GED_BASE`) with its edge interrupt, and the power button device it
/// stands for (`PNP0C0C`). Its `_EVT` notifies the power button on any
/// event (the power button is the only one), so an OS's button driver
/// sees the press; it does not read the selector (the probe does).
fn ged_device() -> Vec<u8> {
    // Only the interrupt: Linux's GED driver takes every _CRS entry for
    // one (as QEMU's, whose register is not in _CRS either).
    let irq = aml::Interrupt::new(true, true, false, false, GED_GSI);
    let crs = aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&irq]));
    let hid = aml::Name::new("_HID".into(), &"ACPI0013");
    let uid = aml::Name::new("_UID".into(), &0u8);
    let pwrb = aml::Path::new("\\_SB_.PWRB");
    let notify = aml::Notify::new(&pwrb, &0x80u8);
    let evt = aml::Method::new("_EVT".into(), 1, true, vec![&notify]);
    let mut out = bytes_of(&aml::Device::new(
        "_SB_.GED_".into(),
        vec![&hid, &uid, &crs, &evt],
    ));
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C0C"));
    let uid = aml::Name::new("_UID".into(), &0u8);
    out.extend(bytes_of(&aml::Device::new(
        "_SB_.PWRB".into(),
        vec![&hid, &uid],
    )));
    out
}

fn dsdt(platform: Platform, virtio_mmio: &[VirtioMmioSlot]) -> Vec<u8> {
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
    if let Platform::Pci { ecam, mmio64 } = platform {
        dsdt.append_slice(&pci_root(ecam, mmio64));
    } else {
        dsdt.append_slice(&ged_device());
    }
    for (i, slot) in virtio_mmio.iter().enumerate() {
        dsdt.append_slice(&virtio_mmio_device(i, slot));
    }
    dsdt.update_checksum();
    dsdt.as_slice().to_vec()
}

/// FADT of pc/q35: PM1a event and control blocks, no PM timer, no SMI port
/// (ACPI is on from the start), reset through 0xCF9.
fn fadt_pc(dsdt_addr: u64, facs_addr: u64) -> Vec<u8> {
    let port =
        |addr: u64, bytes: u8, size| GAS::new(AddressSpace::SystemIo, bytes * 8, 0, size, addr);
    let evt = u64::from(ACPI_PM_PORT) + acpi_pm::PM1_EVT_OFFSET;
    let cnt = u64::from(ACPI_PM_PORT) + acpi_pm::PM1_CNT_OFFSET;
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE, 1)
        .dsdt_64(dsdt_addr)
        .firmware_ctrl_64(facs_addr)
        .flag(Flags::ResetRegSup)
        // PWR_BUTTON stays clear: the power button is the PM1 fixed
        // feature (QMP's system_powerdown), as in QEMU's FADT; set, it
        // would tell the guest there is none there.
        .flag(Flags::SlpButton);
    f.sci_int = ACPI_SCI_IRQ.into();
    f.pm1a_evt_blk = (evt as u32).into();
    f.pm1a_cnt_blk = (cnt as u32).into();
    f.pm1_evt_len = acpi_pm::PM1_EVT_LEN;
    f.pm1_cnt_len = acpi_pm::PM1_CNT_LEN;
    f.x_pm1a_evt_blk = port(evt, acpi_pm::PM1_EVT_LEN, AccessSize::WordAccess);
    f.x_pm1a_cnt_blk = port(cnt, acpi_pm::PM1_CNT_LEN, AccessSize::WordAccess);
    f.reset_reg = port(RESET_PORT, 1, AccessSize::ByteAccess);
    f.reset_value = RESET_VALUE;
    f.iapc_boot_arch = (IAPC_LEGACY_DEVICES | IAPC_8042 | IAPC_NO_VGA).into();
    bytes_of(&f.finalize())
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

fn madt(apic_ids: &[u32], sci_override: bool) -> Vec<u8> {
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
    if sci_override {
        // The SCI is level-triggered, active high (PIIX4/ICH9 wiring).
        let mut iso = vec![2, 10, 0, ACPI_SCI_IRQ as u8];
        iso.extend_from_slice(&u32::from(ACPI_SCI_IRQ).to_le_bytes());
        iso.extend_from_slice(&0x000du16.to_le_bytes());
        m.append_slice(&iso);
    }
    // Local APIC NMI on LINT1 of every processor.
    m.append_slice(&[4, 6, 0xff, 0, 0, 1]);
    m.as_slice().to_vec()
}

/// Lay the tables out from `base`; the RSDP comes first so a guest scanning
/// the BIOS area finds it at a 16-byte boundary.
pub fn build(
    base: u64,
    apic_ids: &[u32],
    platform: Platform,
    virtio_mmio: &[VirtioMmioSlot],
) -> AcpiTables {
    let mut p = Placer {
        base,
        bytes: Vec::new(),
    };
    let rsdp_len = Rsdp::len();
    p.bytes.resize(rsdp_len, 0);
    let dsdt_addr = p.put(&dsdt(platform, virtio_mmio));
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE, 1);
    match platform {
        Platform::Microvm => {
            xsdt.add_entry(p.put(&fadt(dsdt_addr)));
            xsdt.add_entry(p.put(&madt(apic_ids, false)));
        }
        Platform::Pci { ecam, .. } => {
            let facs = p.put_aligned(&bytes_of(&FACS::new()), 64);
            xsdt.add_entry(p.put(&fadt_pc(dsdt_addr, facs)));
            xsdt.add_entry(p.put(&madt(apic_ids, true)));
            if ecam {
                let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE, 1);
                mcfg.add_ecam(PCI_ECAM, 0, 0, 0);
                xsdt.add_entry(p.put(&bytes_of(&mcfg)));
            }
        }
    }
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
        let t = build(0xe0000, &[0, 1], Platform::Microvm, &[]);
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
        let t = build(0xe0000, &[0], Platform::Microvm, &slots);
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
        assert!(build(0xe0000, &[0], Platform::Microvm, &[])
            .bytes
            .windows(8)
            .all(|w| w != b"LNRO0005"));
    }
}
