//! A polling AHCI driver for the probe: finds the HBA (class 01/06/01) by
//! PCI enumeration, starts one port with its command list and FIS area in
//! the probe's memory, and runs one command at a time in slot 0 with a
//! PRDT, polling PxCI and PxIS. Interrupts stay off (GHC.IE clear).

use core::cell::UnsafeCell;

use crate::io::{mmio_read32, mmio_write32, rdtsc};
use crate::pci::{self, Access, Config};
use crate::tsc;

const TIMEOUT_US: u64 = 2_000_000;
const IS_TFES: u32 = 1 << 30;
const IS_HBFS: u32 = 1 << 29;

/// Command list (1 KiB aligned), FIS area (256) and one command table
/// (128-aligned, 64 PRDT entries), in one page-aligned block.
#[repr(C, align(4096))]
pub struct Tables(UnsafeCell<[u8; 8192]>);

// SAFETY: the probe drives devices from the BSP only.
unsafe impl Sync for Tables {}

static TABLES: Tables = Tables(UnsafeCell::new([0; 8192]));
const CL: u64 = 0;
const FIS: u64 = 0x400;
const CT: u64 = 0x1000;
pub const MAX_PRDS: usize = 64;

fn base() -> u64 {
    TABLES.0.get() as u64
}

fn put(off: u64, v: &[u8]) {
    for (i, &b) in v.iter().enumerate() {
        // SAFETY: inside TABLES (offsets below 8192 by construction); the
        // HBA reads it only after the PxCI write that follows.
        unsafe { core::ptr::write_volatile((base() + off + i as u64) as *mut u8, b) };
    }
}

/// One port of the HBA.
pub struct Ahci {
    pub abar: u64,
    pub port: u32,
    pub sectors: u64,
    pub atapi: bool,
}

/// How a command ended.
#[derive(Clone, Copy)]
pub struct Done {
    pub tfd: u32,
    pub is: u32,
    /// PRDBC: bytes the HBA says it moved.
    pub bytes: u32,
}

impl Done {
    pub fn ok(self) -> bool {
        self.tfd & 1 == 0 && self.is & (IS_TFES | IS_HBFS) == 0
    }
}

impl Ahci {
    fn reg(&self, off: u64) -> u32 {
        mmio_read32(self.abar + off)
    }
    fn set(&self, off: u64, v: u32) {
        mmio_write32(self.abar + off, v)
    }
    fn preg(&self, off: u64) -> u32 {
        self.reg(0x100 + 0x80 * self.port as u64 + off)
    }
    fn pset(&self, off: u64, v: u32) {
        self.set(0x100 + 0x80 * self.port as u64 + off, v)
    }

    /// The HBA's BAR5, with memory decoding and bus mastering on.
    pub fn find() -> Result<u64, &'static str> {
        let cfg = Config { access: pci::mcfg().unwrap_or(Access::Cam) };
        let mut funcs = [pci::Function { bdf: pci::Bdf { bus: 0, dev: 0, func: 0 }, vendor: 0, device: 0 }; pci::MAX_FUNCS];
        let n = pci::enumerate(&cfg, &mut funcs).min(pci::MAX_FUNCS);
        let f = funcs[..n]
            .iter()
            .find(|f| cfg.read16(f.bdf, 0x0a) == 0x0106 && cfg.read8(f.bdf, 0x09) == 0x01)
            .ok_or("no-ahci-function")?;
        let bar = pci::bar(&cfg, f.bdf, 5).ok_or("no-abar")?;
        if bar.addr == 0 {
            return Err("abar-unassigned");
        }
        pci::enable(&cfg, f.bdf);
        Ok(bar.addr)
    }

    /// Whether a device is on `port` (PxSSTS.DET = 3).
    pub fn present(abar: u64, port: u32) -> bool {
        mmio_read32(abar + 0x100 + 0x80 * port as u64 + 0x28) & 0xf == 3
    }

    /// Start `port`: engines off, tables set, errors cleared, engines on;
    /// then IDENTIFY (PACKET) DEVICE into `buf`.
    pub fn open(abar: u64, port: u32, buf: u64) -> Result<Ahci, &'static str> {
        let mut a = Ahci { abar, port, sectors: 0, atapi: false };
        // AHCI mode, interrupts off.
        a.set(0x04, 1 << 31);
        if a.reg(0x0c) & (1 << port) == 0 {
            return Err("port-not-implemented");
        }
        if !Self::present(abar, port) {
            return Err("no-ahci-device");
        }
        a.stop()?;
        a.pset(0x00, (base() + CL) as u32);
        a.pset(0x04, ((base() + CL) >> 32) as u32);
        a.pset(0x08, (base() + FIS) as u32);
        a.pset(0x0c, ((base() + FIS) >> 32) as u32);
        a.start()?;
        a.atapi = a.preg(0x24) == 0xeb14_0101;
        let op = if a.atapi { 0xa1 } else { 0xec };
        let d = a.command(op, 0, 0, false, &[(buf, 512)], None)?;
        if !d.ok() {
            return Err("identify-failed");
        }
        let w = |i: u64| crate::io::phys_u16(buf + 2 * i).unwrap_or(0) as u64;
        a.sectors = w(100) | w(101) << 16 | w(102) << 32 | w(103) << 48;
        Ok(a)
    }

    fn wait_clear(&self, off: u64, bits: u32) -> Result<(), &'static str> {
        let end = rdtsc() + tsc::us_to_ticks(TIMEOUT_US);
        while self.preg(off) & bits != 0 {
            if rdtsc() > end {
                return Err("ahci-timeout");
            }
        }
        Ok(())
    }

    fn stop(&self) -> Result<(), &'static str> {
        let cmd = self.preg(0x18);
        self.pset(0x18, cmd & !0x11);
        self.wait_clear(0x18, (1 << 15) | (1 << 14))
    }

    fn start(&self) -> Result<(), &'static str> {
        self.pset(0x30, u32::MAX);
        self.pset(0x10, u32::MAX);
        self.pset(0x18, self.preg(0x18) | 0x10);
        self.pset(0x18, self.preg(0x18) | 0x01);
        Ok(())
    }

    /// After an error: restart the port's engine, as the spec's recovery.
    pub fn recover(&self) -> Result<(), &'static str> {
        self.stop()?;
        self.start()
    }

    /// Run command `op` in slot 0 with a Register H2D FIS for `lba` and
    /// `count`, the PRDT `prds` (address, bytes), and an ATAPI packet;
    /// `table` overrides the command table's address (hostile cases).
    pub fn command(
        &self,
        op: u8,
        lba: u64,
        count: u16,
        write: bool,
        prds: &[(u64, u32)],
        packet: Option<&[u8; 12]>,
    ) -> Result<Done, &'static str> {
        self.command_at(op, lba, count, write, prds, packet, base() + CT)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn command_at(
        &self,
        op: u8,
        lba: u64,
        count: u16,
        write: bool,
        prds: &[(u64, u32)],
        packet: Option<&[u8; 12]>,
        table: u64,
    ) -> Result<Done, &'static str> {
        let n = prds.len().min(MAX_PRDS);
        let dw0 = 5u32 | if packet.is_some() { 1 << 5 } else { 0 } | if write { 1 << 6 } else { 0 } | (n as u32) << 16;
        let mut h = [0u8; 32];
        h[..4].copy_from_slice(&dw0.to_le_bytes());
        h[8..16].copy_from_slice(&table.to_le_bytes());
        put(CL, &h);
        let mut f = [0u8; 20];
        f[0] = 0x27;
        f[1] = 0x80;
        f[2] = op;
        f[3] = 0;
        f[4] = lba as u8;
        f[5] = (lba >> 8) as u8;
        f[6] = (lba >> 16) as u8;
        f[7] = 0x40;
        f[8] = (lba >> 24) as u8;
        f[9] = (lba >> 32) as u8;
        f[10] = (lba >> 40) as u8;
        f[12] = count as u8;
        f[13] = (count >> 8) as u8;
        if packet.is_some() {
            // The byte count limit for the PIO-style packet protocol.
            f[5] = 0xfe;
            f[6] = 0xff;
        }
        put(CT, &f);
        put(CT + 0x40, packet.map_or(&[0u8; 12], |p| p));
        for (i, &(addr, len)) in prds[..n].iter().enumerate() {
            let mut e = [0u8; 16];
            e[..8].copy_from_slice(&addr.to_le_bytes());
            e[12..].copy_from_slice(&len.wrapping_sub(1).to_le_bytes());
            put(CT + 0x80 + 16 * i as u64, &e);
        }
        self.pset(0x10, u32::MAX);
        self.pset(0x38, 1);
        let end = rdtsc() + tsc::us_to_ticks(TIMEOUT_US);
        loop {
            let is = self.preg(0x10);
            if self.preg(0x38) & 1 == 0 || is & (IS_TFES | IS_HBFS) != 0 {
                break;
            }
            if rdtsc() > end {
                return Err("ahci-timeout");
            }
        }
        let bytes = crate::io::phys_u32(base() + CL + 4).unwrap_or(0);
        Ok(Done { tfd: self.preg(0x20), is: self.preg(0x10), bytes })
    }
}
