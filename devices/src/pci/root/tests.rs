use super::*;
use crate::bus::PlatformRequest;
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
    fn config_write(&mut self, offset: u16, data: &[u8]) -> BusAction {
        self.cfg.write(offset, data);
        BusAction::None
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
    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) -> BusAction {
        self.writes
            .lock()
            .unwrap()
            .push((bar, offset, data.to_vec()));
        BusAction::None
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
            func: 0,
            existing: "test".into()
        })
    );
    assert_eq!(
        root.add(32, test_fn().0),
        Err(PciError::NoSuchSlot { slot: 32 })
    );
    assert_eq!(
        root.add_function(3, 8, test_fn().0),
        Err(PciError::NoSuchFunction { slot: 3, func: 8 })
    );
}

#[test]
fn functions_other_than_zero_are_reachable() {
    let mut root = PciRoot::new();
    root.add_function(5, 0, test_fn().0).unwrap();
    root.add_function(5, 3, test_fn().0).unwrap();
    let root = Arc::new(root);
    let mut ecam = Ecam::new(root.clone());
    assert_eq!(read_ecam(&mut ecam, 0, 5, 3, 0), 0x1237_8086);
    assert_eq!(read_ecam(&mut ecam, 0, 5, 2, 0), u32::MAX);
    let found: Vec<(u8, u8)> = root
        .functions()
        .iter()
        .map(|(b, _)| (b.dev, b.func))
        .collect();
    assert_eq!(found, vec![(5, 0), (5, 3)]);
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
fn writes_that_move_bars_ask_the_platform_to_move_their_ranges() {
    let (root, _) = root_with_slot(2);
    let mut ecam = Ecam::new(root.clone());
    let bdf = Bdf {
        bus: 0,
        dev: 2,
        func: 0,
    };
    let moved = BusAction::Platform(PlatformRequest::BarsMoved { bdf });
    let dev = root.function(bdf).unwrap().clone();
    // The guest moves BAR 0: the answer asks for the move, and the
    // function decodes the new range.
    assert_eq!(
        ecam.write((2 << 15) | 0x10, &0xfd00_0000u32.to_le_bytes()),
        moved
    );
    let bars = super::lock(&dev).active_bars();
    assert!(bars.iter().any(|b| b.index == 0 && b.addr == 0xfd00_0000));
    // Writing the same value again changes nothing: no request.
    assert_eq!(
        ecam.write((2 << 15) | 0x10, &0xfd00_0000u32.to_le_bytes()),
        BusAction::None
    );
    // Interrupt Line is not a BAR.
    assert_eq!(ecam.write((2 << 15) | 0x3c, &[9]), BusAction::None);
    // Memory decode off: only the I/O BAR still decodes.
    let mut io = ConfigIo::new(root.clone());
    io.write(0, &cf8(2, 0, 0x4));
    assert_eq!(io.write(4, &[CMD_IO as u8, 0]), moved);
    let bars = super::lock(&dev).active_bars();
    assert_eq!(bars.len(), 1);
    assert!(bars[0].kind.is_io());
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
