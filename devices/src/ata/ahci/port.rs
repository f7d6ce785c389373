//! One AHCI port: its registers (command list and FIS bases, interrupt
//! status and enable, command/status, task file data, signature, SATA
//! status/control/error, commands issued) and the processing of issued
//! command slots: command header, command FIS and PRDT read from guest
//! RAM, the command run (`exec`), the result written back as a D2H
//! Register FIS (and a PIO Setup FIS for PIO data-in commands) and the
//! slot completed. Every table is checked against RAM; a header, command
//! table or PRDT outside RAM is a host bus fatal error for that command
//! (PxIS.HBFS and TFES, ERR in PxTFD), never a panic. With an `Offload`,
//! a READ or WRITE's data moves on its thread: the slot stays issued (BSY
//! in PxTFD) until `finish`, and later slots wait for it.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::offload::{Finished, Job, Offload};
use crate::ata::exec;
use crate::ata::regs::{error, status, Taskfile};
use crate::ata::sg::Sg;
use crate::ata::unit::Unit;

/// PxIS bits.
pub const IS_DHRS: u32 = 1 << 0;
pub const IS_PSS: u32 = 1 << 1;
pub const IS_HBFS: u32 = 1 << 29;
pub const IS_TFES: u32 = 1 << 30;
/// PxCMD bits.
const CMD_ST: u32 = 1 << 0;
const CMD_FRE: u32 = 1 << 4;
const CMD_FR: u32 = 1 << 14;
const CMD_CR: u32 = 1 << 15;
/// Writable PxCMD bits: ST, SUD, POD, CLO, FRE, and ICC/ALPE/ASP/ATAPI
/// bits drivers set and read back.
const CMD_WRITABLE: u32 = 0xff00_00ff & !(1 << 3);
/// Slots per port (CAP.NCS + 1).
pub const SLOTS: u32 = 32;
/// The most PRDT entries a command may have (the header's 16 bits).
const MAX_PRDT: u64 = 65535;

/// See the module doc.
pub struct Port {
    pub unit: Option<Unit>,
    clb: u64,
    fb: u64,
    pub is: u32,
    pub ie: u32,
    cmd: u32,
    tfd: u32,
    sctl: u32,
    serr: u32,
    ci: u32,
    /// This port's number, for offloaded jobs.
    pub index: usize,
    /// The slot whose transfer is offloaded, and the epoch it belongs to
    /// (bumped when a reset or a stop forgets it).
    busy: Option<u32>,
    epoch: u64,
}

impl Port {
    pub fn new(unit: Option<Unit>) -> Self {
        let mut p = Self {
            unit,
            clb: 0,
            fb: 0,
            is: 0,
            ie: 0,
            cmd: 0,
            tfd: 0,
            sctl: 0,
            serr: 0,
            ci: 0,
            index: 0,
            busy: None,
            epoch: 0,
        };
        p.reset();
        p
    }

    /// HBA or COMRESET: registers to their reset values, the device's
    /// signature ready.
    pub fn reset(&mut self) {
        self.is = 0;
        self.ie = 0;
        self.cmd = 0;
        self.forget();
        self.serr = 0;
        self.tfd = match &self.unit {
            Some(u) if !u.is_packet() => u32::from(status::DRDY | status::DSC),
            _ => 0,
        } | 1 << 8;
        if self.unit.is_none() {
            self.tfd = 0x7f;
        }
    }

    /// Drop every issued slot, and the offloaded transfer's completion.
    fn forget(&mut self) {
        self.ci = 0;
        if self.busy.take().is_some() {
            self.epoch += 1;
        }
    }

    /// A transfer of this port is on the helper thread.
    pub fn busy(&self) -> bool {
        self.busy.is_some()
    }

    fn sig(&self) -> u32 {
        match &self.unit {
            Some(u) if u.is_packet() => 0xeb14_0101,
            Some(_) => 0x0000_0101,
            None => 0xffff_ffff,
        }
    }

    fn ssts(&self) -> u32 {
        // Device present, Gen1 speed, interface active.
        if self.unit.is_some() && self.sctl & 0xf != 1 {
            0x113
        } else {
            0
        }
    }

    pub fn read(&self, off: u64) -> u32 {
        match off {
            0x00 => self.clb as u32,
            0x04 => (self.clb >> 32) as u32,
            0x08 => self.fb as u32,
            0x0c => (self.fb >> 32) as u32,
            0x10 => self.is,
            0x14 => self.ie,
            0x18 => self.cmd,
            0x20 => self.tfd,
            0x24 => self.sig(),
            0x28 => self.ssts(),
            0x2c => self.sctl,
            0x30 => self.serr,
            0x38 => self.ci,
            _ => 0,
        }
    }

    /// A register write; issued commands run (or, with `off`, have their
    /// transfer queued) before it returns.
    pub fn write(&mut self, off: u64, v: u32, mem: &GuestMemoryMmap, off_io: Option<&mut Offload>) {
        match off {
            0x00 => self.clb = (self.clb & !0xffff_ffff) | u64::from(v & !0x3ff),
            0x04 => self.clb = (self.clb & 0xffff_ffff) | u64::from(v) << 32,
            0x08 => self.fb = (self.fb & !0xffff_ffff) | u64::from(v & !0xff),
            0x0c => self.fb = (self.fb & 0xffff_ffff) | u64::from(v) << 32,
            0x10 => self.is &= !v,
            0x14 => self.ie = v & 0xfdc0_00ff,
            0x18 => {
                self.cmd = (self.cmd & !CMD_WRITABLE) | (v & CMD_WRITABLE);
                // The engines follow their enables at once.
                self.cmd = (self.cmd & !(CMD_CR | CMD_FR))
                    | if self.cmd & CMD_ST != 0 { CMD_CR } else { 0 }
                    | if self.cmd & CMD_FRE != 0 { CMD_FR } else { 0 };
                if self.cmd & CMD_ST == 0 {
                    self.forget();
                }
                if self.cmd & CMD_FRE != 0 {
                    // The device's first D2H FIS after reset: its signature.
                    self.post_d2h(mem, self.tfd as u8, (self.tfd >> 8) as u8, self.sig());
                }
            }
            0x2c => {
                let was = self.sctl;
                self.sctl = v;
                if was & 0xf == 1 && v & 0xf != 1 {
                    // COMRESET released: the device comes back.
                    let (ie, cmd) = (self.ie, self.cmd);
                    self.reset();
                    (self.ie, self.cmd) = (ie, cmd);
                }
            }
            0x30 => self.serr &= !v,
            0x38 if self.cmd & CMD_ST != 0 => {
                self.ci |= v;
                self.run(mem, off_io);
            }
            _ => {}
        }
    }

    /// Run every issued slot, lowest first, until one's transfer is
    /// offloaded (the rest wait for its `finish`).
    fn run(&mut self, mem: &GuestMemoryMmap, mut off_io: Option<&mut Offload>) {
        while self.ci != 0 && self.busy.is_none() {
            let slot = self.ci.trailing_zeros();
            if self.run_slot(mem, slot, off_io.as_deref_mut()) {
                self.busy = Some(slot);
                return;
            }
            self.ci &= !(1 << slot);
        }
    }

    /// Complete the offloaded slot `f` names, unless a reset or stop forgot
    /// it; then run the slots issued meanwhile. True when it completed.
    pub fn finish(
        &mut self,
        mem: &GuestMemoryMmap,
        f: Finished,
        off_io: Option<&mut Offload>,
    ) -> bool {
        if f.epoch != self.epoch || self.busy != Some(f.slot) {
            return false;
        }
        self.busy = None;
        let e = f.end;
        self.complete(mem, f.slot, e.bytes, e.status, e.error, e.pio_in);
        self.ci &= !(1 << f.slot);
        self.run(mem, off_io);
        true
    }

    fn fail_fatal(&mut self, why: &str) {
        log::debug!("AHCI command failed: {why}");
        self.tfd = u32::from(status::DRDY | status::ERR) | u32::from(error::ABRT) << 8;
        self.is |= IS_HBFS | IS_TFES;
    }

    /// Run slot `slot`; true when its transfer went to `off_io` (the slot
    /// completes in `finish`).
    fn run_slot(&mut self, mem: &GuestMemoryMmap, slot: u32, off_io: Option<&mut Offload>) -> bool {
        let hdr_at = self.clb + u64::from(slot) * 32;
        let mut hdr = [0u8; 32];
        if mem.read_slice(&mut hdr, GuestAddress(hdr_at)).is_err() {
            self.fail_fatal("command header outside RAM");
            return false;
        }
        let dw = |i: usize| {
            u32::from_le_bytes([hdr[4 * i], hdr[4 * i + 1], hdr[4 * i + 2], hdr[4 * i + 3]])
        };
        let prdtl = u64::from(dw(0) >> 16);
        let ctba = (u64::from(dw(2)) | u64::from(dw(3)) << 32) & !0x7f;
        let mut table = [0u8; 0x80];
        if mem.read_slice(&mut table, GuestAddress(ctba)).is_err() {
            self.fail_fatal("command table outside RAM");
            return false;
        }
        let fis = &table[..20];
        if fis[0] != 0x27 || fis[1] & 0x80 == 0 {
            // Not a command: a control FIS (soft reset) needs no answer
            // beyond the registers.
            self.complete(mem, slot, 0, status::DRDY | status::DSC, 0, false);
            return false;
        }
        let mut regions = Vec::new();
        for i in 0..prdtl.min(MAX_PRDT) {
            let mut e = [0u8; 16];
            if mem
                .read_slice(&mut e, GuestAddress(ctba + 0x80 + 16 * i))
                .is_err()
            {
                self.fail_fatal("PRDT outside RAM");
                return false;
            }
            let addr = u64::from_le_bytes(e[..8].try_into().unwrap_or_default()) & !1;
            let len =
                u64::from(u32::from_le_bytes(e[12..16].try_into().unwrap_or_default()) & 0x3f_ffff)
                    + 1;
            regions.push((addr, len));
        }
        let sg = match Sg::new(mem, regions) {
            Ok(s) => s,
            Err(o) => {
                log::debug!("AHCI PRD {:#x}+{:#x} outside RAM", o.addr, o.len);
                self.fail_fatal("PRD region outside RAM");
                return false;
            }
        };
        let tf = Taskfile {
            feature: fis[3],
            lba_low: fis[4],
            lba_mid: fis[5],
            lba_high: fis[6],
            device: fis[7],
            hob_lba_low: fis[8],
            hob_lba_mid: fis[9],
            hob_lba_high: fis[10],
            hob_feature: fis[11],
            count: fis[12],
            hob_count: fis[13],
            error: 0,
        };
        let mut acmd = [0u8; 12];
        acmd.copy_from_slice(&table[0x40..0x4c]);
        let Some(u) = self.unit.as_mut() else {
            self.fail_fatal("no device on the port");
            return false;
        };
        let t = exec::disk_transfer(u, fis[2], &tf, &sg);
        if let (Some(o), Some(t), Some(disk)) = (off_io, t, u.disk().cloned()) {
            let job = Job {
                port: self.index,
                slot,
                epoch: self.epoch,
                disk,
                t,
                sg,
            };
            match o.submit(job) {
                Ok(()) => {
                    self.tfd = u32::from(status::BSY | status::DRDY | status::DSC);
                    return true;
                }
                Err(job) => {
                    let e = job.run(mem).end;
                    self.complete(mem, slot, e.bytes, e.status, e.error, e.pio_in);
                    return false;
                }
            }
        }
        let e = exec::execute(u, fis[2], &tf, &acmd, &sg, mem);
        self.complete(mem, slot, e.bytes, e.status, e.error, e.pio_in);
        false
    }

    /// Write back the byte count and the result FIS, update PxTFD/PxIS.
    fn complete(
        &mut self,
        mem: &GuestMemoryMmap,
        slot: u32,
        bytes: u64,
        st: u8,
        err: u8,
        pio_in: bool,
    ) {
        let at = self.clb + u64::from(slot) * 32 + 4;
        let _ = mem.write_obj((bytes as u32).to_le(), GuestAddress(at));
        self.tfd = u32::from(st) | u32::from(err) << 8;
        if pio_in && self.cmd & CMD_FRE != 0 {
            let mut f = [0u8; 20];
            f[0] = 0x5f;
            f[1] = 0x40 | 0x20;
            f[2] = status::DRDY | status::DSC | status::DRQ;
            f[3] = err;
            f[15] = st;
            let _ = mem.write_slice(&f, GuestAddress(self.fb + 0x20));
            self.is |= IS_PSS;
        }
        self.post_d2h(mem, st, err, 0);
        self.is |= IS_DHRS;
        if st & status::ERR != 0 {
            self.is |= IS_TFES;
        }
    }

    /// A D2H Register FIS into the receive area (when enabled).
    fn post_d2h(&self, mem: &GuestMemoryMmap, st: u8, err: u8, sig: u32) {
        if self.cmd & CMD_FRE == 0 {
            return;
        }
        let mut f = [0u8; 20];
        f[0] = 0x34;
        f[1] = 0x40;
        f[2] = st;
        f[3] = err;
        let s = sig.to_le_bytes();
        (f[12], f[4], f[5], f[6]) = (s[0], s[1], s[2], s[3]);
        let _ = mem.write_slice(&f, GuestAddress(self.fb + 0x40));
    }
}
