use super::*;
use crate::pci::config::{CMD_IO, CMD_MEMORY};
use crate::pci::{BarKind, BarRange, PciConfig, PciIds};

/// (BAR, offset, bytes) of every BAR write.
type WriteLog = Arc<Mutex<Vec<(u8, u64, Vec<u8>)>>>;

/// A function with a 4 KiB memory BAR 0 and a 32-byte I/O BAR 1 whose
/// BAR reads return the BAR index and offset, and whose writes are logged.
struct TestFn {
    cfg: PciConfig,
    writes: WriteLog,
}

fn test_fn() -> (SharedPciDevice, WriteLog) {
    let mut cfg = PciConfig::new(&PciIds {
        vendor: 0x8086,
        device: 0x1237,
        ..Default::default()
    });
    cfg.declare_bar(0, BarKind::Mem32, 0x1000).unwrap();
    cfg.declare_bar(1, BarKind::Io, 0x20).unwrap();
    cfg.set_bar_addr(0, 0xfe00_0000).unwrap();
    cfg.set_bar_addr(1, 0xc000).unwrap();
    cfg.set_command(CMD_IO | CMD_MEMORY);
    let writes = Arc::new(Mutex::new(Vec::new()));
    let dev = TestFn {
        cfg,
        writes: writes.clone(),
    };
    (Arc::new(Mutex::new(dev)), writes)
}

impl PciDevice for TestFn {
    fn name(&self) -> &str {
        "test"
    }
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.cfg.read(offset, data);
    }
    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.cfg.write(offset, data);
    }
    fn active_bars(&self) -> Vec<BarRange> {
        self.cfg.active_bars()
    }
    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        data.fill(0);
        for (d, v) in data.iter_mut().zip([bar, offset as u8]) {
            *d = v;
        }
    }
    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        self.writes
            .lock()
            .unwrap()
            .push((bar, offset, data.to_vec()));
    }
}

fn root_with_slot(slot: u8) -> (Arc<PciRoot>, WriteLog) {
    let mut root = PciRoot::new();
    let (dev, writes) = test_fn();
    root.add(slot, dev).unwrap();
    (Arc::new(root), writes)
}

fn cf8(dev: u8, func: u8, reg: u8) -> [u8; 4] {
    (0x8000_0000u32 | u32::from(dev) << 11 | u32::from(func) << 8 | u32::from(reg)).to_le_bytes()
}

fn read_io(io: &mut ConfigIo, dev: u8, reg: u8, lane: u64, len: usize) -> u32 {
    io.write(0, &cf8(dev, 0, reg));
    let mut b = [0u8; 4];
    io.read(4 + lane, &mut b[..len]);
    u32::from_le_bytes(b)
}

fn read_ecam(e: &mut Ecam, bus: u64, dev: u64, func: u64, reg: u64) -> u32 {
    let mut b = [0u8; 4];
    e.read(bus << 20 | dev << 15 | func << 12 | reg, &mut b);
    u32::from_le_bytes(b)
}

#[test]
fn add_refuses_taken_and_missing_slots() {
    let mut root = PciRoot::new();
    root.add(3, test_fn().0).unwrap();
    assert_eq!(
        root.add(3, test_fn().0),
        Err(PciError::SlotTaken {
            slot: 3,
            existing: "test".into()
        })
    );
    assert_eq!(
        root.add(32, test_fn().0),
        Err(PciError::NoSuchSlot { slot: 32 })
    );
}

#[test]
fn mechanism_1_and_ecam_see_the_same_function() {
    let (root, _) = root_with_slot(3);
    let mut io = ConfigIo::new(root.clone());
    let mut ecam = Ecam::new(root.clone());
    assert_eq!(read_io(&mut io, 3, 0, 0, 4), 0x1237_8086);
    assert_eq!(read_ecam(&mut ecam, 0, 3, 0, 0), 0x1237_8086);
    // Byte and word lanes of CONFIG_DATA.
    assert_eq!(read_io(&mut io, 3, 0, 2, 2), 0x1237);
    assert_eq!(read_io(&mut io, 3, 0, 1, 1), 0x80);
    assert_eq!(read_io(&mut io, 3, 0, 3, 2), 0xffff, "crosses the dword");
    assert_eq!(read_io(&mut io, 3, 0x10, 0, 4), 0xfe00_0000);
    assert_eq!(read_ecam(&mut ecam, 0, 3, 0, 0x14), 0xc001);
    // CONFIG_ADDRESS keeps only the bits that exist.
    io.write(0, &0xffff_ffffu32.to_le_bytes());
    let mut a = [0u8; 4];
    io.read(0, &mut a);
    assert_eq!(u32::from_le_bytes(a), 0x80ff_fffc);
    // A write through mechanism #1 shows through ECAM.
    io.write(0, &cf8(3, 0, 0x3c));
    io.write(4, &[9]);
    assert_eq!(read_ecam(&mut ecam, 0, 3, 0, 0x3c) & 0xff, 9);
}

#[test]
fn absent_functions_read_all_ones() {
    let (root, _) = root_with_slot(3);
    let mut io = ConfigIo::new(root.clone());
    let mut ecam = Ecam::new(root.clone());
    assert_eq!(read_io(&mut io, 4, 0, 0, 4), u32::MAX);
    assert_eq!(read_ecam(&mut ecam, 0, 3, 1, 0), u32::MAX, "function 1");
    assert_eq!(read_ecam(&mut ecam, 1, 3, 0, 0), u32::MAX, "bus 1");
    assert_eq!(read_ecam(&mut ecam, 0, 31, 0, 0), u32::MAX);
    let mut b = [0u8; 4];
    ecam.read(1 << 28, &mut b);
    assert_eq!(b, [0xff; 4]);
    ecam.read((3 << 15) | 0xffe, &mut b);
    assert_eq!(b, [0xff; 4], "crosses the function's 4 KiB");
    // Disabled CONFIG_ADDRESS: CONFIG_DATA reads all-ones.
    io.write(0, &0u32.to_le_bytes());
    io.read(4, &mut b);
    assert_eq!(b, [0xff; 4]);
    // Writes to absent functions go nowhere and do not panic.
    ecam.write(1 << 20, &[0; 4]);
    io.write(0, &cf8(9, 0, 0));
    io.write(4, &[0; 4]);
}

#[test]
fn bars_route_and_follow_the_guest() {
    let (root, writes) = root_with_slot(2);
    let mut mmio = PciWindow::new(root.clone(), IoSpace::Mmio, 0xe000_0000);
    let mut pio = PciWindow::new(root.clone(), IoSpace::Pio, 0);
    let mut ecam = Ecam::new(root.clone());
    let mut b = [0u8; 4];
    mmio.read(0x1e00_0010, &mut b);
    assert_eq!(b, [0, 0x10, 0, 0]);
    pio.read(0xc01f, &mut b[..1]);
    assert_eq!(b[0], 1);
    pio.read(0xc01f, &mut b[..2]);
    assert_eq!(&b[..2], &[0xff, 0xff], "crosses the BAR's end");
    pio.write(0xc004, &[7]);
    mmio.write(0x1e00_0ffc, &[1, 2, 3, 4]);
    assert_eq!(
        *writes.lock().unwrap(),
        vec![(1, 4, vec![7]), (0, 0xffc, vec![1, 2, 3, 4])]
    );
    // The guest moves BAR 0.
    ecam.write((2 << 15) | 0x10, &0xfd00_0000u32.to_le_bytes());
    mmio.read(0x1e00_0010, &mut b);
    assert_eq!(b, [0xff; 4], "old address unclaimed");
    mmio.read(0x1d00_0020, &mut b);
    assert_eq!(b, [0, 0x20, 0, 0]);
    // The guest turns memory decode off: only I/O still routes.
    ecam.write((2 << 15) | 0x4, &[CMD_IO as u8, 0]);
    mmio.read(0x1d00_0020, &mut b);
    assert_eq!(b, [0xff; 4]);
    pio.read(0xc000, &mut b);
    assert_eq!(b, [1, 0, 0, 0]);
    writes.lock().unwrap().clear();
    mmio.write(0x1d00_0000, &[1]);
    assert!(writes.lock().unwrap().is_empty(), "dropped");
    // Offsets that wrap the address space are unclaimed.
    let mut top = PciWindow::new(root.clone(), IoSpace::Mmio, u64::MAX);
    top.read(2, &mut b);
    assert_eq!(b, [0xff; 4]);
    top.write(2, &b);
}

#[test]
fn reset_control_register() {
    let (root, _) = root_with_slot(0);
    let mut io = ConfigIo::new(root);
    assert_eq!(io.write(1, &[0x02]), BusAction::None);
    let mut b = [0u8; 1];
    io.read(1, &mut b);
    assert_eq!(b[0], 0x02);
    assert_eq!(io.write(1, &[0x06]), BusAction::Reset);
    io.read(1, &mut b);
    assert_eq!(b[0], 0x06);
    // A word write at 0xCF9 is not the reset register.
    assert_eq!(io.write(1, &[0x06, 0]), BusAction::None);
    // Nor is a byte write at 0xCF8, which also leaves CONFIG_ADDRESS alone.
    io.write(0, &cf8(0, 0, 0));
    assert_eq!(io.write(0, &[0x06]), BusAction::None);
    let mut a = [0u8; 4];
    io.read(0, &mut a);
    assert_eq!(a, cf8(0, 0, 0));
}
