//! A polling IDE driver for the probe: legacy primary/secondary channels,
//! LBA48 PIO (READ/WRITE SECTORS EXT and MULTIPLE EXT, one `rep insw` /
//! `rep outsw` per DRQ block) and bus-master DMA through the PIIX IDE
//! function's BAR4 with PRD tables in the probe's memory. Interrupts stay
//! off (nIEN): the probe runs at CPL3 and polls the alternate status.

use core::arch::asm;

use crate::io::{inb, outb, outl, rdtsc, phys_ok};
use crate::pci::{self, Access, Config};
use crate::tsc;

pub const SECTOR: u64 = 512;
const BSY: u8 = 0x80;
const DRDY: u8 = 0x40;
const DRQ: u8 = 0x08;
pub const ERR: u8 = 0x01;
const TIMEOUT_US: u64 = 2_000_000;
/// READ/WRITE MULTIPLE block this driver sets.
pub const MULTIPLE: u64 = 16;

/// Legacy channel bases: (command block, control port).
pub const CHANNELS: [(u16, u16); 2] = [(0x1f0, 0x3f6), (0x170, 0x376)];

/// A PRD table: 64 entries, 4 KiB aligned (so it never crosses 64 KiB).
#[repr(C, align(4096))]
pub struct PrdTable(pub core::cell::UnsafeCell<[u64; 64]>);

// SAFETY: the probe drives devices from the BSP only.
unsafe impl Sync for PrdTable {}

pub static PRDS: PrdTable = PrdTable(core::cell::UnsafeCell::new([0; 64]));

/// A PRD entry: physical address, byte count (0 = 64 KiB), end of table.
pub fn prd(addr: u64, len: u32, eot: bool) -> u64 {
    (addr & 0xffff_ffff) | ((len as u64 & 0xffff) << 32) | if eot { 1 << 63 } else { 0 }
}

pub fn set_prds(entries: &[u64]) -> u64 {
    let p = PRDS.0.get() as *mut u64;
    for (i, &e) in entries.iter().enumerate().take(64) {
        // SAFETY: inside the static table; the device reads it only while
        // a command this driver started runs, after these stores.
        unsafe { core::ptr::write_volatile(p.add(i), e) };
    }
    p as u64
}

fn insw(port: u16, addr: u64, words: u64) {
    assert!(phys_ok(addr, words * 2));
    // SAFETY: the destination is the probe's own buffer (asserted mapped);
    // the TSS bitmap allows the port.
    unsafe {
        asm!("rep insw", in("dx") port, inout("rdi") addr => _, inout("rcx") words => _,
             options(nostack, preserves_flags))
    }
}

fn outsw(port: u16, addr: u64, words: u64) {
    assert!(phys_ok(addr, words * 2));
    // SAFETY: reads the probe's own buffer (asserted mapped).
    unsafe {
        asm!("rep outsw", in("dx") port, inout("rsi") addr => _, inout("rcx") words => _,
             options(nostack, preserves_flags, readonly))
    }
}

/// One unit on one channel.
pub struct Ide {
    pub cmd: u16,
    pub ctl: u16,
    pub unit: u8,
    pub sectors: u64,
    /// The PIIX IDE function's bus-master base for this channel.
    pub bm: Option<u16>,
}

/// How a command ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub status: u8,
    pub error: u8,
}

impl Done {
    pub fn ok(self) -> bool {
        self.status & ERR == 0
    }
}

impl Ide {
    fn alt(&self) -> u8 {
        inb(self.ctl)
    }

    /// Polls until BSY clears and `want` bits are set (or ERR); Err on timeout.
    fn wait(&self, want: u8) -> Result<u8, &'static str> {
        let end = rdtsc() + tsc::us_to_ticks(TIMEOUT_US);
        loop {
            let s = self.alt();
            if s & BSY == 0 && (s & want == want || s & ERR != 0) {
                return Ok(s);
            }
            if rdtsc() > end {
                return Err("ide-timeout");
            }
        }
    }

    fn select(&self) {
        outb(self.cmd + 6, 0x40 | (self.unit << 4));
    }

    /// Whether a unit answers at (channel, unit): its registers hold a value.
    pub fn present(channel: usize, unit: u8) -> bool {
        let (cmd, _) = CHANNELS[channel];
        outb(cmd + 6, 0x40 | (unit << 4));
        outb(cmd + 2, 0x55);
        outb(cmd + 3, 0xaa);
        inb(cmd + 2) == 0x55 && inb(cmd + 3) == 0xaa
    }

    /// IDENTIFY the unit; Err when nobody answers or it is not a disk.
    pub fn open(channel: usize, unit: u8, buf: u64) -> Result<Ide, &'static str> {
        let (cmd, ctl) = CHANNELS[channel];
        let mut d = Ide { cmd, ctl, unit, sectors: 0, bm: None };
        if !Self::present(channel, unit) {
            return Err("no-ide-unit");
        }
        // nIEN: the probe polls.
        outb(ctl, 0x02);
        d.select();
        d.wait(DRDY)?;
        outb(cmd + 7, 0xec);
        let s = d.wait(DRQ)?;
        if s & ERR != 0 {
            return Err("identify-failed");
        }
        insw(cmd, buf, 256);
        let w = |i: u64| crate::io::phys_u16(buf + 2 * i).unwrap_or(0) as u64;
        d.sectors = if w(83) & (1 << 10) != 0 {
            w(100) | w(101) << 16 | w(102) << 32 | w(103) << 48
        } else {
            w(60) | w(61) << 16
        };
        d.wait(0)?;
        // SET MULTIPLE MODE for the MULTIPLE commands.
        outb(cmd + 2, MULTIPLE as u8);
        outb(cmd + 7, 0xc6);
        let s = d.wait(DRDY)?;
        if s & ERR != 0 {
            return Err("set-multiple-failed");
        }
        Ok(d)
    }

    /// Finds the PIIX IDE function and its bus-master base for this channel.
    pub fn find_bm(&mut self, channel: usize) -> Result<u16, &'static str> {
        let cfg = Config { access: pci::mcfg().unwrap_or(Access::Cam) };
        let mut funcs = [pci::Function { bdf: pci::Bdf { bus: 0, dev: 0, func: 0 }, vendor: 0, device: 0 }; pci::MAX_FUNCS];
        let n = pci::enumerate(&cfg, &mut funcs).min(pci::MAX_FUNCS);
        let f = funcs[..n]
            .iter()
            .find(|f| cfg.read16(f.bdf, 0x0a) == 0x0101)
            .ok_or("no-ide-function")?;
        let bar4 = cfg.read32(f.bdf, 0x20);
        if bar4 & 1 == 0 || bar4 & !3 == 0 {
            return Err("no-bm-bar");
        }
        // I/O decoding and bus mastering.
        let c = cfg.read16(f.bdf, 4);
        cfg.write16(f.bdf, 4, c | 0x5);
        let base = (bar4 & 0xfffc) as u16 + 8 * channel as u16;
        self.bm = Some(base);
        Ok(base)
    }

    /// The taskfile of an LBA48 command, then the command.
    pub fn issue48(&self, op: u8, lba: u64, count: u16) {
        self.select();
        let c = self.cmd;
        outb(c + 2, (count >> 8) as u8);
        outb(c + 3, (lba >> 24) as u8);
        outb(c + 4, (lba >> 32) as u8);
        outb(c + 5, (lba >> 40) as u8);
        outb(c + 2, count as u8);
        outb(c + 3, lba as u8);
        outb(c + 4, (lba >> 8) as u8);
        outb(c + 5, (lba >> 16) as u8);
        outb(c + 7, op);
    }

    fn done(&self) -> Result<Done, &'static str> {
        let status = self.wait(0)?;
        Ok(Done { status, error: inb(self.cmd + 1) })
    }

    /// PIO transfer of `count` sectors at `buf`; `multiple` uses the
    /// MULTIPLE commands (one DRQ block per 16 sectors).
    pub fn pio(&self, write: bool, lba: u64, count: u64, buf: u64, multiple: bool) -> Result<Done, &'static str> {
        let op = match (write, multiple) {
            (false, false) => 0x24,
            (true, false) => 0x34,
            (false, true) => 0x29,
            (true, true) => 0x39,
        };
        self.issue48(op, lba, count as u16);
        let block = if multiple { MULTIPLE } else { 1 };
        let mut at = 0;
        while at < count {
            let s = self.wait(DRQ)?;
            if s & ERR != 0 || s & DRQ == 0 {
                return self.done();
            }
            let n = block.min(count - at);
            let addr = buf + at * SECTOR;
            if write {
                outsw(self.cmd, addr, n * SECTOR / 2);
            } else {
                insw(self.cmd, addr, n * SECTOR / 2);
            }
            at += n;
        }
        self.done()
    }

    /// A bus-master DMA command with the PRD table at `table`; returns
    /// the ATA status and the bus-master status.
    pub fn dma(&self, write: bool, lba: u64, count: u16, table: u64) -> Result<(Done, u8), &'static str> {
        let bm = self.bm.ok_or("no-bm")?;
        outb(bm, 0);
        outb(bm + 2, 0x06);
        outl(bm + 4, table as u32);
        self.issue48(if write { 0x35 } else { 0x25 }, lba, count);
        outb(bm, if write { 0x01 } else { 0x09 });
        // With nIEN the interrupt bit stays clear (as on hardware): the
        // end is the device idle (no BSY, no DRQ) and the bus master
        // inactive, or an error.
        let end = rdtsc() + tsc::us_to_ticks(TIMEOUT_US);
        loop {
            let s = self.alt();
            let b = inb(bm + 2);
            if s & ERR != 0 || b & 0x02 != 0 || (s & (BSY | DRQ) == 0 && b & 0x01 == 0) {
                break;
            }
            if rdtsc() > end {
                return Err("bm-timeout");
            }
        }
        let d = self.done()?;
        let bst = inb(bm + 2);
        outb(bm, 0);
        Ok((d, bst))
    }

    /// Software reset of the channel (SRST), the bus master stopped, and
    /// the MULTIPLE block set again.
    pub fn reset(&self) -> Result<(), &'static str> {
        if let Some(bm) = self.bm {
            outb(bm, 0);
        }
        outb(self.ctl, 0x06);
        tsc::delay_us(10);
        outb(self.ctl, 0x02);
        self.select();
        self.wait(DRDY)?;
        outb(self.cmd + 2, MULTIPLE as u8);
        outb(self.cmd + 7, 0xc6);
        self.wait(DRDY).map(|_| ())
    }

    /// A non-data command (FLUSH CACHE EXT, ...).
    pub fn simple(&self, op: u8) -> Result<Done, &'static str> {
        self.select();
        outb(self.cmd + 7, op);
        self.done()
    }
}
