//! The IDE channel end to end through its registers: PIO, bus-master DMA,
//! ATAPI packets and the hostile cases.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::atapi::{ASC_LBA_OUT_OF_RANGE, ILLEGAL_REQUEST};
use super::bmdma::{CMD_START, CMD_TO_MEMORY, ST_ERROR, ST_INTR};
use super::channel::Channel;
use super::regs::{error, status, DEV_LBA, DEV_UNIT1};
use super::testing::{mem_disk, MemDisk};
use super::unit::{Media, Unit, UnitConfig};
use crate::irq::testing::CountingIrq;

const MEM: u64 = 1 << 20;

struct Rig {
    ch: Channel,
    disk: Arc<MemDisk>,
    irq: Arc<CountingIrq>,
    mem: GuestMemoryMmap,
}

fn rig_with(read_only: bool, cd: bool) -> Rig {
    let disk = mem_disk(64 * 2048);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
    let irq = Arc::new(CountingIrq::default());
    let media = if cd {
        Media::Cdrom(Some(disk.clone() as Arc<_>))
    } else {
        Media::Disk(disk.clone() as Arc<_>)
    };
    let u = Unit::new(UnitConfig {
        media,
        serial: "QM0001".into(),
        read_only,
    });
    let ch = Channel::new("ide0".into(), [Some(u), None], irq.clone(), mem.clone());
    Rig { ch, disk, irq, mem }
}

fn rig() -> Rig {
    rig_with(false, false)
}

impl Rig {
    fn out(&mut self, reg: u64, v: u8) {
        self.ch.cmd_write(reg, &[v]);
    }
    fn inb(&mut self, reg: u64) -> u8 {
        let mut b = [0u8];
        self.ch.cmd_read(reg, &mut b);
        b[0]
    }
    fn status(&mut self) -> u8 {
        self.inb(7)
    }
    /// An LBA28 command on unit 0.
    fn cmd28(&mut self, op: u8, lba: u32, count: u8) {
        self.out(2, count);
        self.out(3, lba as u8);
        self.out(4, (lba >> 8) as u8);
        self.out(5, (lba >> 16) as u8);
        self.out(6, DEV_LBA | (lba >> 24) as u8 & 0xf);
        self.out(7, op);
    }
    fn cmd48(&mut self, op: u8, lba: u64, count: u16) {
        for (reg, shift) in [(3, 24), (4, 32), (5, 40)] {
            self.out(reg, 0);
            let _ = shift;
        }
        self.out(2, (count >> 8) as u8);
        self.out(3, (lba >> 24) as u8);
        self.out(4, (lba >> 32) as u8);
        self.out(5, (lba >> 40) as u8);
        self.out(2, count as u8);
        self.out(3, lba as u8);
        self.out(4, (lba >> 8) as u8);
        self.out(5, (lba >> 16) as u8);
        self.out(6, DEV_LBA);
        self.out(7, op);
    }
    fn bm(&mut self, cmd: u8, prd: u32) {
        self.ch.bm_write(4, &prd.to_le_bytes());
        self.ch.bm_write(2, &[ST_ERROR | ST_INTR]);
        self.ch.bm_write(0, &[cmd]);
    }
    fn bm_status(&mut self) -> u8 {
        let mut b = [0u8];
        self.ch.bm_read(2, &mut b);
        b[0]
    }
    fn prd(&self, at: u64, entries: &[(u32, u16, bool)]) {
        for (i, &(addr, len, eot)) in entries.iter().enumerate() {
            let mut e = [0u8; 8];
            e[..4].copy_from_slice(&addr.to_le_bytes());
            e[4..6].copy_from_slice(&len.to_le_bytes());
            e[7] = if eot { 0x80 } else { 0 };
            self.mem
                .write_slice(&e, GuestAddress(at + 8 * i as u64))
                .unwrap();
        }
    }
}

#[test]
fn identify_reports_the_disk_size_and_lba48() {
    let mut r = rig();
    assert_eq!(r.status(), status::DRDY | status::DSC);
    r.out(6, 0);
    r.out(7, 0xec);
    assert_eq!(r.status() & status::DRQ, status::DRQ);
    assert_eq!(r.irq.count(), 1);
    let mut id = [0u8; 512];
    r.ch.cmd_read(0, &mut id);
    assert_eq!(r.status() & (status::DRQ | status::BSY), 0);
    let w = |i: usize| u16::from_le_bytes([id[2 * i], id[2 * i + 1]]);
    assert_eq!(
        u32::from(w(60)) | u32::from(w(61)) << 16,
        256,
        "64 x 2048 bytes"
    );
    assert_eq!(w(100), 256);
    assert_ne!(w(83) & (1 << 10), 0, "LBA48");
    assert_eq!(&id[54..56], b"EQ", "model string byte order");
}

#[test]
fn pio_writes_and_reads_land_at_their_offsets_across_blocks() {
    let mut r = rig();
    r.cmd28(0x30, 5, 2);
    assert_eq!(
        r.irq.count(),
        0,
        "no interrupt before the first data-out block"
    );
    assert_ne!(r.status() & status::DRQ, 0);
    let data: Vec<u8> = (0..1024).map(|i| (i * 7) as u8).collect();
    // One rep outsw of both sectors.
    r.ch.cmd_write(0, &data);
    assert_eq!(r.status(), status::DRDY | status::DSC);
    assert_eq!(r.disk.bytes(5 * 512, 1024), data);
    assert_ne!(
        r.disk.bytes(4 * 512, 512),
        data[..512],
        "sector 4 untouched"
    );
    // READ MULTIPLE needs SET MULTIPLE first.
    r.cmd28(0xc4, 5, 2);
    assert_eq!(r.status() & status::ERR, status::ERR);
    r.out(2, 4);
    r.out(7, 0xc6);
    assert_eq!(r.status() & status::ERR, 0);
    r.cmd48(0x29, 5, 2);
    let mut back = vec![0u8; 1024];
    r.ch.cmd_read(0, &mut back[..2]);
    r.ch.cmd_read(0, &mut back[2..]);
    assert_eq!(back, data);
    assert_eq!(r.status() & status::DRQ, 0);
    // Reads with nothing to read see an idle bus.
    let mut extra = [0u8; 4];
    r.ch.cmd_read(0, &mut extra);
    assert_eq!(extra, [0xff; 4]);
}

#[test]
fn bad_ranges_read_only_and_unknown_commands_fail_with_error_status() {
    let mut r = rig();
    r.cmd28(0x20, 255, 2);
    assert_eq!(r.status(), status::DRDY | status::ERR);
    assert_eq!(r.inb(1), error::IDNF | error::ABRT);
    r.cmd48(0x24, u64::MAX >> 16, 0);
    assert_eq!(r.inb(1), error::IDNF | error::ABRT, "no overflow");
    r.out(7, 0xfe);
    assert_eq!(
        (r.status(), r.inb(1)),
        (status::DRDY | status::ERR, error::ABRT)
    );
    // The device keeps working.
    r.cmd28(0x20, 255, 1);
    assert_eq!(r.status() & status::ERR, 0);

    let mut ro = rig_with(true, false);
    let before = ro.disk.bytes(0, 512);
    ro.cmd28(0x30, 0, 1);
    assert_eq!(ro.inb(1), error::ABRT);
    ro.ch.cmd_write(0, &[0u8; 512]);
    assert_eq!(ro.disk.bytes(0, 512), before);
}

#[test]
fn an_absent_unit_does_not_answer_and_commands_to_it_do_nothing() {
    let mut r = rig();
    r.out(6, DEV_UNIT1);
    r.out(2, 0x55);
    assert_eq!(r.inb(2), 0);
    assert_eq!(r.status(), 0);
    r.out(7, 0x30);
    r.ch.cmd_write(0, &[1u8; 512]);
    assert_eq!(r.irq.count(), 0);
    r.out(6, 0);
    assert_eq!(r.status(), status::DRDY | status::DSC);
}

#[test]
fn dma_moves_data_through_the_prd_table() {
    let mut r = rig();
    // Two regions: 512 bytes at 0x10000 and 1024 at 0x20000.
    r.prd(0x1000, &[(0x10000, 512, false), (0x20000, 1024, true)]);
    r.mem
        .write_slice(&[0xa5; 512], GuestAddress(0x10000))
        .unwrap();
    r.mem
        .write_slice(&[0x5a; 1024], GuestAddress(0x20000))
        .unwrap();
    r.cmd28(0xca, 10, 3);
    assert_ne!(r.status() & status::BSY, 0, "waits for the bus master");
    r.bm(CMD_START, 0x1000);
    assert_eq!(r.status(), status::DRDY | status::DSC);
    assert_eq!(r.bm_status() & (ST_INTR | ST_ERROR | 1), ST_INTR);
    assert_eq!(r.irq.count(), 1);
    assert_eq!(r.disk.bytes(10 * 512, 512), vec![0xa5; 512]);
    assert_eq!(r.disk.bytes(11 * 512, 1024), vec![0x5a; 1024]);

    // Read back the other way round: bus master started first.
    r.ch.bm_write(0, &[0]);
    r.prd(0x1000, &[(0x30000, 0, true)]);
    r.bm(CMD_START | CMD_TO_MEMORY, 0x1000);
    r.cmd48(0x25, 10, 3);
    let mut got = vec![0u8; 1536];
    r.mem.read_slice(&mut got, GuestAddress(0x30000)).unwrap();
    assert_eq!(got, r.disk.bytes(10 * 512, 1536));
    let mut after = [0u8; 4];
    r.mem
        .read_slice(&mut after, GuestAddress(0x30000 + 1536))
        .unwrap();
    assert_eq!(after, [0; 4], "nothing past the transfer");
}

#[test]
fn hostile_prd_tables_fail_the_command_and_write_nothing() {
    let mut r = rig();
    let before = r.disk.bytes(0, 4096);
    for (table, entries) in [
        // Table outside RAM.
        (MEM as u32 + 0x1000, vec![]),
        // Region outside RAM.
        (0x1000, vec![(MEM as u32 - 512, 1024, true)]),
        // Shorter than the transfer.
        (0x1000, vec![(0x10000, 512, true)]),
    ] {
        r.ch.bm_write(0, &[0]);
        r.prd(0x1000, &entries);
        r.cmd28(0xc8, 0, 2);
        r.bm(CMD_START | CMD_TO_MEMORY, table);
        assert_eq!(r.status(), status::DRDY | status::ERR, "{entries:?}");
        assert_ne!(r.bm_status() & ST_ERROR, 0);
        let mut tail = [0u8; 512];
        r.mem
            .read_slice(&mut tail, GuestAddress(MEM - 512))
            .unwrap();
        assert_eq!(tail, [0; 512]);
    }
    // Direction mismatch: a write command with a to-memory bus master.
    r.ch.bm_write(0, &[0]);
    r.prd(0x1000, &[(0x10000, 1024, true)]);
    r.cmd28(0xca, 0, 2);
    r.bm(CMD_START | CMD_TO_MEMORY, 0x1000);
    assert_eq!(r.status() & status::ERR, status::ERR);
    assert_eq!(r.disk.bytes(0, 4096), before);
}

fn packet(r: &mut Rig, p: &[u8], limit: u16) {
    r.out(1, 0);
    r.out(4, limit as u8);
    r.out(5, (limit >> 8) as u8);
    r.out(6, 0);
    r.out(7, 0xa0);
    assert_ne!(r.status() & status::DRQ, 0);
    let mut b = [0u8; 12];
    b[..p.len()].copy_from_slice(p);
    r.ch.cmd_write(0, &b);
}

#[test]
fn atapi_reads_blocks_and_reports_out_of_range() {
    let mut r = rig_with(true, true);
    assert_eq!((r.inb(4), r.inb(5)), (0x14, 0xeb), "ATAPI signature");
    r.out(7, 0xec);
    assert_eq!(r.inb(1), error::ABRT, "IDENTIFY DEVICE aborts on ATAPI");
    packet(&mut r, &[0x28, 0, 0, 0, 0, 3, 0, 0, 2], 0xfffe);
    assert_eq!(r.inb(2), 2, "data to the host");
    let len = usize::from(r.inb(4)) | usize::from(r.inb(5)) << 8;
    assert_eq!(len, 4096);
    let mut got = vec![0u8; len];
    r.ch.cmd_read(0, &mut got);
    assert_eq!(got, r.disk.bytes(3 * 2048, 4096));
    assert_eq!(r.inb(2), 3, "command complete");
    assert_eq!(r.status() & (status::DRQ | status::ERR), 0);

    packet(&mut r, &[0x28, 0, 0, 0, 0, 63, 0, 0, 2], 0xfffe);
    assert_eq!(r.status() & status::ERR, status::ERR);
    assert_eq!(r.inb(1) >> 4, ILLEGAL_REQUEST);
    packet(&mut r, &[0x03, 0, 0, 0, 18], 18);
    let mut sense = [0u8; 18];
    r.ch.cmd_read(0, &mut sense);
    assert_eq!(
        (sense[2], sense[12]),
        (ILLEGAL_REQUEST, ASC_LBA_OUT_OF_RANGE)
    );
}
