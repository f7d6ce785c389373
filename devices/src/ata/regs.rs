//! The ATA taskfile: the register block a channel's command ports expose
//! (feature/error, sector count, LBA low/mid/high, device, command/status)
//! with the "high order byte" copies LBA48 commands read, and the status
//! and error bits. Owns register values only; what a command does with
//! them is `cmd`.

/// Status register bits.
pub mod status {
    pub const BSY: u8 = 0x80;
    pub const DRDY: u8 = 0x40;
    pub const DF: u8 = 0x20;
    /// Seek complete: legacy, but old drivers wait for it.
    pub const DSC: u8 = 0x10;
    pub const DRQ: u8 = 0x08;
    pub const ERR: u8 = 0x01;
}

/// Error register bits.
pub mod error {
    pub const ABRT: u8 = 0x04;
    /// Address out of range.
    pub const IDNF: u8 = 0x10;
    pub const UNC: u8 = 0x40;
}

/// Device register: LBA addressing (the only one supported; see `cmd`).
pub const DEV_LBA: u8 = 0x40;
/// Device register: unit 1 selected.
pub const DEV_UNIT1: u8 = 0x10;

/// Device control register bits.
pub const CTL_NIEN: u8 = 0x02;
pub const CTL_SRST: u8 = 0x04;
pub const CTL_HOB: u8 = 0x80;

/// Sector count register in the ATAPI interrupt-reason role.
pub const IREASON_COD: u8 = 0x01;
pub const IREASON_IO: u8 = 0x02;

/// The taskfile; writes to the 8-bit LBA48 registers keep the previous
/// value as the high-order byte, as the standard's two-deep FIFO does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Taskfile {
    pub feature: u8,
    pub count: u8,
    pub lba_low: u8,
    pub lba_mid: u8,
    pub lba_high: u8,
    pub hob_feature: u8,
    pub hob_count: u8,
    pub hob_lba_low: u8,
    pub hob_lba_mid: u8,
    pub hob_lba_high: u8,
    pub device: u8,
    pub error: u8,
}

impl Taskfile {
    /// Command-block register `reg` (1..=6) written by the host.
    pub fn write(&mut self, reg: u8, v: u8) {
        let push = |cur: &mut u8, hob: &mut u8| {
            *hob = *cur;
            *cur = v;
        };
        match reg {
            1 => push(&mut self.feature, &mut self.hob_feature),
            2 => push(&mut self.count, &mut self.hob_count),
            3 => push(&mut self.lba_low, &mut self.hob_lba_low),
            4 => push(&mut self.lba_mid, &mut self.hob_lba_mid),
            5 => push(&mut self.lba_high, &mut self.hob_lba_high),
            6 => self.device = v,
            _ => {}
        }
    }

    /// Command-block register `reg` (1..=6) as the host reads it; `hob`
    /// is the device control register's HOB bit.
    pub fn read(&self, reg: u8, hob: bool) -> u8 {
        match (reg, hob) {
            (1, _) => self.error,
            (2, false) => self.count,
            (2, true) => self.hob_count,
            (3, false) => self.lba_low,
            (3, true) => self.hob_lba_low,
            (4, false) => self.lba_mid,
            (4, true) => self.hob_lba_mid,
            (5, false) => self.lba_high,
            (5, true) => self.hob_lba_high,
            (6, _) => self.device | 0xa0,
            _ => 0xff,
        }
    }

    /// The 28-bit LBA of a non-EXT command.
    pub fn lba28(&self) -> u64 {
        u64::from(self.device & 0x0f) << 24
            | u64::from(self.lba_high) << 16
            | u64::from(self.lba_mid) << 8
            | u64::from(self.lba_low)
    }

    /// The 48-bit LBA of an EXT command.
    pub fn lba48(&self) -> u64 {
        u64::from(self.hob_lba_high) << 40
            | u64::from(self.hob_lba_mid) << 32
            | u64::from(self.hob_lba_low) << 24
            | u64::from(self.lba_high) << 16
            | u64::from(self.lba_mid) << 8
            | u64::from(self.lba_low)
    }

    /// Sector count: 0 means 256 (28-bit) or 65536 (48-bit).
    pub fn sectors(&self, ext: bool) -> u32 {
        if ext {
            match u32::from(self.hob_count) << 8 | u32::from(self.count) {
                0 => 65536,
                n => n,
            }
        } else {
            match self.count {
                0 => 256,
                n => u32::from(n),
            }
        }
    }

    /// Store the address of the last sector a failing command reached,
    /// as the standard asks on an error.
    pub fn set_lba(&mut self, lba: u64, ext: bool) {
        self.lba_low = lba as u8;
        self.lba_mid = (lba >> 8) as u8;
        self.lba_high = (lba >> 16) as u8;
        if ext {
            self.hob_lba_low = (lba >> 24) as u8;
            self.hob_lba_mid = (lba >> 32) as u8;
            self.hob_lba_high = (lba >> 40) as u8;
        } else {
            self.device = (self.device & 0xf0) | ((lba >> 24) as u8 & 0x0f);
        }
    }

    /// The signature a device leaves after reset or diagnostics: ATA
    /// (lba_mid/high 0) or ATAPI (0x14/0xeb).
    pub fn set_signature(&mut self, packet: bool) {
        self.count = 1;
        self.lba_low = 1;
        (self.lba_mid, self.lba_high) = if packet { (0x14, 0xeb) } else { (0, 0) };
        self.device &= DEV_UNIT1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lba48_takes_the_previous_writes_as_high_bytes() {
        let mut t = Taskfile::default();
        for (reg, hi, lo) in [
            (2, 0x01, 0x00),
            (3, 0x44, 0x11),
            (4, 0x55, 0x22),
            (5, 0x66, 0x33),
        ] {
            t.write(reg, hi);
            t.write(reg, lo);
        }
        assert_eq!(t.lba48(), 0x6655_4433_2211);
        assert_eq!(t.sectors(true), 0x100);
        assert_eq!(t.read(3, true), 0x44);
        assert_eq!(t.read(3, false), 0x11);
        t.write(2, 0);
        t.write(2, 0);
        assert_eq!(t.sectors(true), 65536, "0 means 65536");
        assert_eq!(t.sectors(false), 256, "0 means 256");
        t.write(6, 0x4f);
        assert_eq!(t.lba28() >> 24, 0xf);
    }
}
