//! One ATA channel (an IDE cable with units 0 and 1): the command and
//! control block registers, the PIO data port as a byte stream, the
//! command state machine (ATA commands through `cmd`, ATAPI packets
//! through `atapi`) and the channel's bus-master DMA engine (`bmdma`).
//! Owns the register protocol; the ports and BAR that reach it are
//! `ide` and `piix`.
//!
//! I/O runs synchronously on the vCPU thread that made the access: the
//! guest waits for the data port or the DMA start either way, and this
//! keeps the emulated path free of threads. A bus-master transfer
//! therefore completes (status, interrupt) before the write that started
//! it returns.
//!
//! The data port takes any access size: a `rep insw` reaches it as one
//! exit carrying up to a page, which is copied in one go, crossing DRQ
//! blocks when the guest asks for more than one.

use std::sync::Arc;

use vm_memory::GuestMemoryMmap;

use super::atapi::{self, Reply, Sense, BLOCK};
use super::bmdma::{self, BusMaster};
use super::cmd::{self, Command, Protocol, Refusal};
use super::regs::{error, status, Taskfile, CTL_HOB, CTL_NIEN, CTL_SRST, DEV_UNIT1};
use super::regs::{IREASON_COD, IREASON_IO};
use super::unit::{Unit, MAX_MULTIPLE, SECTOR};
use crate::IrqLine;

/// The most CD blocks one ATAPI DRQ block carries.
const ATAPI_CHUNK: u32 = 16;

/// What the data port is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Xfer {
    Idle,
    /// Data-in of a buffer that ends the command (IDENTIFY).
    BufIn,
    /// PIO data-in; `left` sectors after the buffered block.
    AtaIn {
        lba: u64,
        left: u32,
        block: u32,
    },
    /// PIO data-out into the block at `lba`; `left` sectors after it.
    AtaOut {
        lba: u64,
        left: u32,
        block: u32,
    },
    /// The 12 bytes of an ATAPI packet.
    Packet,
    /// ATAPI data-in; `left` disc blocks from `lba` after the buffer.
    AtapiIn {
        lba: u64,
        left: u32,
        chunk: u32,
    },
}

/// A DMA command waiting for the bus master (or running).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaJob {
    pub write: bool,
    pub lba: u64,
    pub sectors: u32,
}

/// See the module doc.
pub struct Channel {
    name: String,
    units: [Option<Unit>; 2],
    tf: Taskfile,
    status: u8,
    ctl: u8,
    irq: Arc<dyn IrqLine>,
    mem: GuestMemoryMmap,
    xfer: Xfer,
    buf: Vec<u8>,
    pos: usize,
    pub(super) bm: BusMaster,
    dma: Option<DmaJob>,
}

impl Channel {
    pub fn new(
        name: String,
        units: [Option<Unit>; 2],
        irq: Arc<dyn IrqLine>,
        mem: GuestMemoryMmap,
    ) -> Self {
        let mut c = Self {
            name,
            units,
            tf: Taskfile::default(),
            status: 0,
            ctl: 0,
            irq,
            mem,
            xfer: Xfer::Idle,
            buf: Vec::new(),
            pos: 0,
            bm: BusMaster::default(),
            dma: None,
        };
        c.reset();
        c
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn sel(&self) -> usize {
        usize::from(self.tf.device & DEV_UNIT1 != 0)
    }

    fn unit(&mut self) -> Option<&mut Unit> {
        let s = self.sel();
        self.units[s].as_mut()
    }

    /// Whether unit `i` is present (bus-master status bits 5 and 6).
    pub fn has_unit(&self, i: usize) -> bool {
        self.units.get(i).is_some_and(Option::is_some)
    }

    /// Power-on or software reset: signatures, no transfer.
    fn reset(&mut self) {
        self.xfer = Xfer::Idle;
        self.dma = None;
        self.buf.clear();
        self.pos = 0;
        self.tf.device = 0;
        self.tf.error = 1;
        let packet = self.units[0].as_ref().is_some_and(Unit::is_packet);
        self.tf.set_signature(packet);
        self.status = if self.units[0].is_none() || packet {
            0
        } else {
            status::DRDY | status::DSC
        };
    }

    /// The device's INTRQ: the bus master's interrupt bit follows the
    /// line, so with nIEN set neither changes (as on hardware and QEMU).
    fn raise(&mut self) {
        if self.ctl & CTL_NIEN == 0 {
            self.bm.status |= bmdma::ST_INTR;
            if let Err(e) = self.irq.trigger() {
                log::error!("{}: raising the interrupt: {e}", self.name);
            }
        }
    }

    fn complete(&mut self) {
        self.xfer = Xfer::Idle;
        self.status = status::DRDY | status::DSC;
        self.raise();
    }

    fn fail(&mut self, err: u8) {
        self.xfer = Xfer::Idle;
        self.dma = None;
        self.tf.error = err;
        self.status = status::DRDY | status::ERR;
        self.raise();
    }

    /// A command-block register read; `reg` 0 is the data port.
    pub fn cmd_read(&mut self, reg: u64, data: &mut [u8]) {
        if reg == 0 {
            return self.data_in(data);
        }
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.reg_read(reg + i as u64);
        }
    }

    fn reg_read(&self, reg: u64) -> u8 {
        if self.units[self.sel()].is_none() {
            // Nobody drives the bus for an absent unit: drivers find it
            // missing when the registers do not hold what they wrote.
            return 0;
        }
        match reg {
            1..=6 => self.tf.read(reg as u8, self.ctl & CTL_HOB != 0),
            7 => self.status,
            _ => 0xff,
        }
    }

    /// A command-block register write; `reg` 0 is the data port.
    pub fn cmd_write(&mut self, reg: u64, data: &[u8]) {
        if reg == 0 {
            return self.data_out(data);
        }
        for (i, &v) in data.iter().enumerate() {
            match reg + i as u64 {
                r @ 1..=6 => {
                    // Writing the taskfile clears HOB, as the standard says.
                    self.ctl &= !CTL_HOB;
                    self.tf.write(r as u8, v);
                }
                7 => self.command(v),
                _ => {}
            }
        }
    }

    /// Alternate status: the status without side effects.
    pub fn ctl_read(&self) -> u8 {
        if self.units[self.sel()].is_none() {
            0
        } else {
            self.status
        }
    }

    /// Device control: nIEN, SRST, HOB.
    pub fn ctl_write(&mut self, v: u8) {
        let was = self.ctl;
        self.ctl = v;
        if v & CTL_SRST != 0 && was & CTL_SRST == 0 {
            self.status = status::BSY;
            self.xfer = Xfer::Idle;
            self.dma = None;
        } else if v & CTL_SRST == 0 && was & CTL_SRST != 0 {
            self.reset();
        }
    }

    fn command(&mut self, op: u8) {
        let Some(u) = self.unit() else {
            return;
        };
        let packet = u.is_packet();
        let sectors = u.sectors();
        let multiple = u.multiple;
        let read_only = u.read_only();
        self.xfer = Xfer::Idle;
        self.dma = None;
        self.pos = 0;
        self.tf.error = 0;
        let Some(c) = cmd::decode(op) else {
            return self.fail(error::ABRT);
        };
        match c {
            Command::Identify | Command::IdentifyPacket => {
                if packet != (c == Command::IdentifyPacket) {
                    // An ATAPI unit answers IDENTIFY DEVICE with its
                    // signature and ABRT, so drivers know to use PACKET.
                    self.tf.set_signature(packet);
                    self.tf.device |= (self.sel() as u8) << 4;
                    return self.fail(error::ABRT);
                }
                let id = self.unit().map(|u| u.identify()).unwrap_or([0; 512]);
                self.buf = id.to_vec();
                self.start_in(Xfer::BufIn);
            }
            Command::Rw { .. } | Command::Verify { .. } if packet => self.fail(error::ABRT),
            Command::Rw {
                write,
                ext,
                multiple: m,
                dma,
            } => {
                let t = match cmd::transfer(&self.tf, write, ext, m, dma, multiple, sectors) {
                    Ok(_) if write && read_only => return self.fail(error::ABRT),
                    Ok(t) => t,
                    Err(Refusal::Aborted) => return self.fail(error::ABRT),
                    Err(Refusal::OutOfRange) => return self.fail(error::IDNF | error::ABRT),
                };
                match t.proto {
                    Protocol::Dma => {
                        self.dma = Some(DmaJob {
                            write,
                            lba: t.lba,
                            sectors: t.sectors,
                        });
                        self.status = status::BSY | status::DRDY;
                        if self.bm.started() {
                            self.run_dma();
                        }
                    }
                    Protocol::Pio { block } if write => {
                        let n = block.min(t.sectors);
                        self.buf = vec![0; n as usize * SECTOR as usize];
                        self.xfer = Xfer::AtaOut {
                            lba: t.lba,
                            left: t.sectors - n,
                            block,
                        };
                        // The first data-out block asks for data without
                        // an interrupt.
                        self.status = status::DRDY | status::DSC | status::DRQ;
                    }
                    Protocol::Pio { block } => self.ata_in_block(t.lba, t.sectors, block),
                }
            }
            Command::Verify { ext } => {
                match cmd::transfer(&self.tf, false, ext, false, false, multiple, sectors) {
                    Ok(_) => self.complete(),
                    Err(Refusal::Aborted) => self.fail(error::ABRT),
                    Err(Refusal::OutOfRange) => self.fail(error::IDNF | error::ABRT),
                }
            }
            Command::SetMultiple => {
                let n = u32::from(self.tf.count);
                if packet || (n != 0 && (!n.is_power_of_two() || n > MAX_MULTIPLE)) {
                    return self.fail(error::ABRT);
                }
                if let Some(u) = self.unit() {
                    u.multiple = n;
                }
                self.complete();
            }
            Command::SetFeatures => {
                let (f, c) = (self.tf.feature, self.tf.count);
                if self.unit().is_some_and(|u| u.set_features(f, c)) {
                    self.complete();
                } else {
                    self.fail(error::ABRT);
                }
            }
            Command::Flush => {
                let r = self.unit().and_then(|u| u.disk().cloned());
                match r.map(|d| d.flush()) {
                    Some(Err(e)) => {
                        log::error!("{}: flush: {e}", self.name);
                        self.fail(error::ABRT);
                    }
                    _ => self.complete(),
                }
            }
            Command::Diagnose => {
                let sel = self.tf.device & DEV_UNIT1;
                self.reset();
                self.tf.device = sel;
                self.raise();
            }
            Command::DeviceReset if packet => {
                self.tf.set_signature(true);
                self.tf.device |= (self.sel() as u8) << 4;
                self.status = 0;
            }
            Command::DeviceReset => self.fail(error::ABRT),
            Command::Packet => {
                if !packet || self.tf.feature & 0x01 != 0 {
                    // Packet DMA is not offered (IDENTIFY PACKET word 49).
                    return self.fail(error::ABRT);
                }
                self.buf = vec![0; 12];
                self.xfer = Xfer::Packet;
                self.tf.count = IREASON_COD;
                self.status = status::DRDY | status::DRQ;
            }
            Command::Nop if packet => self.fail(error::ABRT),
            Command::Nop => self.complete(),
        }
    }

    /// Start data-in of `self.buf`: DRQ and an interrupt.
    fn start_in(&mut self, x: Xfer) {
        self.xfer = x;
        self.pos = 0;
        self.status = status::DRDY | status::DSC | status::DRQ;
        self.raise();
    }

    /// Read the next PIO block of `left` sectors from `lba` and offer it.
    fn ata_in_block(&mut self, lba: u64, left: u32, block: u32) {
        let n = block.min(left);
        self.buf = vec![0; n as usize * SECTOR as usize];
        let disk = self.unit().and_then(|u| u.disk().cloned());
        let Some(disk) = disk else {
            return self.fail(error::ABRT);
        };
        if let Err(e) = disk.read_at(&mut self.buf, lba * SECTOR) {
            log::error!("{}: read at sector {lba}: {e}", self.name);
            self.tf.set_lba(lba, false);
            return self.fail(error::UNC | error::ABRT);
        }
        self.start_in(Xfer::AtaIn {
            lba: lba + u64::from(n),
            left: left - n,
            block,
        });
    }

    fn data_in(&mut self, out: &mut [u8]) {
        let mut done = 0;
        while done < out.len() {
            let ready = matches!(
                self.xfer,
                Xfer::BufIn | Xfer::AtaIn { .. } | Xfer::AtapiIn { .. }
            );
            if !ready || self.pos >= self.buf.len() {
                out[done..].fill(0xff);
                return;
            }
            let n = (out.len() - done).min(self.buf.len() - self.pos);
            out[done..done + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.pos += n;
            done += n;
            if self.pos == self.buf.len() {
                self.in_block_done();
            }
        }
    }

    fn in_block_done(&mut self) {
        match self.xfer {
            Xfer::AtaIn { left: 0, .. } | Xfer::BufIn => {
                self.xfer = Xfer::Idle;
                self.status = status::DRDY | status::DSC;
            }
            Xfer::AtaIn { lba, left, block } => self.ata_in_block(lba, left, block),
            Xfer::AtapiIn { left: 0, .. } => self.packet_done(),
            Xfer::AtapiIn { lba, left, chunk } => self.atapi_in_block(lba, left, chunk),
            Xfer::Idle | Xfer::AtaOut { .. } | Xfer::Packet => {}
        }
    }

    fn data_out(&mut self, data: &[u8]) {
        let mut done = 0;
        while done < data.len() {
            if !matches!(self.xfer, Xfer::AtaOut { .. } | Xfer::Packet)
                || self.pos >= self.buf.len()
            {
                return;
            }
            let n = (data.len() - done).min(self.buf.len() - self.pos);
            self.buf[self.pos..self.pos + n].copy_from_slice(&data[done..done + n]);
            self.pos += n;
            done += n;
            if self.pos == self.buf.len() {
                self.pos = 0;
                match self.xfer {
                    Xfer::AtaOut { lba, left, block } => self.out_block_done(lba, left, block),
                    Xfer::Packet => self.packet(),
                    _ => {}
                }
            }
        }
    }

    fn out_block_done(&mut self, lba: u64, left: u32, block: u32) {
        let disk = self.unit().and_then(|u| u.disk().cloned());
        let Some(disk) = disk else {
            return self.fail(error::ABRT);
        };
        if let Err(e) = disk.write_at(&self.buf, lba * SECTOR) {
            log::error!("{}: write at sector {lba}: {e}", self.name);
            self.tf.set_lba(lba, false);
            return self.fail(error::ABRT);
        }
        let lba = lba + (self.buf.len() as u64 / SECTOR);
        if left == 0 {
            return self.complete();
        }
        let n = block.min(left);
        self.buf = vec![0; n as usize * SECTOR as usize];
        self.xfer = Xfer::AtaOut {
            lba,
            left: left - n,
            block,
        };
        self.status = status::DRDY | status::DSC | status::DRQ;
        self.raise();
    }

    /// The packet's 12 bytes are in: run it.
    fn packet(&mut self) {
        let mut p = [0u8; 12];
        p.copy_from_slice(&self.buf[..12]);
        let limit = u32::from(self.tf.lba_high) << 8 | u32::from(self.tf.lba_mid);
        let Some(u) = self.unit() else {
            return;
        };
        match atapi::execute(u, &p) {
            Reply::Done => self.packet_done(),
            Reply::Data(v) if v.is_empty() => self.packet_done(),
            Reply::Data(v) => {
                self.buf = v;
                self.atapi_offer(Xfer::AtapiIn {
                    lba: 0,
                    left: 0,
                    chunk: 0,
                });
            }
            Reply::Read { lba, blocks } => {
                let chunk = (limit / BLOCK as u32).clamp(1, ATAPI_CHUNK);
                self.atapi_in_block(lba, blocks, chunk);
            }
            Reply::Fail(s) => self.packet_fail(s),
        }
    }

    fn packet_done(&mut self) {
        self.tf.count = IREASON_IO | IREASON_COD;
        self.complete();
    }

    fn packet_fail(&mut self, s: Sense) {
        if let Some(u) = self.unit() {
            u.sense = s;
        }
        self.tf.count = IREASON_IO | IREASON_COD;
        self.fail(s.key << 4);
    }

    /// Offer `self.buf` as one ATAPI DRQ block.
    fn atapi_offer(&mut self, x: Xfer) {
        let len = self.buf.len() as u16;
        self.tf.lba_mid = len as u8;
        self.tf.lba_high = (len >> 8) as u8;
        self.tf.count = IREASON_IO;
        self.start_in(x);
    }

    fn atapi_in_block(&mut self, lba: u64, left: u32, chunk: u32) {
        let n = chunk.min(left);
        self.buf = vec![0; n as usize * BLOCK as usize];
        let disk = self.unit().and_then(|u| u.disk().cloned());
        let r = match disk {
            Some(d) => d.read_at(&mut self.buf, lba * BLOCK),
            None => {
                return self.packet_fail(Sense {
                    key: atapi::NOT_READY,
                    asc: atapi::ASC_NO_MEDIUM,
                    ascq: 0,
                })
            }
        };
        if let Err(e) = r {
            log::error!("{}: CD read at block {lba}: {e}", self.name);
            // MEDIUM ERROR, unrecovered read error.
            return self.packet_fail(Sense {
                key: 0x03,
                asc: 0x11,
                ascq: 0,
            });
        }
        self.atapi_offer(Xfer::AtapiIn {
            lba: lba + u64::from(n),
            left: left - n,
            chunk,
        });
    }

    /// A bus-master register read (offsets 0..8 of this channel's part).
    pub fn bm_read(&self, off: u64, data: &mut [u8]) {
        self.bm.read(off, data);
    }

    /// A bus-master register write; a start bit may run a waiting job.
    pub fn bm_write(&mut self, off: u64, data: &[u8]) {
        if self.bm.write(off, data) && self.dma.is_some() {
            self.run_dma();
        }
    }

    /// Carry out the waiting DMA job through the PRD table.
    fn run_dma(&mut self) {
        let Some(job) = self.dma.take() else {
            return;
        };
        let disk = self.unit().and_then(|u| u.disk().cloned());
        let Some(disk) = disk else {
            return self.fail(error::ABRT);
        };
        let r = bmdma::transfer(&self.mem, &self.bm, &*disk, job);
        self.bm.status &= !bmdma::ST_ACTIVE;
        match r {
            Ok(()) => {
                self.xfer = Xfer::Idle;
                self.status = status::DRDY | status::DSC;
                self.raise();
            }
            Err(e) => {
                log::debug!("{}: DMA failed: {e}", self.name);
                self.bm.status |= bmdma::ST_ERROR;
                self.fail(error::ABRT);
            }
        }
    }
}
