//! The standard VGA of `-vga std` / `-device VGA` and its legacy-free
//! sibling `-device bochs-display`, as QEMU's "standard VGA" spec lays
//! them out: PCI 1234:1111, BAR0 the framebuffer, BAR2 4 KiB of MMIO with
//! the EDID (0x000), the VGA ports 0x3c0-0x3df (0x400, std only), the
//! bochs dispi registers (0x500) and QEMU's extended registers (0x600).
//!
//! Owns the registers (`dispi`), the framebuffer memory (`VgaMemory`,
//! made once per process) and the refresh worker (`refresh`). Not how
//! BAR0 reaches the guest: the VMM maps the framebuffer as a KVM memory
//! slot at BAR0, so guest writes cost no exits, and finds what the guest
//! drew through that slot's dirty log (`FramebufferSlot`). The legacy
//! VGA text and planar modes, its ioports at 0x3c0 and the VGA BIOS
//! matter only for firmware boots and are not modelled: Linux's bochs
//! driver sets a linear mode through the dispi registers.

pub mod dispi;
pub mod refresh;
#[cfg(test)]
mod tests;

use std::io;
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, MmapRegion, VolatileMemory};

use crate::bus::BusAction;
use crate::pci::config::CMD_MEMORY;
use crate::pci::{BarKind, BarRange, PciConfig, PciConfigError, PciDevice, PciIds};
pub use dispi::{Dispi, Mode};

pub const VENDOR: u16 = 0x1234;
pub const DEVICE: u16 = 0x1111;
/// BAR2's size and layout.
pub const MMIO_SIZE: u64 = 4096;
const EDID_OFF: u64 = 0x000;
const VGA_PORTS_OFF: u64 = 0x400;
const DISPI_OFF: u64 = 0x500;
const QEXT_OFF: u64 = 0x600;
/// QEMU's extended registers: their size, and the framebuffer byte order
/// (little-endian only).
const QEXT_SIZE: u32 = 8;
const QEXT_LITTLE_ENDIAN: u32 = 0x1e1e_1e1e;

/// The framebuffer's host memory: anonymous, page-aligned, the size of
/// BAR0. The VMM maps it into the guest; the refresh worker reads it.
pub struct VgaMemory {
    region: MmapRegion<()>,
}

impl VgaMemory {
    pub fn new(size: usize) -> io::Result<Self> {
        let region = MmapRegion::new(size).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self { region })
    }

    pub fn len(&self) -> usize {
        self.region.size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The mapping's host address, for the VMM's memory slot.
    pub fn host_addr(&self) -> u64 {
        self.region.as_ptr() as u64
    }

    /// Copy bytes at `offset` into `buf`; false past the end.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> bool {
        self.region
            .get_slice(offset, buf.len())
            .is_ok_and(|s| s.read_slice(buf, 0).is_ok())
    }

    pub fn write(&self, offset: usize, buf: &[u8]) -> bool {
        self.region
            .get_slice(offset, buf.len())
            .is_ok_and(|s| s.write_slice(buf, 0).is_ok())
    }
}

/// The hypervisor's side of the framebuffer: a memory slot at BAR0 with
/// dirty-page logging (the VMM implements it over KVM).
pub trait FramebufferSlot: Send + Sync {
    /// Map the framebuffer at guest-physical `gpa`, or unmap it (None).
    fn place(&self, gpa: Option<u64>) -> io::Result<()>;
    /// The pages written since the last call (bit n of word n / 64 is
    /// page n); None while the slot is not mapped.
    fn take_dirty(&self) -> io::Result<Option<Vec<u64>>>;
}

/// Which of the two devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VgaKind {
    /// `-vga std`, `-device VGA`: class VGA (0x0300), the VGA ports.
    Std,
    /// `-device bochs-display`: class "other display" (0x0380).
    BochsDisplay,
}

pub struct VgaParams {
    pub name: String,
    pub kind: VgaKind,
    pub vram: Arc<VgaMemory>,
    pub dispi: Arc<Mutex<Dispi>>,
    /// The EDID served at BAR2 offset 0.
    pub edid: [u8; 128],
    pub bar0: u64,
    pub bar2: u64,
}

/// The PCI function (runs on vCPU threads).
pub struct StdVga {
    name: String,
    kind: VgaKind,
    cfg: PciConfig,
    vram: Arc<VgaMemory>,
    dispi: Arc<Mutex<Dispi>>,
    edid: [u8; 128],
}

impl StdVga {
    pub fn new(p: VgaParams) -> Result<Self, PciConfigError> {
        let subclass = match p.kind {
            VgaKind::Std => 0x00,
            VgaKind::BochsDisplay => 0x80,
        };
        let mut cfg = PciConfig::new(&PciIds {
            vendor: VENDOR,
            device: DEVICE,
            revision: 2,
            class: 0x03,
            subclass,
            prog_if: 0,
            subsys_vendor: 0x1af4,
            subsys_id: 0x1100,
        });
        cfg.declare_bar(0, BarKind::Mem32, p.vram.len() as u64)?;
        cfg.declare_bar(2, BarKind::Mem32, MMIO_SIZE)?;
        cfg.set_bar_addr(0, p.bar0)?;
        cfg.set_bar_addr(2, p.bar2)?;
        cfg.set_command(CMD_MEMORY);
        Ok(Self {
            name: p.name,
            kind: p.kind,
            cfg,
            vram: p.vram,
            dispi: p.dispi,
            edid: p.edid,
        })
    }

    /// Where BAR0 decodes now (the framebuffer slot follows it).
    pub fn framebuffer_addr(&self) -> Option<u64> {
        self.cfg
            .active_bars()
            .into_iter()
            .find(|b| b.index == 0)
            .map(|b| b.addr)
    }

    fn dispi(&self) -> std::sync::MutexGuard<'_, Dispi> {
        self.dispi.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mmio_read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let n = data.len();
        match offset {
            o if o + n as u64 <= EDID_OFF + 128 => {
                let o = o as usize;
                data.copy_from_slice(&self.edid[o..o + n]);
            }
            // bochs-display has no VGA ports there.
            o if (VGA_PORTS_OFF..VGA_PORTS_OFF + 0x20).contains(&o)
                && self.kind == VgaKind::BochsDisplay =>
            {
                data.fill(0xff)
            }
            o if (DISPI_OFF..DISPI_OFF + 0x20).contains(&o) && n == 2 => {
                let v = self.dispi().read(((o - DISPI_OFF) / 2) as u16);
                data.copy_from_slice(&v.to_le_bytes());
            }
            o if o == QEXT_OFF && n == 4 => data.copy_from_slice(&QEXT_SIZE.to_le_bytes()),
            o if o == QEXT_OFF + 4 && n == 4 => {
                data.copy_from_slice(&QEXT_LITTLE_ENDIAN.to_le_bytes())
            }
            _ => {}
        }
    }

    fn mmio_write(&mut self, offset: u64, data: &[u8]) {
        if (DISPI_OFF..DISPI_OFF + 0x20).contains(&offset) && data.len() == 2 {
            let v = u16::from_le_bytes([data[0], data[1]]);
            self.dispi().write(((offset - DISPI_OFF) / 2) as u16, v);
        }
        // VGA ports, EDID and the byte-order register take no writes
        // here: only little-endian framebuffers are offered.
    }
}

impl PciDevice for StdVga {
    fn name(&self) -> &str {
        &self.name
    }

    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.cfg.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) -> BusAction {
        self.cfg.write(offset, data);
        BusAction::None
    }

    fn active_bars(&self) -> Vec<BarRange> {
        self.cfg.active_bars()
    }

    /// BAR0 reaches here only while the memory slot is not mapped (a
    /// failed mapping): the same memory, through exits.
    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        match bar {
            0 => {
                if !self.vram.read(offset as usize, data) {
                    data.fill(0xff);
                }
            }
            2 => self.mmio_read(offset, data),
            _ => data.fill(0xff),
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) -> BusAction {
        match bar {
            0 => {
                self.vram.write(offset as usize, data);
            }
            2 => self.mmio_write(offset, data),
            _ => {}
        }
        BusAction::None
    }
}
