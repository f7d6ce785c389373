use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::bus::{Bus, BusAction, PlatformRequest};
use crate::pci::testing::{FakeIntx, FakeIoEvents, FakeMsi, MsiCall};
use crate::pci::{Bdf, Ecam, PciRoot};
use crate::virtio::status::*;
use crate::virtio::testing::{FakeDevice, RecordingHost};
use crate::virtio::{VirtioIrq, VIRTIO_F_VERSION_1};
use crate::BusDevice;

const BAR: u64 = 0x1_0000_0000;

struct Fixture {
    t: VirtioPciTransport,
    host: Arc<RecordingHost>,
    msi: Arc<FakeMsi>,
    intx: Arc<FakeIntx>,
    io: Arc<FakeIoEvents>,
    /// Shares its counter with queue 0's notify eventfd.
    kick0: EventFd,
}

fn params(msix_count: u16, bar_addr: u64) -> (VirtioPciParams, Fixture2) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let host = Arc::new(RecordingHost::default());
    let msi = Arc::new(FakeMsi::new(msix_count));
    let intx = Arc::new(FakeIntx::default());
    let io = Arc::new(FakeIoEvents::default());
    let notify = EventFd::new(EFD_NONBLOCK).unwrap();
    let kick0 = notify.try_clone().unwrap();
    let p = VirtioPciParams {
        dev: Box::new(FakeDevice::new(VIRTIO_F_VERSION_1 | 1)),
        mem,
        notify: vec![notify],
        msix: msi.clone(),
        intx: intx.clone(),
        intx_line: 10,
        intx_pin: 1,
        ioevents: io.clone(),
        key: 4,
        bar_addr,
    };
    TEST_HOST.with(|h| *h.borrow_mut() = Some(host.clone()));
    (p, (host, msi, intx, io, kick0))
}

type Fixture2 = (
    Arc<RecordingHost>,
    Arc<FakeMsi>,
    Arc<FakeIntx>,
    Arc<FakeIoEvents>,
    EventFd,
);

fn fixture() -> Fixture {
    let (p, (host, msi, intx, io, kick0)) = params(msix_vectors_for(1), BAR);
    Fixture {
        t: VirtioPciTransport::new(p).unwrap(),
        host,
        msi,
        intx,
        io,
        kick0,
    }
}

fn cr(t: &mut VirtioPciTransport, off: u16, len: usize) -> u32 {
    let mut b = [0u8; 4];
    t.config_read(off, &mut b[..len]);
    u32::from_le_bytes(b)
}

thread_local! {
    /// The worker host of this test's fixture: `act` plays the control
    /// thread with it.
    static TEST_HOST: std::cell::RefCell<Option<Arc<RecordingHost>>> = const { std::cell::RefCell::new(None) };
}

/// Carry out a lifecycle request the way the VMM's control thread does.
fn act(t: &mut VirtioPciTransport, a: BusAction) -> BusAction {
    if let BusAction::Platform(PlatformRequest::Virtio { device, change }) = a {
        assert_eq!(device, 4, "the transport names itself by its key");
        let host = TEST_HOST.with(|h| h.borrow().clone()).unwrap();
        t.lifecycle(change, host.as_ref());
    }
    a
}

fn cw(t: &mut VirtioPciTransport, off: u16, v: u32, len: usize) {
    let a = t.config_write(off, &v.to_le_bytes()[..len]);
    act(t, a);
}

fn br(t: &mut VirtioPciTransport, off: u64, len: usize) -> u64 {
    let mut b = [0u8; 8];
    t.bar_read(0, off, &mut b[..len]);
    u64::from_le_bytes(b)
}

fn bw(t: &mut VirtioPciTransport, off: u64, v: u64, len: usize) -> BusAction {
    let a = t.bar_write(0, off, &v.to_le_bytes()[..len]);
    act(t, a)
}

/// Capabilities found by walking from 0x34: (offset, id, cfg_type).
fn caps(t: &mut VirtioPciTransport) -> Vec<(u16, u8, u8)> {
    let mut out = Vec::new();
    let mut p = cr(t, 0x34, 1) as u16;
    while p != 0 && out.len() < 48 {
        out.push((p, cr(t, p, 1) as u8, cr(t, p + 3, 1) as u8));
        p = cr(t, p + 1, 1) as u16;
    }
    out
}

fn cap_of(t: &mut VirtioPciTransport, cfg_type: u8) -> u16 {
    caps(t)
        .into_iter()
        .find(|c| c.1 == 0x09 && c.2 == cfg_type)
        .unwrap()
        .0
}

fn msix_cap(t: &mut VirtioPciTransport) -> u16 {
    caps(t).into_iter().find(|c| c.1 == 0x11).unwrap().0
}

/// Drive the spec's bring-up through common config; `desc` places the
/// descriptor table.
fn bring_up(t: &mut VirtioPciTransport, desc: u64) {
    bw(t, 0x14, (ACKNOWLEDGE | DRIVER).into(), 1);
    bw(t, 0x08, 1, 4);
    bw(t, 0x0c, 1, 4);
    bw(t, 0x14, (ACKNOWLEDGE | DRIVER | FEATURES_OK).into(), 1);
    assert_ne!(br(t, 0x14, 1) as u8 & FEATURES_OK, 0);
    bw(t, 0x16, 0, 2);
    bw(t, 0x18, 8, 2);
    bw(t, 0x20, desc, 8);
    bw(t, 0x28, 0x2000, 4);
    bw(t, 0x2c, 0, 4);
    bw(t, 0x30, 0x3000, 4);
    bw(t, 0x34, 0, 4);
    bw(t, 0x1c, 1, 2);
    let a = bw(
        t,
        0x14,
        (ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK).into(),
        1,
    );
    assert_eq!(
        a,
        BusAction::Platform(PlatformRequest::Virtio {
            device: 4,
            change: crate::virtio::common::StatusChange::Activate
        }),
        "DRIVER_OK is a request for the control thread, as a value"
    );
}

#[test]
fn header_identifies_a_modern_virtio_function() {
    let mut t = fixture().t;
    assert_eq!(cr(&mut t, 0, 4), 0x10bf_1af4, "0x1040 + type 0x7f");
    assert_eq!(cr(&mut t, 8, 4) & 0xff, 1, "revision 1");
    assert_eq!(cr(&mut t, 0x2c, 4), 0x1100_1af4);
    assert_eq!(cr(&mut t, 4, 2), 0x6, "memory decode and bus master");
    assert_eq!(cr(&mut t, 0x10, 4), 0x4, "64-bit, non-prefetchable");
    assert_eq!(cr(&mut t, 0x14, 4), 1);
    assert_eq!(cr(&mut t, 0x3c, 2), 0x010a);
    cw(&mut t, 0x10, u32::MAX, 4);
    cw(&mut t, 0x14, u32::MAX, 4);
    assert_eq!(cr(&mut t, 0x10, 4), 0xffff_8004, "32 KiB");
    assert_eq!(cr(&mut t, 0x14, 4), u32::MAX);
    assert_eq!(class_of(TYPE_BLOCK), (0x01, 0x00, 0x00));
}

#[test]
fn capability_chain_describes_bar_0() {
    let mut t = fixture().t;
    assert_ne!(cr(&mut t, 6, 2) & 0x10, 0, "capability list");
    let found = caps(&mut t);
    let types: Vec<(u8, u8)> = found.iter().map(|c| (c.1, c.2)).collect();
    assert_eq!(
        types,
        vec![(9, 1), (9, 3), (9, 4), (9, 2), (9, 5), (0x11, 0)],
        "common, ISR, device, notify, PCI_CFG, then MSI-X"
    );
    for (ty, off, len) in [(1, 0, 0x1000), (3, 0x1000, 0x1000), (4, 0x2000, 0x1000)] {
        let at = cap_of(&mut t, ty);
        assert_eq!(cr(&mut t, at + 2, 1), 16, "cap_len");
        assert_eq!(cr(&mut t, at + 4, 1), 0, "BAR 0");
        assert_eq!((cr(&mut t, at + 8, 4), cr(&mut t, at + 12, 4)), (off, len));
    }
    let n = cap_of(&mut t, 2);
    assert_eq!(cr(&mut t, n + 2, 1), 20);
    assert_eq!(cr(&mut t, n + 8, 4), 0x3000);
    assert_eq!(cr(&mut t, n + 16, 4), 4, "notify_off_multiplier");
    let m = msix_cap(&mut t);
    assert_eq!(cr(&mut t, m + 2, 2), 1, "two vectors");
    assert_eq!(cr(&mut t, m + 4, 4), 0x4000);
    assert_eq!(cr(&mut t, m + 8, 4), 0x5000);
    // The capabilities are read-only apart from their defined fields.
    let c = cap_of(&mut t, 1);
    cw(&mut t, c, u32::MAX, 4);
    cw(&mut t, c + 8, u32::MAX, 4);
    assert_eq!(cr(&mut t, c + 8, 4), 0);
    assert_eq!(cr(&mut t, c, 1), 9);
}

#[test]
fn bring_up_starts_the_worker_once_and_reset_stops_it() {
    let Fixture { mut t, host, .. } = fixture();
    assert_eq!(br(&mut t, 0x12, 2), 1, "num_queues");
    assert_eq!(br(&mut t, 0x18, 2), 16, "queue_size starts at the maximum");
    assert_eq!(br(&mut t, 0x1e, 2), 0, "queue_notify_off");
    bw(&mut t, 0x00, 1, 4);
    assert_eq!(br(&mut t, 0x04, 4), 1, "VERSION_1 in the high page");
    bw(&mut t, 0x00, 0, 4);
    assert_eq!(br(&mut t, 0x04, 4), 1, "feature bit 0");
    bring_up(&mut t, 0x1000);
    assert_eq!(host.started(), 1);
    assert_eq!(br(&mut t, 0x14, 1), 0xf);
    assert_eq!(br(&mut t, 0x20, 8), 0x1000);
    assert_eq!(br(&mut t, 0x28, 4), 0x2000);
    assert_eq!(br(&mut t, 0x1c, 2), 1);
    bw(&mut t, 0x0c, 0, 4);
    bw(&mut t, 0x08, 1, 4);
    assert_eq!(
        br(&mut t, 0x0c, 4),
        1,
        "driver features stay after FEATURES_OK"
    );
    // Setting DRIVER_OK again starts nothing more.
    bw(&mut t, 0x14, 0xf, 1);
    assert_eq!(host.started(), 1);
    bw(&mut t, 0x14, 0, 1);
    assert_eq!(host.stopped(), 1);
    assert_eq!(br(&mut t, 0x14, 1), 0);
    assert_eq!(br(&mut t, 0x1c, 2), 0, "queue disabled by reset");
    assert_eq!(br(&mut t, 0x20, 8), 0);
}

#[test]
fn rings_outside_memory_mean_needs_reset_not_a_start() {
    let Fixture { mut t, host, .. } = fixture();
    bring_up(&mut t, 0xffff_0000);
    assert_eq!(host.started(), 0);
    assert_ne!(br(&mut t, 0x14, 1) as u8 & NEEDS_RESET, 0);
    bw(&mut t, 0x14, 0, 1);
    assert_eq!(br(&mut t, 0x14, 1), 0, "reset clears NEEDS_RESET");
    assert_eq!(host.stopped(), 0, "nothing was running");
}

#[test]
fn msix_goes_to_the_programmed_vector_and_masked_ones_wait() {
    let Fixture {
        mut t, msi, intx, ..
    } = fixture();
    let m = msix_cap(&mut t);
    cw(&mut t, m + 2, 0x8000, 2);
    // Entry 1 for the queue, unmasked; entry 0 for config, left masked.
    bw(&mut t, 0x4010, 0xfee0_0000, 8);
    bw(&mut t, 0x4018, 0x41, 4);
    bw(&mut t, 0x401c, 0, 4);
    bw(&mut t, 0x4000, 0xfee0_1000, 8);
    bw(&mut t, 0x4008, 0x40, 4);
    bw(&mut t, 0x10, 0, 2);
    bw(&mut t, 0x1a, 1, 2);
    assert_eq!(br(&mut t, 0x10, 2), 0);
    assert_eq!(br(&mut t, 0x1a, 2), 1);
    assert_eq!(
        msi.take(),
        vec![MsiCall::Route(
            1,
            Some(crate::pci::MsiMessage {
                addr: 0xfee0_0000,
                data: 0x41
            })
        )]
    );
    t.irq.signal_used(0).unwrap();
    assert_eq!(msi.triggers(), vec![1]);
    t.irq.signal_config().unwrap();
    assert!(msi.triggers().is_empty(), "vector 0 is masked");
    assert_eq!(br(&mut t, 0x5000, 8), 1, "PBA bit 0");
    bw(&mut t, 0x400c, 0, 4);
    assert_eq!(msi.triggers(), vec![0], "delivered on unmask");
    assert_eq!(br(&mut t, 0x5000, 8), 0);
    assert!(
        !intx.level() && br(&mut t, 0x1000, 1) == 0,
        "no INTx, no ISR"
    );
    // A vector past the table reads back as NO_VECTOR: no interrupt.
    bw(&mut t, 0x1a, 2, 2);
    assert_eq!(br(&mut t, 0x1a, 2), u64::from(VIRTIO_MSI_NO_VECTOR));
    t.irq.signal_used(0).unwrap();
    assert!(msi.take().is_empty());
    // Device reset returns both vectors to NO_VECTOR.
    bw(&mut t, 0x1a, 1, 2);
    bw(&mut t, 0x14, 0, 1);
    assert_eq!(br(&mut t, 0x10, 2), 0xffff);
    assert_eq!(br(&mut t, 0x1a, 2), 0xffff);
}

#[test]
fn intx_when_msix_is_off_and_isr_read_clears() {
    let Fixture { mut t, intx, .. } = fixture();
    bw(&mut t, 0x1a, 1, 2);
    t.irq.signal_used(0).unwrap();
    t.irq.signal_config().unwrap();
    assert!(intx.level());
    assert_eq!(intx.asserts(), 1, "asserted on the rising edge only");
    assert_ne!(cr(&mut t, 6, 2) & 0x8, 0, "STATUS interrupt bit");
    assert_eq!(br(&mut t, 0x1001, 1), 0, "only offset 0 is the ISR");
    assert!(intx.level());
    assert_eq!(br(&mut t, 0x1000, 1), 3);
    assert!(!intx.level());
    assert_eq!(cr(&mut t, 6, 2) & 0x8, 0);
    assert_eq!(br(&mut t, 0x1000, 4), 0, "read cleared it");
    // INTx disable holds the pin low, and lifting it re-raises a pending one.
    cw(&mut t, 4, 0x406, 2);
    t.irq.signal_used(0).unwrap();
    assert!(!intx.level());
    cw(&mut t, 4, 0x006, 2);
    assert!(intx.level());
    // Device reset clears the ISR and lowers the pin.
    bw(&mut t, 0x14, 0, 1);
    assert!(!intx.level());
    assert_eq!(br(&mut t, 0x1000, 1), 0);
}

#[test]
fn notify_ioeventfds_follow_bar_0() {
    let Fixture {
        mut t, io, kick0, ..
    } = fixture();
    assert_eq!(io.addrs(), vec![BAR + 0x3000]);
    // The guest moves BAR 0 (low half, then high half).
    cw(&mut t, 0x10, 0xfe00_0000, 4);
    cw(&mut t, 0x14, 0, 4);
    assert_eq!(io.addrs(), vec![0xfe00_3000]);
    cw(&mut t, 4, 0x4, 2);
    assert!(io.addrs().is_empty(), "memory decode off");
    cw(&mut t, 4, 0x6, 2);
    assert_eq!(io.addrs(), vec![0xfe00_3000]);
    // A notification that reaches the device anyway is forwarded.
    bw(&mut t, 0x3000, 0, 2);
    assert_eq!(kick0.read().unwrap(), 1);
    bw(&mut t, 0x3004, 1, 2);
    bw(&mut t, 0x3002, 0, 2);
    assert!(
        kick0.read().is_err(),
        "no such queue / not a notify address"
    );
    drop(t);
    assert!(io.addrs().is_empty(), "unregistered on drop");
}

/// What the VMM's control thread does on `BarsMoved`: the function's
/// decoding BARs become its ranges on the bus.
fn place(bus: &Bus, root: &PciRoot, bdf: Bdf) {
    let dev = root.function(bdf).unwrap().clone();
    let (ranges, io) = crate::pci::root::bar_ranges(bdf, &dev);
    assert!(io.is_empty(), "virtio-pci has no I/O BAR");
    assert!(bus.set_owned(bdf, ranges).is_empty());
}

#[test]
fn through_the_root_a_moved_bar_moves_routing_and_ioeventfds() {
    let Fixture { t, io, .. } = fixture();
    let mut root = PciRoot::new();
    root.add(3, Arc::new(std::sync::Mutex::new(t))).unwrap();
    let root = Arc::new(root);
    let bdf = Bdf {
        bus: 0,
        dev: 3,
        func: 0,
    };
    let bus = Bus::new();
    place(&bus, &root, bdf);
    let mut ecam = Ecam::new(root.clone());
    let mut b = [0u8; 2];
    assert!(bus.read(BAR + 0x12, &mut b));
    assert_eq!(u16::from_le_bytes(b), 1, "num_queues through the bus range");
    // The guest moves BAR 0 (a 64-bit BAR: low dword, then high).
    ecam.write((3 << 15) | 0x10, &0xfe00_0000u32.to_le_bytes());
    let a = ecam.write((3 << 15) | 0x14, &0u32.to_le_bytes());
    assert_eq!(a, BusAction::Platform(PlatformRequest::BarsMoved { bdf }));
    assert_eq!(io.addrs(), vec![0xfe00_3000]);
    place(&bus, &root, bdf);
    assert!(!bus.read(BAR + 0x12, &mut b), "the old range is gone");
    assert!(bus.read(0xfe00_0012, &mut b));
    assert_eq!(u16::from_le_bytes(b), 1);
    let mut id = [0u8; 4];
    root.config_read(bdf, 0, &mut id);
    assert_eq!(u32::from_le_bytes(id), 0x10bf_1af4);
}

#[test]
fn pci_cfg_window_reaches_bar_0() {
    let Fixture { mut t, .. } = fixture();
    let c = cap_of(&mut t, 5);
    // Read num_queues (2 bytes at 0x12).
    cw(&mut t, c + 4, 0, 1);
    cw(&mut t, c + 8, 0x12, 4);
    cw(&mut t, c + 12, 2, 4);
    assert_eq!(cr(&mut t, c + 16, 4), 1);
    // Write device_status = ACKNOWLEDGE (1 byte at 0x14).
    cw(&mut t, c + 8, 0x14, 4);
    cw(&mut t, c + 12, 1, 4);
    cw(&mut t, c + 16, ACKNOWLEDGE.into(), 4);
    assert_eq!(br(&mut t, 0x14, 1), u64::from(ACKNOWLEDGE));
    // Bad windows do nothing: length 3, misaligned, past the BAR, BAR 1.
    for (bar, off, len) in [(0, 0x14, 3), (0, 0x13, 2), (0, 0x8000, 4), (1, 0x14, 1)] {
        cw(&mut t, c + 4, bar, 1);
        cw(&mut t, c + 8, off, 4);
        cw(&mut t, c + 12, len, 4);
        cw(&mut t, c + 16, 0, 4);
        cr(&mut t, c + 16, 4);
    }
    assert_eq!(br(&mut t, 0x14, 1), u64::from(ACKNOWLEDGE));
}

#[test]
fn malformed_accesses_are_harmless() {
    let Fixture { mut t, host, .. } = fixture();
    // Odd widths and offsets in every region.
    for off in [
        0u64, 0x3, 0x14, 0x37, 0x38, 0xfff, 0x1000, 0x2ffe, 0x3001, 0x4003, 0x5004,
    ] {
        for len in [1, 2, 3, 4, 8] {
            br(&mut t, off, len);
            bw(&mut t, off, u64::MAX, len);
        }
    }
    t.bar_write(0, 0x10, &[0; 16]);
    t.bar_read(0, 0x10, &mut [0; 16]);
    t.bar_read(0, u64::MAX, &mut [0; 4]);
    t.bar_write(0, u64::MAX - 1, &[0; 4]);
    let mut b = [0u8; 4];
    t.bar_read(1, 0, &mut b);
    assert_eq!(b, [0xff; 4]);
    t.config_read(0xffe, &mut [0; 4]);
    t.config_write(0xfff, &[0xff; 4]);
    assert_eq!(host.started(), 0);
    // Status went through garbage; start over cleanly.
    bw(&mut t, 0x14, 0, 1);
    // queue_select out of range: queue registers read zero, writes vanish.
    bw(&mut t, 0x16, 7, 2);
    assert_eq!(br(&mut t, 0x18, 2), 0);
    bw(&mut t, 0x18, 4, 2);
    bw(&mut t, 0x1a, 0, 2);
    bw(&mut t, 0x20, 0x1000, 8);
    assert_eq!(br(&mut t, 0x1a, 2), 0);
    bw(&mut t, 0x16, 0, 2);
    assert_eq!(br(&mut t, 0x18, 2), 16);
    // After DRIVER_OK, queue registers are frozen.
    bring_up(&mut t, 0x1000);
    assert_eq!(host.started(), 1);
    bw(&mut t, 0x18, 4, 2);
    bw(&mut t, 0x20, 0x8000, 8);
    assert_eq!(br(&mut t, 0x18, 2), 8);
    assert_eq!(br(&mut t, 0x20, 8), 0x1000);
}

#[test]
fn new_refuses_bad_parameters() {
    let (p, _) = params(2, BAR + 0x1000);
    assert!(VirtioPciTransport::new(p).is_err(), "misaligned BAR");
    let (p, _) = params(0, BAR);
    assert!(VirtioPciTransport::new(p).is_err(), "no vectors");
    let (p, _) = params(257, BAR);
    assert!(
        VirtioPciTransport::new(p).is_err(),
        "more than the table page"
    );
    let (mut p, _) = params(2, BAR);
    p.notify.clear();
    assert!(VirtioPciTransport::new(p).is_err(), "notify count");
    assert_eq!(msix_vectors_for(4), 5);
    let (p, (_, _, _, io, _)) = params(1, BAR);
    let t = VirtioPciTransport::new(p).unwrap();
    assert_eq!(io.addrs(), vec![BAR + 0x3000], "one vector is enough");
    drop(t);
}
