//! Boot information handed to the kernel: the command line, and either the
//! PVH `hvm_start_info` (with memory map and initrd module) or the Linux zero
//! page (`boot_params` with e820 table and RSDP address). This module fills
//! the structs; linux-loader's boot configurators (`PvhBootConfigurator`,
//! `LinuxBootConfigurator`) check that they fit in guest RAM and write them.

use linux_loader::configurator::linux::LinuxBootConfigurator;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::layout::{E820Entry, CMDLINE, PVH_INFO, PVH_MEMMAP, PVH_MODLIST, ZERO_PAGE};
use crate::loader::LoadedInitrd;

/// x86 `COMMAND_LINE_SIZE`: what an ELF kernel, which has no setup header
/// to say otherwise, accepts, terminating NUL included.
pub const ELF_CMDLINE_MAX: usize = 2048;
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const HDRS_MAGIC: u32 = 0x5372_6448;
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const KEEP_SEGMENTS_AND_CAN_USE_HEAP: u8 = 0x80;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("kernel command line is {len} bytes; the boot protocol allows at most {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("memory map has {0} entries, more than the boot protocol holds")]
    TooManyE820(usize),
    #[error("writing the {what} boot information")]
    Configurator {
        what: &'static str,
        #[source]
        source: linux_loader::configurator::Error,
    },
    #[error("writing {what} to guest memory")]
    Memory {
        what: &'static str,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

fn mem_err(what: &'static str) -> impl FnOnce(vm_memory::GuestMemoryError) -> BootError {
    move |source| BootError::Memory { what, source }
}

/// Write the NUL-terminated command line; `max` includes the NUL.
pub fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str, max: usize) -> Result<(), BootError> {
    if cmdline.contains('\0') {
        return Err(BootError::CmdlineNul);
    }
    if cmdline.len() + 1 > max {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max: max - 1,
        });
    }
    let mut b = cmdline.as_bytes().to_vec();
    b.push(0);
    mem.write_slice(&b, GuestAddress(CMDLINE))
        .map_err(mem_err("command line"))
}

// SAFETY: the wrappers below hold `repr(C)` plain-data structs generated from
// the kernel's headers: every bit pattern is valid and they have no padding
// that could leak uninitialised bytes (the packed ones have none at all).
macro_rules! byte_valued {
    ($($w:ident($t:ty)),*) => {$(
        #[derive(Clone, Copy, Default)]
        #[repr(transparent)]
        struct $w($t);
        // SAFETY: see the comment on this macro.
        unsafe impl ByteValued for $w {}
    )*};
}
byte_valued!(
    StartInfo(hvm_start_info),
    MemmapEntry(hvm_memmap_table_entry),
    ModEntry(hvm_modlist_entry),
    ZeroPage(boot_params)
);

/// The PVH start_info, its memory map and (with an initrd) one module.
pub fn write_pvh(
    mem: &GuestMemoryMmap,
    e820: &[E820Entry],
    rsdp: u64,
    initrd: Option<LoadedInitrd>,
) -> Result<u64, BootError> {
    let memmap: Vec<MemmapEntry> = e820
        .iter()
        .map(|e| {
            MemmapEntry(hvm_memmap_table_entry {
                addr: e.addr,
                size: e.size,
                type_: e.kind,
                reserved: 0,
            })
        })
        .collect();
    let mut info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE,
        rsdp_paddr: rsdp,
        memmap_paddr: PVH_MEMMAP,
        memmap_entries: e820.len() as u32,
        ..Default::default()
    };
    let module = initrd.map(|rd| {
        info.nr_modules = 1;
        info.modlist_paddr = PVH_MODLIST;
        ModEntry(hvm_modlist_entry {
            paddr: rd.addr,
            size: rd.size,
            ..Default::default()
        })
    });
    let mut params = BootParams::new(&StartInfo(info), GuestAddress(PVH_INFO));
    params.set_sections(&memmap, GuestAddress(PVH_MEMMAP));
    if let Some(m) = module {
        params.set_modules(&[m], GuestAddress(PVH_MODLIST));
    }
    PvhBootConfigurator::write_bootparams(&params, mem).map_err(|source| {
        BootError::Configurator {
            what: "PVH",
            source,
        }
    })?;
    Ok(PVH_INFO)
}

/// The Linux zero page. `header` is the bzImage's setup header, or None for
/// an ELF entered through the 64-bit protocol.
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    header: Option<setup_header>,
    e820: &[E820Entry],
    rsdp: u64,
    cmdline_len: usize,
    initrd: Option<LoadedInitrd>,
) -> Result<u64, BootError> {
    let mut p = boot_params::default();
    if let Some(h) = header {
        p.hdr = h;
    }
    p.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    p.hdr.boot_flag = 0xaa55;
    p.hdr.header = HDRS_MAGIC;
    p.hdr.loadflags |= KEEP_SEGMENTS_AND_CAN_USE_HEAP;
    p.hdr.cmd_line_ptr = CMDLINE as u32;
    p.hdr.cmdline_size = cmdline_len as u32;
    if let Some(rd) = initrd {
        p.hdr.ramdisk_image = rd.addr as u32;
        p.hdr.ramdisk_size = rd.size as u32;
        p.ext_ramdisk_image = (rd.addr >> 32) as u32;
        p.ext_ramdisk_size = (rd.size >> 32) as u32;
    }
    p.acpi_rsdp_addr = rsdp;
    if e820.len() > p.e820_table.len() {
        return Err(BootError::TooManyE820(e820.len()));
    }
    for (slot, e) in p.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    p.e820_entries = e820.len() as u8;
    let params = BootParams::new(&ZeroPage(p), GuestAddress(ZERO_PAGE));
    LinuxBootConfigurator::write_bootparams(&params, mem).map_err(|source| {
        BootError::Configurator {
            what: "Linux zero page",
            source,
        }
    })?;
    Ok(ZERO_PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::layout::{e820, RamLayout};

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    #[test]
    fn cmdline_limits() {
        let m = mem();
        write_cmdline(&m, "a=b", 2048).unwrap();
        assert_eq!(
            m.read_obj::<[u8; 4]>(GuestAddress(CMDLINE)).unwrap(),
            *b"a=b\0"
        );
        write_cmdline(&m, &"x".repeat(2047), 2048).unwrap();
        assert!(matches!(
            write_cmdline(&m, &"x".repeat(2048), 2048),
            Err(BootError::CmdlineTooLong {
                len: 2048,
                max: 2047
            })
        ));
        assert!(write_cmdline(&m, "a\0b", 2048).is_err());
    }

    #[test]
    fn pvh_and_zero_page_carry_the_map() {
        let m = mem();
        let map = e820(&RamLayout::new(64 << 20), None);
        let rd = Some(LoadedInitrd {
            addr: 0x300000,
            size: 0x1234,
        });
        write_pvh(&m, &map, 0xe0000, rd).unwrap();
        let info: StartInfo = m.read_obj(GuestAddress(PVH_INFO)).unwrap();
        assert_eq!(info.0.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.0.memmap_entries as usize, map.len());
        assert_eq!(info.0.nr_modules, 1);
        write_zero_page(&m, None, &map, 0xe0000, 2048, rd).unwrap();
        assert_eq!(
            m.read_obj::<u32>(GuestAddress(ZERO_PAGE + 0x202)).unwrap(),
            HDRS_MAGIC
        );
        assert_eq!(
            m.read_obj::<u8>(GuestAddress(ZERO_PAGE + 0x1e8)).unwrap() as usize,
            map.len()
        );
        assert_eq!(
            m.read_obj::<u64>(GuestAddress(ZERO_PAGE + 0x70)).unwrap(),
            0xe0000
        );
        assert_eq!(
            m.read_obj::<u32>(GuestAddress(ZERO_PAGE + 0x218)).unwrap(),
            0x300000
        );
    }
}
