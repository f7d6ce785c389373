//! End to end without a VM: the VFIO PCI model in this process drives
//! the virtio-blk function served by `casemate-vfio-user-blk` in another
//! process, over a real socket, with guest RAM shared as a file. The test
//! is the guest's virtio driver (through the model's configuration and BAR
//! accesses, as vCPU exits would make them); interrupts arrive on the
//! irqfds the model handed to the server.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use casemate_devices::pci::PciDevice;
use casemate_devices::vfio::fake::{FakeIntxIrqfds, FakeMsiAlloc, FakeSlots};
use casemate_devices::vfio::user::VfioUserDevice;
use casemate_devices::vfio::{VfioPciFunction, VfioPciParams};
use vm_memory::{Address, Bytes, FileOffset, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::tempfile::TempFile;

const RAM: usize = 0x10_0000;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const HDR: u64 = 0x4000;
const DATA: u64 = 0x5000;
const STATUS: u64 = 0x6000;
const BAR0_AT: u64 = 0x1_0000_0000;
const QSIZE: u16 = 16;

struct ServerProc {
    child: Child,
    path: PathBuf,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Start the server on `image` and wait for its "listening" line.
fn serve(image: &Path, tag: &str) -> ServerProc {
    let path = std::env::temp_dir().join(format!(
        "casemate-vfu-e2e-{}-{tag}.sock",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let mut child = Command::new(env!("CARGO_BIN_EXE_casemate-vfio-user-blk"))
        .arg("--socket")
        .arg(&path)
        .arg("--image")
        .arg(image)
        .arg("--format")
        .arg("raw")
        .env("CASEMATE_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert_ne!(
            err.read_line(&mut line).unwrap(),
            0,
            "the server ended before listening"
        );
        if line.contains("listening on") {
            break;
        }
    }
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = err.read_to_end(&mut sink);
    });
    ServerProc { child, path }
}

struct Rig {
    f: VfioPciFunction,
    mem: GuestMemoryMmap,
    alloc: Arc<FakeMsiAlloc>,
    intx: Arc<FakeIntxIrqfds>,
    common: u64,
    notify: u64,
    isr: u64,
    _server: ServerProc,
    _ram: TempFile,
}

fn wait_fd(fd: RawFd) -> bool {
    let ep = Epoll::new().unwrap();
    ep.ctl(ControlOperation::Add, fd, EpollEvent::new(EventSet::IN, 1))
        .unwrap();
    let mut ev = [EpollEvent::default(); 1];
    ep.wait(5000, &mut ev).unwrap() == 1
}

fn cr(f: &mut VfioPciFunction, off: u16, len: usize) -> u32 {
    let mut b = [0u8; 4];
    f.config_read(off, &mut b[..len]);
    u32::from_le_bytes(b)
}

impl Rig {
    fn new(image: &Path, tag: &str) -> Self {
        let server = serve(image, tag);
        let ram = TempFile::new().unwrap();
        ram.as_file().set_len(RAM as u64).unwrap();
        let mem = GuestMemoryMmap::from_ranges_with_files(&[(
            GuestAddress(0),
            RAM,
            Some(FileOffset::new(ram.as_file().try_clone().unwrap(), 0)),
        )])
        .unwrap();
        let dev = Arc::new(VfioUserDevice::connect(&server.path, Duration::from_secs(5)).unwrap());
        let alloc = Arc::new(FakeMsiAlloc::default());
        let intx = Arc::new(FakeIntxIrqfds::new().unwrap());
        let mut f = VfioPciFunction::new(VfioPciParams {
            name: "vfio-user0".into(),
            io: dev.clone(),
            dma: dev,
            mem: &mem,
            msi: alloc.as_ref(),
            intx: Some(intx.clone()),
            intx_line: 10,
            slots: Arc::new(FakeSlots::default()),
        })
        .unwrap();
        f.place_bar(0, BAR0_AT).unwrap();
        f.set_command(0x6).unwrap();
        assert_eq!(cr(&mut f, 0, 4), 0x1042_1af4, "virtio-blk, modern");
        // Find the virtio structures through the vendor capabilities.
        let (mut common, mut notify, mut isr) = (None, None, None);
        let mut at = cr(&mut f, 0x34, 1) as u16;
        while at != 0 {
            if cr(&mut f, at, 1) == 0x09 {
                let off = u64::from(cr(&mut f, at + 8, 4));
                match cr(&mut f, at + 3, 1) {
                    1 => common = Some(off),
                    2 => notify = Some(off),
                    3 => isr = Some(off),
                    _ => {}
                }
            }
            at = cr(&mut f, at + 1, 1) as u16;
        }
        Rig {
            f,
            mem,
            alloc,
            intx,
            common: common.expect("common cfg"),
            notify: notify.expect("notify"),
            isr: isr.expect("isr"),
            _server: server,
            _ram: ram,
        }
    }

    fn w(&mut self, off: u64, v: &[u8]) {
        self.f.bar_write(0, self.common + off, v);
    }

    fn r8(&mut self, off: u64) -> u8 {
        let mut b = [0u8];
        self.f.bar_read(0, self.common + off, &mut b);
        b[0]
    }

    /// Reset, negotiate VERSION_1, set up queue 0 with `vector`.
    fn bring_up(&mut self, vector: u16) {
        self.w(0x14, &[0]);
        self.w(0x14, &[1]);
        self.w(0x14, &[3]);
        self.w(0x08, &1u32.to_le_bytes());
        self.w(0x0c, &1u32.to_le_bytes());
        self.w(0x14, &[0xb]);
        assert_eq!(self.r8(0x14) & 0x8, 0x8, "FEATURES_OK accepted");
        self.w(0x16, &0u16.to_le_bytes());
        self.w(0x18, &QSIZE.to_le_bytes());
        self.w(0x1a, &vector.to_le_bytes());
        self.w(0x20, &DESC.to_le_bytes());
        self.w(0x28, &AVAIL.to_le_bytes());
        self.w(0x30, &USED.to_le_bytes());
        self.w(0x1c, &1u16.to_le_bytes());
        self.w(0x14, &[0xf]);
        assert_eq!(self.r8(0x14), 0xf, "DRIVER_OK, no NEEDS_RESET");
    }

    /// Put a request on the ring (the `n`th) and notify.
    fn submit(&mut self, n: u16, write: bool, sector: u64) {
        let m = &self.mem;
        m.write_obj(u32::from(write), GuestAddress(HDR)).unwrap();
        m.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
        m.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
        m.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let desc = |i: u64, addr: u64, len: u32, flags: u16, next: u16| {
            let at = GuestAddress(DESC + i * 16);
            m.write_obj(addr, at).unwrap();
            m.write_obj(len, at.unchecked_add(8)).unwrap();
            m.write_obj(flags, at.unchecked_add(12)).unwrap();
            m.write_obj(next, at.unchecked_add(14)).unwrap();
        };
        desc(0, HDR, 16, 1, 1);
        desc(1, DATA, 512, if write { 1 } else { 1 | 2 }, 2);
        desc(2, STATUS, 1, 2, 0);
        m.write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * u64::from(n % QSIZE)))
            .unwrap();
        m.write_obj(n + 1, GuestAddress(AVAIL + 2)).unwrap();
        self.f.bar_write(0, self.notify, &0u16.to_le_bytes());
    }

    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    fn status(&self) -> u8 {
        self.mem.read_obj(GuestAddress(STATUS)).unwrap()
    }

    fn isr_read(&mut self) -> u8 {
        let mut b = [0u8];
        self.f.bar_read(0, self.isr, &mut b);
        b[0]
    }
}

fn image(tag: &str) -> (PathBuf, std::fs::File) {
    let p = std::env::temp_dir().join(format!("casemate-vfu-e2e-{}-{tag}.raw", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.set_len(1 << 20).unwrap();
    (p, f)
}

#[test]
fn msix_requests_write_the_image_and_read_it_back() {
    let (path, img) = image("msix");
    let mut r = Rig::new(&path, "msix");
    // MSI-X on with entry 0 unmasked, as a guest driver does.
    let mut at = cr(&mut r.f, 0x34, 1) as u16;
    while cr(&mut r.f, at, 1) != 0x11 {
        at = cr(&mut r.f, at + 1, 1) as u16;
    }
    let table = cr(&mut r.f, at + 4, 4);
    assert_eq!(table & 7, 0, "table in BAR 0");
    r.f.config_write(at + 2, &0x8000u16.to_le_bytes());
    let e = u64::from(table & !7);
    r.f.bar_write(0, e, &0xfee0_0000u32.to_le_bytes());
    r.f.bar_write(0, e + 8, &0x30u32.to_le_bytes());
    r.f.bar_write(0, e + 12, &0u32.to_le_bytes());
    r.bring_up(0);

    let pattern: Vec<u8> = (0..512u32).map(|i| (i * 7 + 3) as u8).collect();
    r.mem.write_slice(&pattern, GuestAddress(DATA)).unwrap();
    r.submit(0, true, 3);
    let irqfd = r.alloc.get(0).fd(0);
    assert!(wait_fd(irqfd), "MSI-X vector 0 fired");
    assert!(r.alloc.get(0).fired(0));
    assert_eq!((r.used_idx(), r.status()), (1, 0), "write completed OK");
    let mut on_disk = vec![0u8; 512];
    img.read_exact_at(&mut on_disk, 3 * 512).unwrap();
    assert_eq!(on_disk, pattern, "the data is in the image");

    r.mem.write_slice(&[0u8; 512], GuestAddress(DATA)).unwrap();
    r.submit(1, false, 3);
    assert!(wait_fd(irqfd));
    assert_eq!((r.used_idx(), r.status()), (2, 0));
    let mut back = vec![0u8; 512];
    r.mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert_eq!(back, pattern, "read back through the device");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn intx_delivers_and_is_raised_again_after_eoi_while_still_asserted() {
    let (path, img) = image("intx");
    let mut r = Rig::new(&path, "intx");
    r.bring_up(0xffff);
    r.mem.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    r.submit(0, true, 0);
    let trig = r.intx.trigger.as_raw_fd();
    assert!(wait_fd(trig), "INTx fired");
    assert_eq!(r.intx.trigger.read().unwrap(), 1);
    assert_eq!((r.used_idx(), r.status()), (1, 0));
    // The guest EOIs without reading the ISR: the line is still high, so
    // KVM's resample signal makes the device raise it again.
    r.intx.resample.write(1).unwrap();
    assert!(wait_fd(trig), "raised again after EOI");
    assert_eq!(
        r.isr_read() & 1,
        1,
        "ISR says queue interrupt and lowers the line"
    );
    let mut b = [0u8; 512];
    img.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(b, [0x5a; 512]);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_killed_server_fails_accesses_at_once_and_nothing_hangs() {
    let (path, _img) = image("kill");
    let mut r = Rig::new(&path, "kill");
    r.bring_up(0xffff);
    r._server.child.kill().unwrap();
    r._server.child.wait().unwrap();
    let start = std::time::Instant::now();
    // The first access finds the connection gone; later ones fail fast.
    for _ in 0..50 {
        assert_eq!(r.r8(0x14), 0xff, "reads all-ones");
        r.submit(0, true, 0);
    }
    assert_eq!(cr(&mut r.f, 0, 4), 0xffff_ffff);
    assert!(r.f.reset().is_err(), "reset says the device is gone");
    assert!(start.elapsed() < Duration::from_secs(2));
    let _ = std::fs::remove_file(&path);
}
