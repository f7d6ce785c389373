//! What the loader handed over, copied out at boot: the PVH `hvm_start_info`
//! or the Linux `boot_params` zero page. Copying lets later code (the AP
//! trampoline at 0x8000) reuse low memory the loader's structures lived in.

use crate::boot::{ENTRY_LINUX64, ENTRY_PVH};
use crate::io::{phys_ok, phys_u32, phys_u64, phys_u8};

pub const CMDLINE_MAX: usize = 2048;
pub const E820_MAX: usize = 128;
pub const E820_RAM: u32 = 1;

const PVH_MAGIC: u32 = 0x336e_c578;
const HDRS_MAGIC: u32 = 0x5372_6448; // "HdrS"

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Pvh,
    Linux64,
}

impl Entry {
    pub fn name(self) -> &'static str {
        match self {
            Entry::Pvh => "pvh",
            Entry::Linux64 => "linux64",
        }
    }

    pub fn from_kind(kind: u32) -> Option<Entry> {
        match kind {
            ENTRY_PVH => Some(Entry::Pvh),
            ENTRY_LINUX64 => Some(Entry::Linux64),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Default)]
pub struct E820 {
    #[allow(dead_code)] // kept for probes that place buffers in RAM
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

pub struct BootInfo {
    pub entry: Entry,
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    /// The command line did not fit (or had no NUL within CMDLINE_MAX).
    pub cmdline_truncated: bool,
    e820: [E820; E820_MAX],
    e820_len: usize,
    /// RSDP address from the loader, 0 if none was given.
    pub rsdp: u64,
}

impl BootInfo {
    pub fn cmdline(&self) -> &[u8] {
        &self.cmdline[..self.cmdline_len]
    }

    pub fn e820(&self) -> &[E820] {
        &self.e820[..self.e820_len]
    }

    fn push_e820(&mut self, e: E820) {
        if self.e820_len < E820_MAX {
            self.e820[self.e820_len] = e;
            self.e820_len += 1;
        }
    }

    fn read_cmdline(&mut self, addr: u64) {
        if addr == 0 {
            return;
        }
        let mut i = 0;
        while i < CMDLINE_MAX {
            match phys_u8(addr + i as u64) {
                Some(0) | None => return,
                Some(b) => self.cmdline[i] = b,
            }
            i += 1;
            self.cmdline_len = i;
        }
        self.cmdline_truncated = true;
    }
}

/// Parses the loader's structure at `info`; Err names what was wrong.
pub fn parse(entry: Entry, info: u64) -> Result<BootInfo, &'static str> {
    let mut b = BootInfo {
        entry,
        cmdline: [0; CMDLINE_MAX],
        cmdline_len: 0,
        cmdline_truncated: false,
        e820: [E820::default(); E820_MAX],
        e820_len: 0,
        rsdp: 0,
    };
    match entry {
        Entry::Pvh => parse_pvh(&mut b, info)?,
        Entry::Linux64 => parse_boot_params(&mut b, info)?,
    }
    Ok(b)
}

/// hvm_start_info: magic@0 version@4 cmdline_paddr@24 rsdp_paddr@32
/// memmap_paddr@40 memmap_entries@48 (version >= 1); memmap entries are
/// 24 bytes: addr, size, type, reserved.
fn parse_pvh(b: &mut BootInfo, info: u64) -> Result<(), &'static str> {
    if !phys_ok(info, 56) || phys_u32(info) != Some(PVH_MAGIC) {
        return Err("bad-bootinfo");
    }
    let version = phys_u32(info + 4).unwrap_or(0);
    b.read_cmdline(phys_u64(info + 24).unwrap_or(0));
    b.rsdp = phys_u64(info + 32).unwrap_or(0);
    if version >= 1 {
        let map = phys_u64(info + 40).unwrap_or(0);
        let n = phys_u32(info + 48).unwrap_or(0) as u64;
        if n > 0 && phys_ok(map, n * 24) {
            for i in 0..n.min(E820_MAX as u64) {
                let e = map + i * 24;
                b.push_e820(E820 {
                    addr: phys_u64(e).unwrap_or(0),
                    size: phys_u64(e + 8).unwrap_or(0),
                    kind: phys_u32(e + 16).unwrap_or(0),
                });
            }
        }
    }
    Ok(())
}

/// boot_params (zero page): acpi_rsdp_addr@0x70 ext_cmd_line_ptr@0xc8
/// e820_entries@0x1e8 hdr.header@0x202 cmd_line_ptr@0x228 e820_table@0x2d0.
fn parse_boot_params(b: &mut BootInfo, zp: u64) -> Result<(), &'static str> {
    if !phys_ok(zp, 4096) || phys_u32(zp + 0x202) != Some(HDRS_MAGIC) {
        return Err("bad-bootinfo");
    }
    let cmd = phys_u32(zp + 0x228).unwrap_or(0) as u64 | (phys_u32(zp + 0xc8).unwrap_or(0) as u64) << 32;
    b.read_cmdline(cmd);
    b.rsdp = phys_u64(zp + 0x70).unwrap_or(0);
    let n = phys_u8(zp + 0x1e8).unwrap_or(0) as u64;
    // The zero page holds at most 128 entries (E820_MAX_ENTRIES_ZEROPAGE).
    for i in 0..n.min(128) {
        let e = zp + 0x2d0 + i * 20;
        b.push_e820(E820 {
            addr: phys_u64(e).unwrap_or(0),
            size: phys_u64(e + 8).unwrap_or(0),
            kind: phys_u32(e + 16).unwrap_or(0),
        });
    }
    Ok(())
}
