//! Where everything sits in guest physical memory, and which RAM exists.
//!
//! Low memory holds the boot structures; RAM runs from 0 up to the 32-bit
//! MMIO hole and continues above 4 GiB. Chosen so the legacy BIOS areas the
//! guest scans (EBDA, 0xE0000-0xFFFFF) hold our MP and ACPI tables.

/// Boot GDT (Linux 64-bit entry) and an empty IDT after it.
pub const BOOT_GDT: u64 = 0x500;
pub const BOOT_IDT: u64 = 0x520;
/// PVH `hvm_start_info`, its module list and memory map.
pub const PVH_INFO: u64 = 0x6000;
pub const PVH_MODLIST: u64 = 0x6100;
pub const PVH_MEMMAP: u64 = 0x6200;
/// The Linux zero page (`boot_params`).
pub const ZERO_PAGE: u64 = 0x7000;
/// Initial stack for the Linux 64-bit entry.
pub const BOOT_STACK: u64 = 0x8ff0;
/// Identity-mapping page tables for the Linux 64-bit entry: PML4, PDPT and
/// four page directories covering 0-4 GiB with 2 MiB pages.
pub const PML4: u64 = 0x9000;
pub const PDPT: u64 = 0xa000;
pub const PD: u64 = 0xb000;
pub const PD_COUNT: u64 = 4;
/// The kernel command line, and the most this layout leaves room for.
pub const CMDLINE: u64 = 0x20000;
pub const CMDLINE_ROOM: usize = 0x10000;
/// Start of the extended BIOS data area: RAM below it is usable.
pub const EBDA: u64 = 0x9fc00;
/// BIOS area the guest scans for the ACPI RSDP; the tables follow it.
pub const ACPI_START: u64 = 0xe0000;
pub const ACPI_END: u64 = 0xf0000;
/// The Intel MP floating pointer and configuration table.
pub const MPTABLE: u64 = 0xf0000;
pub const BIOS_END: u64 = 0x100000;
/// Where kernels load and RAM above the legacy area starts.
pub const HIMEM: u64 = 0x100000;
/// The 32-bit MMIO hole: no RAM between these.
pub const MMIO_HOLE_START: u64 = 0xc000_0000;
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
pub const IOAPIC: u64 = 0xfec0_0000;
pub const LAPIC: u64 = 0xfee0_0000;
/// Hardware-reduced ACPI sleep/reset registers (I/O ports) on microvm.
pub const ACPI_SLEEP_PORT: u16 = 0x600;
/// PM1 event and control blocks on pc and q35 (where PIIX4 and ICH9
/// firmware put their PM base).
pub const ACPI_PM_PORT: u16 = 0x600;
/// The SCI, as on PIIX4/ICH9; nothing raises it, but the FADT needs one.
pub const ACPI_SCI_IRQ: u16 = 9;
/// microvm's Generic Event Device (the power button): QEMU's address; a
/// GSI past the virtio-mmio ones.
pub const GED_BASE: u64 = 0xfea0_0000;
pub const GED_GSI: u32 = 22;

/// PCI on pc and q35: the 32-bit MMIO window BARs are placed in (the
/// bottom of the hole), the ECAM window of bus 0 on q35 right after it, the
/// I/O window, and INTx pins routed to IOAPIC pins 16-23.
pub const PCI_MMIO32_START: u64 = MMIO_HOLE_START;
pub const PCI_MMIO32_END: u64 = 0xe000_0000;
pub const PCI_ECAM: u64 = 0xe000_0000;
/// One bus: 32 devices x 8 functions x 4 KiB.
pub const PCI_ECAM_SIZE: u64 = 1 << 20;
pub const PCI_IO_START: u64 = 0xc000;
pub const PCI_IO_END: u64 = 0x1_0000;
pub const PCI_INTX_GSI_BASE: u32 = 16;
/// Size of the 64-bit MMIO window, which starts above RAM.
pub const PCI_MMIO64_SIZE: u64 = 64 << 30;

/// GSI of `pin` (0 = INTA#) of device `slot`: the usual swizzle over the
/// eight pins, so neighbouring slots do not share a line.
pub fn pci_intx_gsi(slot: u8, pin: u8) -> u32 {
    PCI_INTX_GSI_BASE + ((u32::from(slot) + u32::from(pin)) & 7)
}

/// The 64-bit PCI window: 1 GiB-aligned, above all RAM.
pub fn pci_mmio64_start(ram: &RamLayout) -> u64 {
    (MMIO_HOLE_END + ram.high_size).next_multiple_of(1 << 30)
}
/// The IOAPIC's id in MP and ACPI tables: after every possible APIC id.
pub const IOAPIC_ID: u8 = 0xfe;
pub const IOAPIC_PINS: u8 = 24;

/// The guest's RAM: `[0, low_end)` and, when RAM exceeds the hole,
/// `[4 GiB, 4 GiB + high_size)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamLayout {
    pub low_end: u64,
    pub high_size: u64,
}

impl RamLayout {
    pub fn new(total: u64) -> Self {
        let low_end = total.min(MMIO_HOLE_START);
        Self {
            low_end,
            high_size: total - low_end,
        }
    }

    /// (start, len) of each RAM range.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut r = vec![(0, self.low_end)];
        if self.high_size > 0 {
            r.push((MMIO_HOLE_END, self.high_size));
        }
        r
    }
}

/// One e820 / PVH memory map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// The memory map the guest is given: the legacy area below 1 MiB that holds
/// our tables is reserved, everything else in RAM is usable. `ecam` is
/// reserved too: Linux trusts an MCFG window only when the firmware's map
/// reserves it.
pub fn e820(ram: &RamLayout, ecam: Option<(u64, u64)>) -> Vec<E820Entry> {
    let mut m = vec![
        E820Entry {
            addr: 0,
            size: EBDA,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA,
            size: 0xa0000 - EBDA,
            kind: E820_RESERVED,
        },
        E820Entry {
            addr: ACPI_START,
            size: BIOS_END - ACPI_START,
            kind: E820_RESERVED,
        },
    ];
    if ram.low_end > HIMEM {
        m.push(E820Entry {
            addr: HIMEM,
            size: ram.low_end - HIMEM,
            kind: E820_RAM,
        });
    }
    if ram.high_size > 0 {
        m.push(E820Entry {
            addr: MMIO_HOLE_END,
            size: ram.high_size,
            kind: E820_RAM,
        });
    }
    if let Some((addr, size)) = ecam {
        m.push(E820Entry {
            addr,
            size,
            kind: E820_RESERVED,
        });
        m.sort_by_key(|e| e.addr);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_splits_around_the_hole() {
        assert_eq!(RamLayout::new(64 << 20).ranges(), vec![(0, 64 << 20)]);
        let r = RamLayout::new(5 << 30);
        assert_eq!(r.ranges(), vec![(0, 3 << 30), (4 << 30, 2 << 30)]);
        let usable: u64 = e820(&r, Some((PCI_ECAM, PCI_ECAM_SIZE)))
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(usable, (5 << 30) - (HIMEM - EBDA));
    }

    #[test]
    fn fixed_areas_do_not_overlap() {
        let areas = [
            (BOOT_GDT, 0x40),
            (PVH_INFO, 0x100),
            (PVH_MODLIST, 0x100),
            (PVH_MEMMAP, 0xe00),
            (ZERO_PAGE, 0x1000),
            (PML4, 0x1000),
            (PDPT, 0x1000),
            (PD, PD_COUNT * 0x1000),
            (CMDLINE, CMDLINE_ROOM as u64),
        ];
        for (i, a) in areas.iter().enumerate() {
            for b in &areas[i + 1..] {
                assert!(a.0 + a.1 <= b.0 || b.0 + b.1 <= a.0, "{a:x?} vs {b:x?}");
            }
            assert!(a.0 + a.1 <= EBDA);
        }
    }
}
