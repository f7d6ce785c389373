//! One ATA or ATAPI command carried out whole against a scatter-gather
//! list, as an AHCI port runs it: the data of PIO and DMA commands alike
//! moves through the command's PRDT. Same command set and checks as the
//! IDE channel (`cmd`, `atapi`, `unit`); a list shorter than the data
//! fails the command before anything moves.

use casemate_disk::DiskImage;
use vm_memory::GuestMemoryMmap;

use super::atapi::{self, Reply, BLOCK};
use super::cmd::{self, Command, Refusal};
use super::regs::{error, status, Taskfile};
use super::sg::Sg;
use super::unit::{Unit, MAX_MULTIPLE, SECTOR};

/// Bytes moved per disk access.
const CHUNK: u64 = 1 << 20;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub status: u8,
    pub error: u8,
    /// Bytes moved through the list.
    pub bytes: u64,
    /// A PIO data-in command (AHCI reports its end in a PIO Setup FIS).
    pub pio_in: bool,
}

fn ok(bytes: u64, pio_in: bool) -> Ended {
    Ended {
        status: status::DRDY | status::DSC,
        error: 0,
        bytes,
        pio_in,
    }
}

/// A READ or WRITE command's data transfer, every check passed: what
/// `run_transfer` moves, possibly on another thread than the command's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskTransfer {
    /// Byte offset on the disk, and length.
    pub off: u64,
    pub bytes: u64,
    pub write: bool,
    /// A PIO data-in command (see `Ended::pio_in`).
    pub pio_in: bool,
}

/// The transfer of command `op` when it is a READ or WRITE (DMA or PIO, any
/// width) that will succeed up to the disk access itself: LBA in range,
/// writable unit for a write, list long enough, a disk attached. `None`
/// for every other command and every refusal: `execute` runs and answers
/// those.
pub fn disk_transfer(u: &Unit, op: u8, tf: &Taskfile, sg: &Sg) -> Option<DiskTransfer> {
    let Some(Command::Rw {
        write,
        ext,
        multiple,
        dma,
    }) = cmd::decode(op)
    else {
        return None;
    };
    if u.is_packet() || (write && u.read_only()) || u.disk().is_none() {
        return None;
    }
    let t = cmd::transfer(tf, write, ext, multiple, dma, u.multiple, u.sectors()).ok()?;
    let bytes = u64::from(t.sectors) * SECTOR;
    (sg.len() >= bytes).then_some(DiskTransfer {
        off: t.lba * SECTOR,
        bytes,
        write,
        pio_in: !dma && !write,
    })
}

/// Move `t` between `disk` and the list; the command's end.
pub fn run_transfer(
    disk: &dyn DiskImage,
    t: &DiskTransfer,
    sg: &Sg,
    mem: &GuestMemoryMmap,
) -> Ended {
    match copy(disk, sg, mem, t.off, t.bytes, t.write) {
        Ok(()) => ok(t.bytes, t.pio_in),
        Err(e) => fail(e),
    }
}

fn fail(err: u8) -> Ended {
    Ended {
        status: status::DRDY | status::ERR,
        error: err,
        bytes: 0,
        pio_in: false,
    }
}

/// Run command `tf`'s opcode (`op`) on `u`; `acmd` is the ATAPI packet.
pub fn execute(
    u: &mut Unit,
    op: u8,
    tf: &Taskfile,
    acmd: &[u8; 12],
    sg: &Sg,
    mem: &GuestMemoryMmap,
) -> Ended {
    let packet = u.is_packet();
    let Some(c) = cmd::decode(op) else {
        return fail(error::ABRT);
    };
    match c {
        Command::Identify | Command::IdentifyPacket => {
            if packet != (c == Command::IdentifyPacket) {
                return fail(error::ABRT);
            }
            let id = u.identify();
            let n = (id.len() as u64).min(sg.len());
            match sg.write(mem, 0, &id[..n as usize]) {
                Ok(()) => ok(n, true),
                Err(_) => fail(error::ABRT),
            }
        }
        Command::Rw { .. } | Command::Verify { .. } if packet => fail(error::ABRT),
        Command::Rw {
            write,
            ext,
            multiple,
            dma,
        } => {
            let t = match cmd::transfer(tf, write, ext, multiple, dma, u.multiple, u.sectors()) {
                Ok(t) => t,
                Err(Refusal::Aborted) => return fail(error::ABRT),
                Err(Refusal::OutOfRange) => return fail(error::IDNF | error::ABRT),
            };
            if write && u.read_only() {
                return fail(error::ABRT);
            }
            let bytes = u64::from(t.sectors) * SECTOR;
            if sg.len() < bytes {
                return fail(error::ABRT);
            }
            let Some(disk) = u.disk() else {
                return fail(error::ABRT);
            };
            match copy(&**disk, sg, mem, t.lba * SECTOR, bytes, write) {
                Ok(()) => ok(bytes, !dma && !write),
                Err(e) => fail(e),
            }
        }
        Command::Verify { ext } => {
            match cmd::transfer(tf, false, ext, false, false, u.multiple, u.sectors()) {
                Ok(_) => ok(0, false),
                Err(Refusal::Aborted) => fail(error::ABRT),
                Err(Refusal::OutOfRange) => fail(error::IDNF | error::ABRT),
            }
        }
        Command::SetMultiple => {
            let n = u32::from(tf.count);
            if packet || (n != 0 && (!n.is_power_of_two() || n > MAX_MULTIPLE)) {
                return fail(error::ABRT);
            }
            u.multiple = n;
            ok(0, false)
        }
        Command::SetFeatures => {
            if u.set_features(tf.feature, tf.count) {
                ok(0, false)
            } else {
                fail(error::ABRT)
            }
        }
        Command::Flush => match u.disk().map(|d| d.flush()) {
            Some(Err(e)) => {
                log::error!("AHCI flush: {e}");
                fail(error::ABRT)
            }
            _ => ok(0, false),
        },
        Command::Diagnose | Command::Nop if !packet => ok(0, false),
        Command::DeviceReset if packet => ok(0, false),
        Command::Packet if packet => run_packet(u, acmd, sg, mem),
        _ => fail(error::ABRT),
    }
}

/// Move `bytes` between the disk at `off` and the list.
fn copy(
    disk: &dyn DiskImage,
    sg: &Sg,
    mem: &GuestMemoryMmap,
    off: u64,
    bytes: u64,
    write: bool,
) -> Result<(), u8> {
    if let Some(r) = super::direct::transfer(disk, mem, &sg.pieces(0, bytes), off, write) {
        return r.map_err(|e| disk_failed(write, off, &e));
    }
    let mut buf = vec![0u8; CHUNK.min(bytes) as usize];
    let mut done = 0;
    while done < bytes {
        let n = CHUNK.min(bytes - done) as usize;
        let b = &mut buf[..n];
        if write {
            sg.read(mem, done, b).map_err(|_| error::ABRT)?;
            disk.write_at(b, off + done)
                .map_err(|e| disk_failed(true, off + done, &e))?;
        } else {
            disk.read_at(b, off + done)
                .map_err(|e| disk_failed(false, off + done, &e))?;
            sg.write(mem, done, b).map_err(|_| error::ABRT)?;
        }
        done += n as u64;
    }
    Ok(())
}

/// A disk access at byte `at` failed: logged, and the error register's
/// bits (an unreadable sector for a read, an abort for a write).
fn disk_failed(write: bool, at: u64, e: &dyn std::fmt::Display) -> u8 {
    let what = if write { "write" } else { "read" };
    log::error!("AHCI {what} at byte {at}: {e}");
    if write {
        error::ABRT
    } else {
        error::UNC | error::ABRT
    }
}

fn run_packet(u: &mut Unit, acmd: &[u8; 12], sg: &Sg, mem: &GuestMemoryMmap) -> Ended {
    let sense_fail = |u: &mut Unit, s: atapi::Sense| {
        u.sense = s;
        fail(s.key << 4)
    };
    match atapi::execute(u, acmd) {
        Reply::Done => ok(0, false),
        Reply::Data(v) => {
            let n = (v.len() as u64).min(sg.len());
            match sg.write(mem, 0, &v[..n as usize]) {
                Ok(()) => ok(n, false),
                Err(_) => fail(error::ABRT),
            }
        }
        Reply::Read { lba, blocks } => {
            let bytes = u64::from(blocks) * BLOCK;
            if sg.len() < bytes {
                return fail(error::ABRT);
            }
            let r = match u.disk() {
                Some(disk) => copy(&**disk, sg, mem, lba * BLOCK, bytes, false),
                None => Err(error::ABRT),
            };
            match r {
                Ok(()) => ok(bytes, false),
                // MEDIUM ERROR, unrecovered read error.
                Err(_) => sense_fail(
                    u,
                    atapi::Sense {
                        key: 0x03,
                        asc: 0x11,
                        ascq: 0,
                    },
                ),
            }
        }
        Reply::Fail(s) => sense_fail(u, s),
    }
}
