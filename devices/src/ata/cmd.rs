//! ATA command decoding: which command an opcode names and, for data
//! commands, the transfer it asks for (direction, protocol, LBA, sector
//! count), checked against the disk before any data moves. Owns no state;
//! the channel (`channel`) carries the decoded command out.

use super::regs::Taskfile;

/// How a data command moves its sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// PIO, one DRQ block of `block` sectors at a time.
    Pio { block: u32 },
    /// Bus-master DMA (IDE) or the command table's PRDT (AHCI).
    Dma,
}

/// A decoded data transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    pub write: bool,
    pub lba: u64,
    pub sectors: u32,
    pub ext: bool,
    pub proto: Protocol,
}

/// Every command a disk or CD-ROM unit answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Identify,
    IdentifyPacket,
    /// READ/WRITE SECTORS, MULTIPLE and DMA, plain and EXT.
    Rw {
        write: bool,
        ext: bool,
        multiple: bool,
        dma: bool,
    },
    /// READ VERIFY SECTORS (EXT): a range check, no data.
    Verify {
        ext: bool,
    },
    SetMultiple,
    SetFeatures,
    Flush,
    Diagnose,
    DeviceReset,
    Packet,
    /// Power management and other commands a driver sends and that need
    /// nothing from an emulated disk (IDLE, STANDBY, CHECK POWER MODE,
    /// INITIALIZE DEVICE PARAMETERS, RECALIBRATE).
    Nop,
}

/// The command `op` names; `None` is answered with ABRT.
pub fn decode(op: u8) -> Option<Command> {
    let rw = |write, ext, multiple, dma| {
        Some(Command::Rw {
            write,
            ext,
            multiple,
            dma,
        })
    };
    match op {
        0xec => Some(Command::Identify),
        0xa1 => Some(Command::IdentifyPacket),
        0x20 | 0x21 => rw(false, false, false, false),
        0x24 => rw(false, true, false, false),
        0x30 | 0x31 => rw(true, false, false, false),
        0x34 => rw(true, true, false, false),
        0xc4 => rw(false, false, true, false),
        0x29 => rw(false, true, true, false),
        0xc5 => rw(true, false, true, false),
        0x39 => rw(true, true, true, false),
        0xc8 | 0xc9 => rw(false, false, false, true),
        0x25 => rw(false, true, false, true),
        0xca | 0xcb => rw(true, false, false, true),
        0x35 => rw(true, true, false, true),
        0x40 | 0x41 => Some(Command::Verify { ext: false }),
        0x42 => Some(Command::Verify { ext: true }),
        0xc6 => Some(Command::SetMultiple),
        0xef => Some(Command::SetFeatures),
        0xe7 | 0xea => Some(Command::Flush),
        0x90 => Some(Command::Diagnose),
        0x08 => Some(Command::DeviceReset),
        0xa0 => Some(Command::Packet),
        0x10..=0x1f | 0x91 | 0xe0..=0xe3 | 0xe5 | 0xe6 | 0x94..=0x99 => Some(Command::Nop),
        _ => None,
    }
}

/// Why a transfer cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// CHS addressing, a MULTIPLE command before SET MULTIPLE MODE, a
    /// write to a read-only disk: ABRT.
    Aborted,
    /// The range runs past the last sector: IDNF.
    OutOfRange,
}

/// The transfer `tf` asks of a disk with `disk_sectors` sectors;
/// `multiple` is the SET MULTIPLE MODE block (0: not set).
pub fn transfer(
    tf: &Taskfile,
    write: bool,
    ext: bool,
    multiple_cmd: bool,
    dma: bool,
    multiple: u32,
    disk_sectors: u64,
) -> Result<Transfer, Refusal> {
    if tf.device & super::regs::DEV_LBA == 0 {
        // CHS geometry is for firmware of the last century; IDENTIFY
        // says LBA is supported and every driver since uses it.
        return Err(Refusal::Aborted);
    }
    let lba = if ext { tf.lba48() } else { tf.lba28() };
    let sectors = tf.sectors(ext);
    if lba
        .checked_add(u64::from(sectors))
        .is_none_or(|end| end > disk_sectors)
    {
        return Err(Refusal::OutOfRange);
    }
    let proto = if dma {
        Protocol::Dma
    } else if multiple_cmd {
        if multiple == 0 {
            return Err(Refusal::Aborted);
        }
        Protocol::Pio { block: multiple }
    } else {
        Protocol::Pio { block: 1 }
    };
    Ok(Transfer {
        write,
        lba,
        sectors,
        ext,
        proto,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ata::regs::DEV_LBA;

    fn tf(lba: u64, count: u16) -> Taskfile {
        let mut t = Taskfile::default();
        for (reg, v) in [(2, count), (3, 0), (4, 0), (5, 0)] {
            t.write(reg, (v >> 8) as u8);
        }
        t.write(2, count as u8);
        t.write(3, lba as u8);
        t.write(4, (lba >> 8) as u8);
        t.write(5, (lba >> 16) as u8);
        t.write(6, DEV_LBA | ((lba >> 24) as u8 & 0xf));
        t
    }

    #[test]
    fn ranges_past_the_end_and_chs_and_unset_multiple_are_refused() {
        let ok = transfer(&tf(90, 10), false, false, false, false, 0, 100).unwrap();
        assert_eq!((ok.lba, ok.sectors), (90, 10));
        assert_eq!(
            transfer(&tf(91, 10), false, false, false, false, 0, 100),
            Err(Refusal::OutOfRange)
        );
        assert_eq!(
            transfer(&tf(0, 0), false, false, false, false, 0, 100),
            Err(Refusal::OutOfRange),
            "count 0 is 256 sectors"
        );
        let mut chs = tf(0, 1);
        chs.device = 0;
        assert_eq!(
            transfer(&chs, false, false, false, false, 0, 100),
            Err(Refusal::Aborted)
        );
        assert_eq!(
            transfer(&tf(0, 1), false, false, true, false, 0, 100),
            Err(Refusal::Aborted)
        );
        let m = transfer(&tf(0, 4), true, false, true, false, 16, 100).unwrap();
        assert_eq!(m.proto, Protocol::Pio { block: 16 });
        assert!(m.write);
    }

    #[test]
    fn every_required_opcode_decodes() {
        for op in [
            0xec, 0xa1, 0x20, 0x24, 0x30, 0x34, 0xc4, 0x29, 0xc5, 0x39, 0xc8, 0x25, 0xca, 0x35,
            0xc6, 0xef, 0xe7, 0xea, 0x90, 0xa0,
        ] {
            assert!(decode(op).is_some(), "{op:#x}");
        }
        assert_eq!(decode(0xff), None);
    }
}
