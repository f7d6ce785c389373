//! The device manager with a fake hypervisor (no /dev/kvm): placement on
//! each machine, allocation exhaustion, lifecycle requests as values and
//! the control thread's part in them, BAR moves through the buses.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use casemate_devices::pci::testing::{FakeIntx, FakeIoEvents, FakeMsi};
use casemate_devices::pci::{IntxLine, IoEvents, MsiVectors};
use casemate_devices::virtio::common::StatusChange;
use casemate_devices::virtio::testing::{FakeDevice, RecordingHost};
use casemate_devices::virtio::VIRTIO_F_VERSION_1;
use casemate_devices::{BusAction, IrqLine, PlatformRequest};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::*;
use crate::config::MachineKind;
use crate::machine;

#[derive(Default)]
struct FakeHv {
    lines: AtomicUsize,
    io: Arc<FakeIoEvents>,
}

struct Line;
impl IrqLine for Line {
    fn trigger(&self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Hypervisor for FakeHv {
    fn irq_line(&self, _what: &'static str, _gsi: u32) -> Result<Arc<dyn IrqLine>, DevError> {
        self.lines.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(Line))
    }
    fn msi_vectors(&self, count: u16) -> Result<Arc<dyn MsiVectors>, DevError> {
        Ok(Arc::new(FakeMsi::new(count)))
    }
    fn intx(&self, _gsi: u32) -> Result<Arc<dyn IntxLine>, DevError> {
        Ok(Arc::new(FakeIntx::default()))
    }
    fn ioevents(&self) -> Arc<dyn IoEvents> {
        self.io.clone()
    }
    fn coalesced_zones(&self) -> Arc<dyn casemate_devices::pci::CoalescedZones> {
        Arc::new(casemate_devices::pci::testing::FakeZones::default())
    }
    fn msi_irqfds(
        &self,
        count: u16,
    ) -> Result<Arc<dyn casemate_devices::vfio::MsiIrqfds>, DevError> {
        Ok(Arc::new(
            casemate_devices::vfio::fake::FakeMsiIrqfds::new(count).unwrap(),
        ))
    }
    fn intx_irqfds(
        &self,
        _gsi: u32,
    ) -> Result<Arc<dyn casemate_devices::vfio::IntxIrqfds>, DevError> {
        Ok(Arc::new(
            casemate_devices::vfio::fake::FakeIntxIrqfds::new().unwrap(),
        ))
    }
    fn mem_slots(&self) -> Arc<dyn casemate_devices::vfio::MemSlots> {
        Arc::new(casemate_devices::vfio::fake::FakeSlots::default())
    }
}

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap()
}

fn fake() -> Box<dyn VirtioDevice> {
    Box::new(FakeDevice::new(VIRTIO_F_VERSION_1))
}

fn manager(kind: MachineKind) -> DeviceManager {
    DeviceManager::new(machine::model(kind))
}

#[test]
fn devices_never_overlap_and_exhaustion_names_the_resource() {
    for kind in [MachineKind::Microvm, MachineKind::Q35, MachineKind::Pc] {
        let hv = FakeHv::default();
        let mem = mem();
        let w = Wiring { hv: &hv, mem: &mem };
        let mut dm = manager(kind);
        let limit = machine::model(kind).device_limit();
        for i in 0..limit {
            dm.add_virtio(&w, &format!("d{i}"), fake(), None).unwrap();
        }
        let e = dm.add_virtio(&w, "one-too-many", fake(), None).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("fake0") && (text.contains("PCI slot") || text.contains("pin")),
            "{kind:?}: {text}"
        );
        dm.finish().unwrap();
        let ranges = dm.buses.mmio.ranges();
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                assert!(a.1 + a.2 <= b.1, "{kind:?}: {a:?} overlaps {b:?}");
            }
        }
        assert_eq!(dm.devices().len(), limit);
    }
}

#[test]
fn a_device_on_a_transport_the_machine_lacks_is_refused_by_name() {
    let hv = FakeHv::default();
    let mem = mem();
    let w = Wiring { hv: &hv, mem: &mem };
    let mut dm = manager(MachineKind::Microvm);
    let e = dm
        .add_virtio(&w, "r", fake(), Some(Transport::Pci))
        .unwrap_err()
        .to_string();
    assert_eq!(e, "fake0: machine microvm has no PCI transport");
}

/// Bring a virtio-mmio device to DRIVER_OK through the bus.
fn mmio_bring_up(dm: &DeviceManager, base: u64) -> BusAction {
    let w = |off: u64, v: u32| dm.buses.mmio.write(base + off, &v.to_le_bytes()).unwrap();
    w(0x70, 3);
    w(0x24, 1);
    w(0x20, 1);
    w(0x70, 0xb);
    w(0x30, 0);
    w(0x38, 16);
    w(0x80, 0x1000);
    w(0x90, 0x2000);
    w(0xa0, 0x3000);
    w(0x44, 1);
    w(0x70, 0xf)
}

#[test]
fn status_writes_return_requests_that_the_control_thread_carries_out() {
    let hv = FakeHv::default();
    let mem = mem();
    let w = Wiring { hv: &hv, mem: &mem };
    let mut dm = manager(MachineKind::Microvm);
    dm.add_virtio(&w, "a", fake(), None).unwrap();
    dm.add_virtio(&w, "b", fake(), None).unwrap();
    dm.finish().unwrap();
    let Placement::Mmio { base, .. } = dm.devices()[1].placement else {
        panic!("microvm places on virtio-mmio");
    };
    let host = RecordingHost::default();
    let a = mmio_bring_up(&dm, base);
    let want = PlatformRequest::Virtio {
        device: dm.devices()[1].key,
        change: StatusChange::Activate,
    };
    assert_eq!(a, BusAction::Platform(want));
    assert_eq!(host.started(), 0, "the vCPU side starts nothing");
    dm.handle(want, &host);
    assert_eq!(host.started(), 1);
    let reset = dm
        .buses
        .mmio
        .write(base + 0x70, &0u32.to_le_bytes())
        .unwrap();
    let BusAction::Platform(req) = reset else {
        panic!("{reset:?}");
    };
    dm.handle(req, &host);
    assert_eq!(host.stopped(), 1);
}

#[test]
fn a_guest_moving_a_bar_moves_its_bus_range() {
    let hv = FakeHv::default();
    let mem = mem();
    let w = Wiring { hv: &hv, mem: &mem };
    let mut dm = manager(MachineKind::Q35);
    dm.add_virtio(&w, "a", fake(), None).unwrap();
    dm.finish().unwrap();
    let Placement::Pci { bdf } = dm.devices()[0].placement else {
        panic!("q35 places on PCI");
    };
    let bar = |dm: &DeviceManager| {
        dm.buses
            .mmio
            .ranges()
            .into_iter()
            .find(|r| r.0.starts_with(&bdf.to_string()))
            .map(|r| r.1)
    };
    let old = bar(&dm).unwrap();
    let ecam = crate::arch::layout::PCI_ECAM;
    let reg = ecam + (u64::from(bdf.dev) << 15) + 0x10;
    let new = old + 0x100_0000;
    let a = dm
        .buses
        .mmio
        .write(reg, &(new as u32).to_le_bytes())
        .unwrap();
    let BusAction::Platform(req) = a else {
        panic!("{a:?}");
    };
    assert_eq!(req, PlatformRequest::BarsMoved { bdf });
    dm.handle(req, &RecordingHost::default());
    assert_eq!(bar(&dm), Some(new));
    let mut b = [0u8; 4];
    assert!(
        !dm.buses.mmio.read(old, &mut b),
        "the old range answers no more"
    );
    assert!(dm.buses.mmio.read(new, &mut b), "the new one does");
}

#[test]
fn a_bar_refused_under_another_answers_again_once_that_one_moves_away() {
    let hv = FakeHv::default();
    let mem = mem();
    let w = Wiring { hv: &hv, mem: &mem };
    let mut dm = manager(MachineKind::Q35);
    dm.add_virtio(&w, "a", fake(), None).unwrap();
    dm.add_virtio(&w, "b", fake(), None).unwrap();
    dm.finish().unwrap();
    let bdf = |i: usize| match dm.devices()[i].placement {
        Placement::Pci { bdf } => bdf,
        Placement::Mmio { .. } => panic!("q35 places on PCI"),
    };
    let (a, b) = (bdf(0), bdf(1));
    let base = |d: &DeviceManager, f: casemate_devices::pci::Bdf| {
        d.buses
            .mmio
            .ranges()
            .into_iter()
            .find(|r| r.0.starts_with(&f.to_string()))
            .map(|r| r.1)
    };
    let (a_at, b_at) = (base(&dm, a).unwrap(), base(&dm, b).unwrap());
    let ecam = crate::arch::layout::PCI_ECAM;
    let bar0 = |f: casemate_devices::pci::Bdf| ecam + (u64::from(f.dev) << 15) + 0x10;
    let host = RecordingHost::default();
    // b moves onto a: refused, b has no range.
    let act = dm
        .buses
        .mmio
        .write(bar0(b), &(a_at as u32).to_le_bytes())
        .unwrap();
    let BusAction::Platform(req) = act else {
        panic!("{act:?}")
    };
    dm.handle(req, &host);
    assert_eq!(base(&dm, b), None);
    // a moves away: b's BAR, still at a's old place, answers there now.
    let act = dm
        .buses
        .mmio
        .write(bar0(a), &(b_at as u32).to_le_bytes())
        .unwrap();
    let BusAction::Platform(req) = act else {
        panic!("{act:?}")
    };
    dm.handle(req, &host);
    assert_eq!(base(&dm, a), Some(b_at));
    assert_eq!(base(&dm, b), Some(a_at));
}

/// A FakeVfio function with one 16 KiB memory BAR and MSI-X in it.
fn fake_vfio() -> Arc<casemate_devices::vfio::fake::FakeVfio> {
    use casemate_devices::pci::BarKind;
    use casemate_devices::vfio::fake::{FakeBar, FakeMsix, FakeSpec, FakeVfio};
    Arc::new(FakeVfio::new(FakeSpec {
        bars: vec![FakeBar {
            index: 0,
            kind: BarKind::Mem32,
            size: 0x4000,
            mmap: true,
            sparse: Vec::new(),
        }],
        msix: Some(FakeMsix {
            vectors: 2,
            table_bar: 0,
            table_offset: 0,
            pba_bar: 0,
            pba_offset: 0x2000,
        }),
        intx: true,
        reset: true,
        ..Default::default()
    }))
}

#[test]
fn an_assigned_device_gets_a_slot_a_decoding_bar_and_microvm_refuses_it() {
    for kind in [MachineKind::Q35, MachineKind::Pc] {
        let hv = FakeHv::default();
        let mem = mem();
        let w = Wiring { hv: &hv, mem: &mem };
        let mut dm = manager(kind);
        let dev = fake_vfio();
        dm.add_vfio(&w, "a", "vfio-user0".into(), dev.clone(), dev.clone())
            .unwrap();
        dm.finish().unwrap();
        let Placement::Pci { bdf } = dm.devices()[0].placement else {
            panic!("not on PCI");
        };
        let root = dm.pci_root().unwrap();
        let f = root.function(bdf).unwrap();
        let bars = casemate_devices::pci::root::lock(f).active_bars();
        assert_eq!(bars.len(), 1, "{kind:?}: BAR 0 decodes");
        assert_eq!(bars[0].size, 0x4000);
        let calls = dev.take();
        assert_eq!(
            calls.first(),
            Some(&casemate_devices::vfio::fake::Call::Reset),
            "reset first"
        );
        assert!(calls
            .iter()
            .any(|c| matches!(c, casemate_devices::vfio::fake::Call::DmaMap(_))));
    }
    let hv = FakeHv::default();
    let mem = mem();
    let w = Wiring { hv: &hv, mem: &mem };
    let mut dm = manager(MachineKind::Microvm);
    let dev = fake_vfio();
    let e = dm
        .add_vfio(&w, "a", "vfio-user0".into(), dev.clone(), dev)
        .unwrap_err();
    assert!(e.to_string().contains("has no PCI transport"), "{e}");
}
