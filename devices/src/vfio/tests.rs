use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use super::fake::*;
use super::io::{MmapArea, CONFIG_REGION, INTX_IRQ, MSIX_IRQ, MSI_IRQ};
use super::{VfioError, VfioPciFunction, VfioPciParams};
use crate::pci::config::{CMD_BUS_MASTER, CMD_IO, CMD_MEMORY};
use crate::pci::testing::MsiCall;
use crate::pci::{BarKind, MsiMessage, PciDevice, PciIds};

const GIB: u64 = 1 << 30;
const LINE: u8 = 11;
const BAR0_AT: u64 = 4 * GIB;
const BAR2_AT: u64 = 0xc000_0000;
const IO_AT: u64 = 0xc000;
const ROM_AT: u64 = 0xc010_0000;

fn spec() -> FakeSpec {
    FakeSpec {
        ids: PciIds {
            vendor: 0x1af4,
            device: 0x1042,
            class: 0x01,
            subclass: 0x00,
            ..Default::default()
        },
        bars: vec![
            FakeBar {
                index: 0,
                kind: BarKind::Mem64 { prefetchable: true },
                size: 0x10_0000,
                mmap: true,
                sparse: Vec::new(),
            },
            FakeBar {
                index: 2,
                kind: BarKind::Mem32,
                size: 0x4000,
                mmap: true,
                sparse: Vec::new(),
            },
            FakeBar {
                index: 3,
                kind: BarKind::Io,
                size: 0x20,
                mmap: false,
                sparse: Vec::new(),
            },
        ],
        rom: 0x1_0000,
        msi: true,
        msix: Some(FakeMsix {
            vectors: 4,
            table_bar: 2,
            table_offset: 0,
            pba_bar: 2,
            pba_offset: 0x2000,
        }),
        pcie: true,
        intx: true,
        reset: true,
    }
}

struct Rig {
    dev: Arc<FakeVfio>,
    alloc: FakeMsiAlloc,
    intx: Arc<FakeIntxIrqfds>,
    slots: Arc<FakeSlots>,
    f: VfioPciFunction,
}

impl Rig {
    /// The MSI-X vectors (allocated first) and the MSI vector.
    fn msix(&self) -> Arc<FakeMsiIrqfds> {
        self.alloc.get(0)
    }
    fn msi(&self) -> Arc<FakeMsiIrqfds> {
        self.alloc.get(1)
    }
}

fn ram(ranges: &[(u64, usize)]) -> GuestMemoryMmap {
    let r: Vec<_> = ranges.iter().map(|&(a, l)| (GuestAddress(a), l)).collect();
    GuestMemoryMmap::from_ranges(&r).unwrap()
}

fn try_rig(
    spec: FakeSpec,
    prepare: impl FnOnce(&FakeVfio, &FakeMsiAlloc),
) -> Result<Rig, VfioError> {
    let dev = Arc::new(FakeVfio::new(spec));
    let alloc = FakeMsiAlloc::default();
    prepare(&dev, &alloc);
    let intx = Arc::new(FakeIntxIrqfds::new().unwrap());
    let slots = Arc::new(FakeSlots::default());
    let mem = ram(&[(0, 0x10_0000)]);
    let f = VfioPciFunction::new(VfioPciParams {
        name: "fake0".into(),
        io: dev.clone(),
        dma: dev.clone(),
        mem: &mem,
        msi: &alloc,
        intx: Some(intx.clone()),
        intx_line: LINE,
        slots: slots.clone(),
    })?;
    Ok(Rig {
        dev,
        alloc,
        intx,
        slots,
        f,
    })
}

fn rig() -> Rig {
    try_rig(spec(), |_, _| {}).unwrap()
}

/// A rig with every BAR placed and decoding, slots synced, the record
/// emptied.
fn placed() -> Rig {
    let mut r = rig();
    r.f.place_bar(0, BAR0_AT).unwrap();
    r.f.place_bar(2, BAR2_AT).unwrap();
    r.f.place_bar(3, IO_AT).unwrap();
    r.f.place_bar(6, ROM_AT).unwrap();
    r.f.set_command(CMD_IO | CMD_MEMORY | CMD_BUS_MASTER)
        .unwrap();
    r.f.sync_slots().unwrap();
    r.dev.take();
    r.msix().msi.take();
    r
}

fn cr(f: &mut VfioPciFunction, off: u16, len: usize) -> u32 {
    let mut b = [0u8; 4];
    f.config_read(off, &mut b[..len]);
    u32::from_le_bytes(b)
}

fn cw(f: &mut VfioPciFunction, off: u16, len: usize, v: u32) {
    f.config_write(off, &v.to_le_bytes()[..len]);
}

fn bw32(f: &mut VfioPciFunction, bar: u8, off: u64, v: u32) {
    f.bar_write(bar, off, &v.to_le_bytes());
}

fn br32(f: &mut VfioPciFunction, bar: u8, off: u64) -> u32 {
    let mut b = [0u8; 4];
    f.bar_read(bar, off, &mut b);
    u32::from_le_bytes(b)
}

/// Writes the model made to the device's configuration space.
fn config_writes(calls: &[Call]) -> Vec<(u64, Vec<u8>)> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::RegionWrite {
                index: CONFIG_REGION,
                offset,
                data,
            } => Some((*offset, data.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn bars_size_as_their_kinds_and_the_device_never_sees_the_sizing() {
    let mut r = rig();
    r.dev.take();
    let f = &mut r.f;
    assert_eq!(cr(f, 0x10, 4) & 0xf, 0xc, "64-bit prefetchable");
    for off in (0x10..0x28).step_by(4) {
        cw(f, off, 4, 0xffff_ffff);
    }
    assert_eq!(cr(f, 0x10, 4), 0xfff0_000c, "1 MiB, 64-bit, prefetchable");
    assert_eq!(cr(f, 0x14, 4), 0xffff_ffff, "upper half sizes too");
    assert_eq!(cr(f, 0x18, 4), 0xffff_c000, "16 KiB, 32-bit");
    assert_eq!(cr(f, 0x1c, 4), 0xffff_ffe1, "32 bytes of I/O");
    assert_eq!(cr(f, 0x20, 4), 0, "no BAR 4");
    cw(f, 0x30, 4, 0xffff_f800);
    assert_eq!(cr(f, 0x30, 4), 0xffff_0000, "64 KiB ROM, disabled");
    cw(f, 0x30, 4, 0xffff_ffff);
    assert_eq!(cr(f, 0x30, 4), 0xffff_0001, "ROM enable bit sticks");
    let writes = config_writes(&r.dev.take());
    assert!(writes.is_empty(), "sizing stays in the model: {writes:?}");
    assert_eq!(
        r.f.bar_specs(),
        vec![
            (0, BarKind::Mem64 { prefetchable: true }, 0x10_0000),
            (2, BarKind::Mem32, 0x4000),
            (3, BarKind::Io, 0x20),
            (6, BarKind::Mem32, 0x1_0000),
        ]
    );
}

#[test]
fn odd_region_sizes_round_up_to_a_power_of_two() {
    let mut s = spec();
    s.bars[1].size = 0x3000;
    s.msix = None;
    let r = try_rig(s, |_, _| {}).unwrap();
    assert!(r.f.bar_specs().contains(&(2, BarKind::Mem32, 0x4000)));
}

#[test]
fn placed_bars_decode_and_their_mappable_areas_become_slots_minus_msix_pages() {
    let r = placed();
    let bars: Vec<_> =
        r.f.active_bars()
            .iter()
            .map(|b| (b.index, b.addr, b.size))
            .collect();
    assert_eq!(
        bars,
        vec![
            (0, BAR0_AT, 0x10_0000),
            (2, BAR2_AT, 0x4000),
            (3, IO_AT, 0x20),
            (6, ROM_AT, 0x1_0000),
        ]
    );
    assert_eq!(
        r.slots.ranges(),
        vec![
            (BAR2_AT + 0x1000, 0x1000),
            (BAR2_AT + 0x3000, 0x1000),
            (BAR0_AT, 0x10_0000),
        ],
        "table page 0 and PBA page 2 of BAR 2 trap; the I/O BAR and ROM never map"
    );
}

#[test]
fn slots_follow_the_bar_when_the_guest_moves_it_without_mapping_again() {
    let mut r = placed();
    cw(&mut r.f, 0x18, 4, 0xd000_0000);
    cw(&mut r.f, 0x10, 4, 0x8000_0000);
    cw(&mut r.f, 0x14, 4, 0x1);
    r.f.sync_slots().unwrap();
    let new0 = 0x1_8000_0000;
    assert_eq!(
        r.slots.ranges(),
        vec![
            (0xd000_1000, 0x1000),
            (0xd000_3000, 0x1000),
            (new0, 0x10_0000),
        ]
    );
    let calls = r.dev.take();
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Mmap { .. })),
        "the device mappings are reused: {calls:?}"
    );
    // Memory decoding off: every slot goes.
    cw(&mut r.f, 0x04, 2, u32::from(CMD_IO));
    r.f.sync_slots().unwrap();
    assert!(r.slots.ranges().is_empty());
    assert_eq!(r.f.active_bars().len(), 1, "only the I/O BAR decodes");
}

#[test]
fn sparse_areas_are_honoured() {
    let mut s = spec();
    s.msix = None;
    s.bars[0].sparse = vec![
        MmapArea {
            offset: 0x8000,
            size: 0x8000,
        },
        // Not page-aligned at either end: shrinks to whole pages.
        MmapArea {
            offset: 0x2_0800,
            size: 0x2000,
        },
    ];
    let mut r = try_rig(s, |_, _| {}).unwrap();
    r.f.place_bar(0, BAR0_AT).unwrap();
    r.f.set_command(CMD_MEMORY).unwrap();
    r.f.sync_slots().unwrap();
    assert_eq!(
        r.slots.ranges(),
        vec![(BAR0_AT + 0x8000, 0x8000), (BAR0_AT + 0x2_1000, 0x1000)]
    );
}

#[test]
fn capability_list_hides_power_management_and_vpd() {
    let mut r = rig();
    let f = &mut r.f;
    assert_ne!(cr(f, 0x06, 2) & 0x10, 0, "status says there is a list");
    let mut ids = Vec::new();
    let mut at = cr(f, 0x34, 1) as u16;
    while at != 0 && ids.len() < 16 {
        ids.push((cr(f, at, 1) as u8, at as u8));
        at = cr(f, at + 1, 1) as u16;
    }
    assert_eq!(ids, vec![(0x05, MSI_AT), (0x11, MSIX_AT), (0x10, PCIE_AT)]);
    let msi_ctrl = cr(f, u16::from(MSI_AT) + 2, 2);
    assert_eq!(msi_ctrl, 0x80, "64-bit; one vector, no per-vector masking");
    assert_eq!(cr(f, 0x100, 4), 0, "extended capabilities are hidden");
    assert_eq!(cr(f, 0x3d, 1), 1, "INTA#");
    assert_eq!(cr(f, 0x3c, 1), u32::from(LINE));
    // The PCIe capability's registers pass through to the device.
    r.dev.take();
    cw(&mut r.f, u16::from(PCIE_AT) + 8, 2, 0x2810);
    assert_eq!(
        config_writes(&r.dev.take()),
        vec![(u64::from(PCIE_AT) + 8, vec![0x10, 0x28])]
    );
    assert_eq!(cr(&mut r.f, u16::from(PCIE_AT) + 8, 2), 0x2810);
    // Writes to capability headers are dropped.
    cw(&mut r.f, 0x34, 1, 0x40);
    assert_eq!(cr(&mut r.f, 0x34, 1), u32::from(MSI_AT));
    assert!(config_writes(&r.dev.take()).is_empty());
}

#[test]
fn a_device_without_capabilities_shows_no_list() {
    let mut s = spec();
    s.msi = false;
    s.msix = None;
    s.pcie = false;
    let mut r = try_rig(s, |_, _| {}).unwrap();
    assert_eq!(cr(&mut r.f, 0x06, 2) & 0x10, 0);
    assert_eq!(cr(&mut r.f, 0x34, 1), 0);
}

#[test]
fn intx_is_wired_at_start_with_the_resample_fd_as_unmask() {
    let r = rig();
    let calls = r.dev.take();
    let trig = r.intx.trigger.as_raw_fd();
    let res = r.intx.resample.as_raw_fd();
    let want_set = Call::SetIrqs {
        index: INTX_IRQ,
        start: 0,
        fds: vec![trig],
    };
    let want_unmask = Call::UnmaskFd {
        index: INTX_IRQ,
        fd: res,
    };
    let at = calls
        .iter()
        .position(|c| *c == want_set)
        .expect("INTx eventfd set");
    assert_eq!(calls.get(at + 1), Some(&want_unmask), "{calls:?}");
    // The device raising INTx signals the trigger fd the hypervisor gave.
    assert!(r.dev.signal(INTX_IRQ, 0));
    assert_eq!(r.intx.trigger.read().unwrap(), 1);
}

#[test]
fn a_device_without_intx_gets_pin_zero_and_no_intx_calls() {
    let mut s = spec();
    s.intx = false;
    let mut r = try_rig(s, |_, _| {}).unwrap();
    assert_eq!(cr(&mut r.f, 0x3d, 1), 0);
    let calls = r.dev.take();
    assert!(!calls.iter().any(|c| matches!(
        c,
        Call::SetIrqs {
            index: INTX_IRQ,
            ..
        } | Call::UnmaskFd { .. }
    )));
}

fn enable_msix(r: &mut Rig) {
    cw(&mut r.f, u16::from(MSIX_AT) + 2, 2, 0x8000);
}

fn program(r: &mut Rig, v: u64, addr: u32, data: u32, masked: bool) {
    let e = v * 16;
    bw32(&mut r.f, 2, e, addr);
    bw32(&mut r.f, 2, e + 4, 0);
    bw32(&mut r.f, 2, e + 8, data);
    bw32(&mut r.f, 2, e + 12, u32::from(masked));
}

#[test]
fn msix_enable_turns_intx_off_and_hands_every_vector_an_eventfd() {
    let mut r = placed();
    enable_msix(&mut r);
    assert_eq!(
        cr(&mut r.f, u16::from(MSIX_AT) + 2, 2),
        0x8003,
        "enabled, 4 vectors"
    );
    let calls = r.dev.take();
    assert_eq!(calls[0], Call::DisableIrqs { index: INTX_IRQ });
    let Call::SetIrqs { index, start, fds } = &calls[1] else {
        panic!("{calls:?}");
    };
    assert_eq!((*index, *start, fds.len()), (MSIX_IRQ, 0, 4));
    let irqfds: Vec<_> = (0..4).map(|v| r.msix().fd(v)).collect();
    assert!(
        fds.iter().all(|fd| !irqfds.contains(fd)),
        "all vectors start masked: none reaches its irqfd"
    );
    // Disabling goes back to INTx.
    cw(&mut r.f, u16::from(MSIX_AT) + 2, 2, 0);
    let calls = r.dev.take();
    assert_eq!(calls[0], Call::DisableIrqs { index: MSIX_IRQ });
    assert!(matches!(
        calls[1],
        Call::SetIrqs {
            index: INTX_IRQ,
            ..
        }
    ));
}

#[test]
fn msix_table_writes_become_routes_and_unmasked_vectors_get_their_irqfd() {
    let mut r = placed();
    enable_msix(&mut r);
    r.dev.take();
    r.msix().msi.take();
    program(&mut r, 2, 0xfee0_1000, 0x41, false);
    let msg = MsiMessage {
        addr: 0xfee0_1000,
        data: 0x41,
    };
    assert!(r.msix().msi.take().contains(&MsiCall::Route(2, Some(msg))));
    assert_eq!(
        r.dev.take(),
        vec![Call::SetIrqs {
            index: MSIX_IRQ,
            start: 2,
            fds: vec![r.msix().fd(2)],
        }]
    );
    // The device firing vector 2 signals the irqfd KVM routes.
    assert!(r.dev.signal(MSIX_IRQ, 2));
    assert!(r.msix().fired(2));
    assert_eq!(br32(&mut r.f, 2, 2 * 16 + 8), 0x41, "the table reads back");
    assert_eq!(br32(&mut r.f, 2, 0x2000), 0, "nothing pending");
}

#[test]
fn a_masked_vector_pends_in_the_pba_and_is_delivered_on_unmask() {
    let mut r = placed();
    enable_msix(&mut r);
    program(&mut r, 1, 0xfee0_0000, 0x31, true);
    r.dev.take();
    r.msix().msi.take();
    assert!(
        r.dev.signal(MSIX_IRQ, 1),
        "the device holds an eventfd for it"
    );
    assert!(!r.msix().fired(1), "not the irqfd");
    assert_eq!(br32(&mut r.f, 2, 0x2000), 1 << 1, "PBA bit 1");
    assert!(
        r.msix().msi.triggers().is_empty(),
        "nothing delivered while masked"
    );
    bw32(&mut r.f, 2, 16 + 12, 0);
    assert_eq!(r.msix().msi.triggers(), vec![1], "delivered once on unmask");
    assert_eq!(br32(&mut r.f, 2, 0x2000), 0, "and no longer pending");
    assert_eq!(
        r.dev.take(),
        vec![Call::SetIrqs {
            index: MSIX_IRQ,
            start: 1,
            fds: vec![r.msix().fd(1)],
        }]
    );
    // Function mask: every vector moves off its irqfd.
    cw(&mut r.f, u16::from(MSIX_AT) + 2, 2, 0xc000);
    let calls = r.dev.take();
    assert_eq!(calls.len(), 1, "only vector 1 was live: {calls:?}");
    assert!(r.dev.signal(MSIX_IRQ, 1));
    assert_eq!(br32(&mut r.f, 2, 0x2000), 1 << 1);
    cw(&mut r.f, u16::from(MSIX_AT) + 2, 2, 0x8000);
    assert_eq!(r.msix().msi.triggers(), vec![1]);
}

#[test]
fn msi_enable_routes_the_message_and_disable_returns_to_intx() {
    let mut r = placed();
    let base = u16::from(MSI_AT);
    cw(&mut r.f, base + 4, 4, 0xfee0_2000);
    cw(&mut r.f, base + 8, 4, 0);
    cw(&mut r.f, base + 12, 2, 0x51);
    r.dev.take();
    r.msi().msi.take();
    cw(&mut r.f, base + 2, 2, 0x1);
    let msg = MsiMessage {
        addr: 0xfee0_2000,
        data: 0x51,
    };
    assert_eq!(r.msi().msi.take(), vec![MsiCall::Route(0, Some(msg))]);
    assert_eq!(
        r.dev.take(),
        vec![
            Call::DisableIrqs { index: INTX_IRQ },
            Call::SetIrqs {
                index: MSI_IRQ,
                start: 0,
                fds: vec![r.msi().fd(0)],
            },
        ]
    );
    assert_eq!(cr(&mut r.f, base + 2, 2), 0x81);
    cw(&mut r.f, base + 2, 2, 0);
    assert_eq!(r.msi().msi.take(), vec![MsiCall::Route(0, None)]);
    let calls = r.dev.take();
    assert_eq!(calls[0], Call::DisableIrqs { index: MSI_IRQ });
    assert!(matches!(
        calls[1],
        Call::SetIrqs {
            index: INTX_IRQ,
            ..
        }
    ));
    assert!(config_writes(&calls).is_empty(), "MSI stays in the model");
}

#[test]
fn every_ram_region_is_dma_mapped_including_above_4g_and_unmapped_on_drop() {
    let dev = Arc::new(FakeVfio::new(spec()));
    let alloc = FakeMsiAlloc::default();
    let mem = ram(&[(0, 0x10_0000), (4 * GIB, 0x20_0000)]);
    let f = VfioPciFunction::new(VfioPciParams {
        name: "fake0".into(),
        io: dev.clone(),
        dma: dev.clone(),
        mem: &mem,
        msi: &alloc,
        intx: None,
        intx_line: 0,
        slots: Arc::new(FakeSlots::default()),
    })
    .unwrap();
    let maps: Vec<_> = dev
        .take()
        .into_iter()
        .filter_map(|c| match c {
            Call::DmaMap(r) => Some(r),
            _ => None,
        })
        .collect();
    let want: Vec<_> = mem
        .iter()
        .map(|r| (r.start_addr().0, r.len(), r.as_ptr() as u64))
        .collect();
    let got: Vec<_> = maps.iter().map(|r| (r.iova, r.size, r.host_addr)).collect();
    assert_eq!(got, want);
    assert_eq!(got[1].0, 4 * GIB);
    drop(f);
    assert_eq!(
        dev.take(),
        vec![
            Call::DmaUnmap {
                iova: 0,
                size: 0x10_0000
            },
            Call::DmaUnmap {
                iova: 4 * GIB,
                size: 0x20_0000
            },
        ]
    );
}

#[test]
fn the_device_is_reset_at_start_and_on_guest_reset() {
    let mut r = placed();
    let _ = r.dev.take();
    enable_msix(&mut r);
    program(&mut r, 0, 0xfee0_0000, 0x21, false);
    r.dev.take();
    r.f.reset().unwrap();
    let calls = r.dev.take();
    assert_eq!(calls[0], Call::DisableIrqs { index: MSIX_IRQ });
    assert!(matches!(
        calls[1],
        Call::SetIrqs {
            index: INTX_IRQ,
            ..
        }
    ));
    assert_eq!(calls.last(), Some(&Call::Reset));
    assert_eq!(cr(&mut r.f, u16::from(MSIX_AT) + 2, 2), 0x0003, "MSI-X off");
    assert_eq!(br32(&mut r.f, 2, 12), 1, "entries masked again");

    let fresh = rig();
    let calls = fresh.dev.take();
    assert_eq!(
        calls.first(),
        Some(&Call::Reset),
        "reset first at start: {calls:?}"
    );
    let mut s = spec();
    s.reset = false;
    let no_reset = try_rig(s, |_, _| {}).unwrap();
    assert!(!no_reset.dev.take().contains(&Call::Reset));
}

#[test]
fn bar_accesses_reach_the_device_by_region_offset() {
    let mut r = placed();
    bw32(&mut r.f, 2, 0x1004, 0xdead_beef);
    assert_eq!(r.dev.region_byte(2, 0x1004), 0xef);
    assert_eq!(br32(&mut r.f, 2, 0x1004), 0xdead_beef);
    r.f.bar_write(3, 0x4, &[0x5a]);
    assert_eq!(r.dev.region_byte(3, 0x4), 0x5a);
    r.dev.take();
    // Past the I/O region's end: dropped; ROM writes: dropped.
    r.f.bar_write(3, 0x20, &[1]);
    bw32(&mut r.f, 6, 0, 1);
    assert!(r.dev.take().is_empty());
    // The PBA is read-only.
    bw32(&mut r.f, 2, 0x2000, 0xffff_ffff);
    assert_eq!(br32(&mut r.f, 2, 0x2000), 0);
    assert!(r.dev.take().is_empty());
}

fn err_of(op: FakeOp) -> String {
    let e = try_rig(spec(), |d, _| d.fail(op))
        .err()
        .expect("set-up fails");
    let chain = format!(
        "{e}: {}",
        std::error::Error::source(&e)
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    assert!(chain.contains("fake0"), "names the device: {chain}");
    chain
}

#[test]
fn each_backend_failure_at_start_is_a_clear_error() {
    for (op, says) in [
        (FakeOp::DeviceInfo, "device info failed"),
        (FakeOp::RegionInfo, "region info failed"),
        (FakeOp::RegionRead, "configuration space read failed"),
        (FakeOp::IrqInfo, "INTx irq info failed"),
        (FakeOp::Reset, "device reset failed"),
        (FakeOp::DmaMap, "DMA map of guest RAM 0x0+0x100000 failed"),
        (FakeOp::SetIrqs, "INTx eventfd failed"),
        (FakeOp::UnmaskFd, "INTx resample eventfd failed"),
    ] {
        let chain = err_of(op);
        assert!(chain.contains(says), "{op:?}: {chain}");
        assert!(
            chain.contains(&format!("fake {op:?} failure")),
            "{op:?} cause: {chain}"
        );
    }
    let e = try_rig(spec(), |_, a| a.fail.store(true, Ordering::Relaxed))
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("MSI-X vector allocation failed"),
        "{e}"
    );
}

#[test]
fn a_failed_dma_map_unmaps_what_was_mapped() {
    let dev = Arc::new(FakeVfio::new(spec()));
    // Fails on the second region only: map the first, then refuse.
    struct Second(Arc<FakeVfio>, std::sync::atomic::AtomicU32);
    impl super::DmaMapper for Second {
        fn map(&self, r: &super::DmaRegion) -> std::io::Result<()> {
            if self.1.fetch_add(1, Ordering::Relaxed) == 1 {
                return Err(std::io::Error::other("second map refused"));
            }
            self.0.map(r)
        }
        fn unmap(&self, iova: u64, size: u64) -> std::io::Result<()> {
            self.0.unmap(iova, size)
        }
    }
    let mem = ram(&[(0, 0x10_0000), (4 * GIB, 0x10_0000)]);
    let e = VfioPciFunction::new(VfioPciParams {
        name: "fake0".into(),
        io: dev.clone(),
        dma: Arc::new(Second(dev.clone(), 0.into())),
        mem: &mem,
        msi: &FakeMsiAlloc::default(),
        intx: None,
        intx_line: 0,
        slots: Arc::new(FakeSlots::default()),
    })
    .err()
    .unwrap();
    assert!(e.to_string().contains("0x100000000+0x100000"), "{e}");
    let calls = dev.take();
    assert!(calls.contains(&Call::DmaUnmap {
        iova: 0,
        size: 0x10_0000
    }));
}

#[test]
fn hostile_device_descriptions_are_refused_clearly() {
    let e = try_rig(spec(), |d, _| d.info.lock().unwrap().flags = 0)
        .err()
        .unwrap();
    assert!(e.to_string().contains("is not a PCI device"), "{e}");
    let e = try_rig(spec(), |d, _| d.info.lock().unwrap().num_regions = 3)
        .err()
        .unwrap();
    assert!(e.to_string().contains("has 3 regions"), "{e}");
    let mut s = spec();
    s.bars[1].size = 3 * GIB;
    s.msix = None;
    let e = try_rig(s, |_, _| {}).err().unwrap();
    assert!(e.to_string().contains("BAR 2"), "{e}");
    let mut s = spec();
    s.msix.as_mut().unwrap().pba_offset = 0x4000;
    let e = try_rig(s, |_, _| {}).err().unwrap();
    assert!(
        e.to_string().contains("MSI-X PBA lies in BAR 2 at 0x4000"),
        "{e}"
    );
    let mut s = spec();
    s.msix.as_mut().unwrap().table_bar = 5;
    let e = try_rig(s, |_, _| {}).err().unwrap();
    assert!(e.to_string().contains("MSI-X table lies in BAR 5"), "{e}");
}

#[test]
fn failures_on_guest_accesses_read_all_ones_and_the_model_carries_on() {
    let mut r = placed();
    r.dev.fail(FakeOp::RegionRead);
    r.dev.fail(FakeOp::RegionWrite);
    assert_eq!(cr(&mut r.f, 0x00, 4), 0xffff_ffff);
    assert_eq!(br32(&mut r.f, 2, 0x1000), 0xffff_ffff);
    bw32(&mut r.f, 2, 0x1000, 1);
    cw(&mut r.f, u16::from(PCIE_AT) + 8, 2, 1);
    // Emulated registers still answer.
    assert_eq!(cr(&mut r.f, 0x18, 4), BAR2_AT as u32);
    r.dev.heal(FakeOp::RegionRead);
    assert_eq!(cr(&mut r.f, 0x00, 2), 0x1af4);
    // A failing irq call while the guest enables MSI-X leaves it logged.
    r.dev.fail(FakeOp::SetIrqs);
    enable_msix(&mut r);
    r.dev.heal(FakeOp::SetIrqs);
    r.dev.heal(FakeOp::RegionWrite);
    program(&mut r, 0, 0xfee0_0000, 0x22, false);
    assert!(r.dev.take().iter().any(|c| matches!(
        c,
        Call::SetIrqs {
            index: MSIX_IRQ,
            start: 0,
            ..
        }
    )));
}

#[test]
fn a_slot_failure_is_an_error_and_the_area_keeps_trapping() {
    let mut r = rig();
    r.f.place_bar(2, BAR2_AT).unwrap();
    r.f.set_command(CMD_MEMORY).unwrap();
    r.slots.fail.store(true, Ordering::Relaxed);
    let e = r.f.sync_slots().err().unwrap();
    assert!(
        e.to_string().contains("BAR 2 area at guest 0xc0001000"),
        "{e}"
    );
    bw32(&mut r.f, 2, 0x1000, 7);
    assert_eq!(r.dev.region_byte(2, 0x1000), 7);
    r.slots.fail.store(false, Ordering::Relaxed);
    r.f.sync_slots().unwrap();
    assert_eq!(r.slots.ranges().len(), 2, "a later sync maps them");

    let mut r = rig();
    r.f.place_bar(2, BAR2_AT).unwrap();
    r.f.set_command(CMD_MEMORY).unwrap();
    r.dev.fail(FakeOp::Mmap);
    let e = r.f.sync_slots().err().unwrap();
    assert!(
        std::error::Error::source(&e)
            .unwrap()
            .to_string()
            .contains("Mmap"),
        "{e}"
    );
    assert!(r.slots.ranges().is_empty());
    assert_eq!(br32(&mut r.f, 2, 0x1000), 0, "still reaches the device");
}
