//! The HBA through its registers with command lists in guest memory.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::port::{IS_DHRS, IS_HBFS, IS_TFES};
use super::*;
use crate::ata::testing::{mem_disk, MemDisk};
use crate::ata::unit::{Media, UnitConfig};
use crate::pci::testing::{FakeIntx, FakeMsi};

const CLB: u64 = 0x1000;
const FB: u64 = 0x2000;
const CT: u64 = 0x3000;
const DATA: u64 = 0x10000;

struct Rig {
    hba: Ahci,
    mem: GuestMemoryMmap,
    disk: Arc<MemDisk>,
    intx: Arc<FakeIntx>,
    msi: Arc<FakeMsi>,
}

fn rig() -> Rig {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let disk = mem_disk(1 << 20);
    let intx = Arc::new(FakeIntx::default());
    let u = Unit::new(UnitConfig {
        media: Media::Disk(disk.clone() as Arc<_>),
        serial: "s".into(),
        read_only: false,
    });
    let units = [Some(u), None, None, None, None, None];
    let msi = Arc::new(FakeMsi::new(1));
    let hba = Ahci::new(
        units,
        mem.clone(),
        (intx.clone(), 10),
        msi.clone(),
        0xfebf_0000,
    )
    .unwrap();
    let mut r = Rig {
        hba,
        mem,
        disk,
        intx,
        msi,
    };
    r.w(0x04, 1 << 1);
    r.w(0x100, CLB as u32);
    r.w(0x108, FB as u32);
    r.w(0x114, u32::MAX);
    r.w(0x118, (1 << 4) | 1);
    r
}

impl Rig {
    fn w(&mut self, off: u64, v: u32) {
        self.hba.bar_write(ABAR, off, &v.to_le_bytes());
    }
    fn r(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.hba.bar_read(ABAR, off, &mut b);
        u32::from_le_bytes(b)
    }
    /// Slot 0: command `op` at `lba` for `count` sectors over `prds`.
    fn issue(&mut self, op: u8, lba: u64, count: u16, write: bool, prds: &[(u64, u32)], ct: u64) {
        tables(&self.mem, op, lba, count, write, prds, ct);
        self.w(0x138, 1);
    }
}

/// Slot 0's command header and table in `mem`, not issued yet.
fn tables(
    mem: &GuestMemoryMmap,
    op: u8,
    lba: u64,
    count: u16,
    write: bool,
    prds: &[(u64, u32)],
    ct: u64,
) {
    {
        let mut h = [0u8; 32];
        let dw0 = 5u32 | if write { 1 << 6 } else { 0 } | (prds.len() as u32) << 16;
        h[..4].copy_from_slice(&dw0.to_le_bytes());
        h[8..16].copy_from_slice(&ct.to_le_bytes());
        mem.write_slice(&h, GuestAddress(CLB)).unwrap();
        let mut f = [0u8; 20];
        f[0] = 0x27;
        f[1] = 0x80;
        f[2] = op;
        (f[4], f[5], f[6], f[7]) = (lba as u8, (lba >> 8) as u8, (lba >> 16) as u8, 0x40);
        (f[8], f[9], f[10]) = ((lba >> 24) as u8, (lba >> 32) as u8, (lba >> 40) as u8);
        (f[12], f[13]) = (count as u8, (count >> 8) as u8);
        let _ = mem.write_slice(&f, GuestAddress(ct));
        for (i, &(addr, len)) in prds.iter().enumerate() {
            let mut e = [0u8; 16];
            e[..8].copy_from_slice(&addr.to_le_bytes());
            e[12..].copy_from_slice(&(len - 1).to_le_bytes());
            let _ = mem.write_slice(&e, GuestAddress(ct + 0x80 + 16 * i as u64));
        }
    }
}

#[test]
fn identify_write_and_read_through_the_command_list() {
    let mut r = rig();
    assert_eq!(r.r(0x128) & 0xf, 3, "device present");
    assert_eq!(r.r(0x124), 0x101, "ATA signature");
    assert_eq!(r.r(0x1a8), 0, "port 1 empty");
    r.issue(0xec, 0, 1, false, &[(DATA, 512)], CT);
    assert_eq!(r.r(0x138), 0, "slot completed");
    assert_eq!(r.r(0x120) & 0xff, 0x50);
    assert_ne!(r.r(0x110) & IS_DHRS, 0);
    assert!(r.intx.level(), "INTx while a cause is pending");
    let mut w = [0u8; 2];
    r.mem.read_slice(&mut w, GuestAddress(DATA + 200)).unwrap();
    assert_eq!(u16::from_le_bytes(w), 2048, "LBA48 sectors word 100");
    r.w(0x110, u32::MAX);
    r.w(0x08, u32::MAX);
    assert!(!r.intx.level());

    r.mem
        .write_slice(&[0x77; 1536], GuestAddress(DATA))
        .unwrap();
    r.issue(0x35, 100, 3, true, &[(DATA, 512), (DATA + 512, 1024)], CT);
    assert_eq!(r.r(0x120) & 0xff, 0x50);
    assert_eq!(r.disk.bytes(100 * 512, 1536), vec![0x77; 1536]);
    r.issue(0x25, 99, 2, false, &[(DATA + 0x4000, 1024)], CT);
    let mut got = vec![0u8; 1024];
    r.mem
        .read_slice(&mut got, GuestAddress(DATA + 0x4000))
        .unwrap();
    assert_eq!(got, r.disk.bytes(99 * 512, 1024));
    let mut n = [0u8; 4];
    r.mem.read_slice(&mut n, GuestAddress(CLB + 4)).unwrap();
    assert_eq!(u32::from_le_bytes(n), 1024, "PRDBC");
}

#[test]
fn tables_outside_ram_and_bad_ranges_fail_the_command_only() {
    let mut r = rig();
    let before = r.disk.bytes(0, 4096);
    r.issue(0x25, 0, 1, false, &[(DATA, 512)], 1 << 30);
    assert_eq!(
        r.r(0x110) & (IS_HBFS | IS_TFES),
        IS_HBFS | IS_TFES,
        "table outside RAM"
    );
    assert_eq!(r.r(0x120) & 1, 1);
    r.w(0x110, u32::MAX);
    r.issue(0x25, 0, 1, false, &[((1 << 20) - 256, 512)], CT);
    assert_ne!(r.r(0x110) & IS_HBFS, 0, "region outside RAM");
    r.w(0x110, u32::MAX);
    r.issue(0x25, 2047, 2, false, &[(DATA, 1024)], CT);
    assert_eq!(r.r(0x120), 0x1441, "IDNF|ABRT, ERR");
    r.issue(0x35, 0, 2, true, &[(DATA, 512)], CT);
    assert_eq!(r.r(0x120) & 1, 1, "PRDT shorter than the transfer");
    assert_eq!(r.disk.bytes(0, 4096), before);
    // And the port still works.
    r.w(0x110, u32::MAX);
    r.issue(0x25, 0, 1, false, &[(DATA, 512)], CT);
    assert_eq!(r.r(0x120) & 0xff, 0x50);
}

#[test]
fn with_msi_enabled_each_completion_is_a_message_and_intx_stays_low() {
    let mut r = rig();
    let mut p = [0u8; 1];
    r.hba.config_read(0x34, &mut p);
    let cap = u16::from(p[0]);
    let mut id = [0u8; 1];
    r.hba.config_read(cap, &mut id);
    assert_eq!(id[0], 0x05, "MSI capability");
    r.hba.config_write(cap + 4, &0xfee0_0000u32.to_le_bytes());
    r.hba.config_write(cap + 12, &0x0041u16.to_le_bytes());
    r.hba.config_write(cap + 2, &1u16.to_le_bytes());
    r.msi.take();
    r.issue(0x25, 0, 1, false, &[(DATA, 512)], CT);
    // The driver's handler clears the causes it saw.
    r.w(0x110, u32::MAX);
    r.w(0x08, u32::MAX);
    r.issue(0x25, 1, 1, false, &[(DATA, 512)], CT);
    assert_eq!(r.msi.triggers(), vec![0, 0], "one message per completion");
    assert!(!r.intx.level());
}

/// With the offload on, a READ or WRITE completes on the helper thread:
/// BSY and the slot issued until then, data, result and interrupt after.
/// A refused command still ends at once, and a transfer that a port stop
/// forgot cannot complete a later command.
#[test]
fn offloaded_transfers_complete_on_the_helper_thread() {
    let Rig {
        hba,
        mem,
        disk,
        intx,
        ..
    } = rig();
    let hba = Arc::new(Mutex::new(hba));
    hba.lock().unwrap().enable_offload(Arc::downgrade(&hba));
    let w = |off: u64, v: u32| {
        hba.lock().unwrap().bar_write(ABAR, off, &v.to_le_bytes());
    };
    let r = |off: u64| {
        let mut b = [0u8; 4];
        hba.lock().unwrap().bar_read(ABAR, off, &mut b);
        u32::from_le_bytes(b)
    };
    let wait_done = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while r(0x138) != 0 {
            assert!(Instant::now() < deadline, "no completion within 10 s");
            std::thread::yield_now();
        }
    };
    mem.write_slice(&[0x5a; 1024], GuestAddress(DATA)).unwrap();
    tables(&mem, 0x35, 10, 2, true, &[(DATA, 1024)], CT);
    w(0x138, 1);
    wait_done();
    assert_eq!(r(0x120) & 0xff, 0x50);
    assert_ne!(r(0x110) & IS_DHRS, 0);
    assert!(intx.level(), "the helper thread raised the interrupt");
    assert_eq!(disk.bytes(10 * 512, 1024), vec![0x5a; 1024]);
    w(0x110, u32::MAX);
    w(0x08, u32::MAX);
    tables(&mem, 0x25, 9, 2, false, &[(DATA + 0x4000, 1024)], CT);
    w(0x138, 1);
    wait_done();
    let mut got = vec![0u8; 1024];
    mem.read_slice(&mut got, GuestAddress(DATA + 0x4000))
        .unwrap();
    assert_eq!(got, disk.bytes(9 * 512, 1024));
    let mut n = [0u8; 4];
    mem.read_slice(&mut n, GuestAddress(CLB + 4)).unwrap();
    assert_eq!(u32::from_le_bytes(n), 1024, "PRDBC");
    // Out of range: refused on the spot.
    tables(&mem, 0x25, 2047, 2, false, &[(DATA, 1024)], CT);
    w(0x138, 1);
    assert_eq!((r(0x138), r(0x120)), (0, 0x1441));
    // Held lock: the helper cannot complete between the issue and the stop.
    let stale = {
        let mut g = hba.lock().unwrap();
        tables(&mem, 0x35, 20, 1, true, &[(DATA, 512)], CT);
        g.bar_write(ABAR, 0x138, &1u32.to_le_bytes());
        assert!(g.ports[0].busy());
        assert_ne!(g.reg(0x120) & 0x80, 0, "BSY while the transfer runs");
        g.bar_write(ABAR, 0x118, &0u32.to_le_bytes());
        let mut b = [0u8; 4];
        g.bar_read(ABAR, 0x138, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0, "a stop drops the slot");
        offload::Finished {
            port: 0,
            slot: 0,
            epoch: 0,
            end: crate::ata::exec::run_transfer(
                &*disk,
                &crate::ata::exec::DiskTransfer {
                    off: 0,
                    bytes: 512,
                    write: false,
                    pio_in: false,
                },
                &crate::ata::sg::Sg::new(&mem, vec![(DATA, 512)]).unwrap(),
                &mem,
            ),
        }
    };
    w(0x118, (1 << 4) | 1);
    {
        let mut g = hba.lock().unwrap();
        tables(&mem, 0x35, 30, 1, true, &[(DATA, 512)], CT);
        g.bar_write(ABAR, 0x138, &1u32.to_le_bytes());
        g.finish(stale);
        // The raw register: a guest's read of a busy port may wait for and
        // apply the new transfer's posted result (see below), which the
        // helper can post without the lock held here.
        assert_eq!(g.reg(0x138), 1, "a forgotten transfer completes nothing");
    }
    wait_done();
    assert_eq!(r(0x120) & 0xff, 0x50);
    // A vCPU polling the busy port applies the posted result itself: with
    // the lock held throughout, the helper cannot have.
    let mut g = hba.lock().unwrap();
    tables(&mem, 0x35, 40, 1, true, &[(DATA, 512)], CT);
    g.bar_write(ABAR, 0x110, &u32::MAX.to_le_bytes());
    g.bar_write(ABAR, 0x138, &1u32.to_le_bytes());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut b = [1u8; 4];
    while u32::from_le_bytes(b) != 0 {
        assert!(Instant::now() < deadline, "no completion within 10 s");
        g.bar_read(ABAR, 0x138, &mut b);
    }
    assert_ne!(g.reg(0x110) & IS_DHRS, 0);
    assert_eq!(disk.bytes(40 * 512, 512), mem_bytes(&mem, DATA, 512));
}

fn mem_bytes(mem: &GuestMemoryMmap, at: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    mem.read_slice(&mut v, GuestAddress(at)).unwrap();
    v
}

#[test]
fn pxis_writes_queue_where_abar_decodes_and_follow_it() {
    use crate::pci::testing::FakeZones;
    use crate::pci::PciDevice;
    let mut r = rig();
    let zones = Arc::new(FakeZones::default());
    r.hba.enable_coalescing(zones.clone());
    let at = |base: u64| -> Vec<(u64, u32)> {
        (0..PORTS as u64)
            .map(|i| (base + 0x110 + 0x80 * i, 4))
            .collect()
    };
    assert_eq!(zones.zones(), at(0xfebf_0000), "every port's PxIS, 4 bytes");
    // The guest moves ABAR (BAR5, config offset 0x24).
    r.hba.config_write(0x24, &0xfe00_0000u32.to_le_bytes());
    assert_eq!(zones.zones(), at(0xfe00_0000));
    // Memory decoding off: nothing decodes there, nothing may queue.
    r.hba.config_write(0x04, &0u16.to_le_bytes());
    assert_eq!(zones.zones(), vec![]);
    r.hba.config_write(0x04, &2u16.to_le_bytes());
    assert_eq!(zones.zones(), at(0xfe00_0000));
    // A write that reached the device through the ring is a plain write.
    r.w(0x110, u32::MAX);
    assert_eq!(r.r(0x110), 0);
}
