use std::sync::Arc;

use super::*;
use crate::pci::testing::{FakeMsi, MsiCall};
use crate::pci::PciIds;

const ENABLE: u16 = 1 << 15;
const FMASK: u16 = 1 << 14;

fn state(n: u16) -> (MsixState, Arc<FakeMsi>) {
    let msi = Arc::new(FakeMsi::new(n));
    (MsixState::new(msi.clone()), msi)
}

fn w32(s: &mut MsixState, off: u64, v: u32) {
    s.table_write(off, &v.to_le_bytes());
}

fn r32(s: &MsixState, off: u64) -> u32 {
    let mut b = [0u8; 4];
    s.table_read(off, &mut b);
    u32::from_le_bytes(b)
}

fn program(s: &mut MsixState, v: u16, addr: u64, data: u32) {
    let base = u64::from(v) * 16;
    s.table_write(base, &addr.to_le_bytes());
    w32(s, base + 8, data);
    w32(s, base + 12, 0);
}

fn msg(addr: u64, data: u32) -> Option<MsiMessage> {
    Some(MsiMessage { addr, data })
}

#[test]
fn entries_reset_masked_and_read_back() {
    let (mut s, msi) = state(3);
    assert_eq!(s.table_size(), 3);
    assert_eq!((s.table_len(), s.pba_len()), (48, 8));
    for v in 0..3 {
        assert_eq!(r32(&s, v * 16 + 12), 1, "vector {v} starts masked");
    }
    w32(&mut s, 16, 0xfee0_1003);
    w32(&mut s, 20, 0x1);
    w32(&mut s, 24, 0x4041);
    w32(&mut s, 28, 0xffff_fffe);
    assert_eq!(r32(&s, 16), 0xfee0_1000, "address bits 1:0 read as zero");
    let mut q = [0u8; 8];
    s.table_read(16, &mut q);
    assert_eq!(u64::from_le_bytes(q), 0x1_fee0_1000);
    assert_eq!(r32(&s, 28), 0, "only the mask bit is implemented");
    assert!(msi.take().is_empty(), "MSI-X disabled: nothing routed");
}

#[test]
fn enable_routes_unmasked_vectors_and_disable_unroutes_all() {
    let (mut s, msi) = state(2);
    program(&mut s, 1, 0xfee0_0000, 0x31);
    assert!(msi.take().is_empty());
    s.set_control(ENABLE);
    assert_eq!(msi.take(), vec![MsiCall::Route(1, msg(0xfee0_0000, 0x31))]);
    // While enabled, writes to an unmasked entry and unmasking route.
    w32(&mut s, 24, 0x32);
    assert_eq!(msi.take(), vec![MsiCall::Route(1, msg(0xfee0_0000, 0x32))]);
    program(&mut s, 0, 0xfee0_2000, 0x40);
    // Programming while masked routes nothing until the unmask.
    let calls = msi.take();
    assert_eq!(
        calls.last(),
        Some(&MsiCall::Route(0, msg(0xfee0_2000, 0x40)))
    );
    w32(&mut s, 12, 1);
    w32(&mut s, 8, 0x41);
    assert!(msi.take().is_empty(), "masked: route deferred");
    w32(&mut s, 12, 0);
    assert_eq!(msi.take(), vec![MsiCall::Route(0, msg(0xfee0_2000, 0x41))]);
    s.set_control(0);
    assert_eq!(
        msi.take(),
        vec![MsiCall::Route(0, None), MsiCall::Route(1, None)]
    );
}

#[test]
fn fire_delivers_or_sets_pending_until_unmasked() {
    let (mut s, msi) = state(3);
    assert_eq!(s.fire(0).unwrap(), MsixDelivery::Disabled);
    s.set_control(ENABLE);
    program(&mut s, 0, 0xfee0_0000, 0x30);
    msi.take();
    assert_eq!(s.fire(0).unwrap(), MsixDelivery::Sent);
    assert_eq!(msi.triggers(), vec![0]);
    assert_eq!(s.fire(2).unwrap(), MsixDelivery::Pending, "entry 2 masked");
    assert_eq!(s.fire(3).unwrap(), MsixDelivery::NoVector);
    assert_eq!(s.fire(0xffff).unwrap(), MsixDelivery::NoVector);
    let mut pba = [0u8; 8];
    s.pba_read(0, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 0b100);
    assert!(msi.take().is_empty());
    program(&mut s, 2, 0xfee0_0000, 0x32);
    assert_eq!(
        msi.take(),
        vec![
            MsiCall::Route(2, msg(0xfee0_0000, 0x32)),
            MsiCall::Trigger(2)
        ],
        "routed before the pending interrupt goes out"
    );
    s.pba_read(0, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 0);
}

#[test]
fn function_mask_holds_every_vector() {
    let (mut s, msi) = state(2);
    s.set_control(ENABLE | FMASK);
    program(&mut s, 0, 0xfee0_0000, 0x30);
    program(&mut s, 1, 0xfee0_0000, 0x31);
    msi.take();
    assert_eq!(s.fire(1).unwrap(), MsixDelivery::Pending);
    assert_eq!(s.fire(0).unwrap(), MsixDelivery::Pending);
    assert!(msi.triggers().is_empty());
    let mut half = [0u8; 4];
    s.pba_read(0, &mut half);
    assert_eq!(u32::from_le_bytes(half), 0b11);
    s.set_control(ENABLE);
    assert_eq!(msi.triggers(), vec![0, 1]);
    assert_eq!(s.fire(1).unwrap(), MsixDelivery::Sent);
}

#[test]
fn odd_table_and_pba_accesses_are_harmless() {
    let (mut s, msi) = state(1);
    s.set_control(ENABLE);
    s.table_write(12, &[0]);
    s.table_write(13, &0u32.to_le_bytes());
    s.table_write(4, &0u64.to_le_bytes());
    s.table_write(u64::MAX - 3, &0u32.to_le_bytes());
    s.table_write(0x1000, &0u32.to_le_bytes());
    assert_eq!(r32(&s, 12), 1, "still masked");
    let mut b = [0xaau8; 2];
    s.table_read(0, &mut b);
    assert_eq!(b, [0, 0]);
    let mut b = [0xaau8; 4];
    s.pba_read(0x800, &mut b);
    assert_eq!(b, [0; 4]);
    s.pba_read(u64::MAX - 3, &mut b);
    assert!(msi.take().is_empty());
}

#[test]
fn capability_encodes_layout_and_forwards_control() {
    let mut cfg = PciConfig::new(&PciIds::default());
    let layout = MsixLayout {
        table_bar: 0,
        table_offset: 0x4000,
        pba_bar: 0,
        pba_offset: 0x5000,
    };
    let cap = MsixCap::add(&mut cfg, 3, &layout).unwrap();
    let at = cap.offset();
    assert_eq!(cfg.u8_at(at), MSIX_CAP_ID);
    assert_eq!(cfg.u16_at(at + 2), 2, "table size is N-1");
    assert_eq!(cfg.u32_at(at + 4), 0x4000);
    assert_eq!(cfg.u32_at(at + 8), 0x5000);
    let (mut s, _msi) = state(3);
    cfg.write(at + 2, &0xffffu16.to_le_bytes());
    assert_eq!(
        cfg.u16_at(at + 2),
        0xc002,
        "only enable and mask are writable"
    );
    cap.config_written(&cfg, at, 4, &mut s);
    assert!(s.enabled() && s.function_masked());
    cfg.write(at + 3, &[0x80]);
    cap.config_written(&cfg, at + 3, 1, &mut s);
    assert!(s.enabled() && !s.function_masked());
    cfg.write(at + 4, &[0; 4]);
    cap.config_written(&cfg, at + 4, 4, &mut s);
    assert!(s.enabled(), "writes elsewhere leave the state alone");
    s.reset();
    assert!(!s.enabled());
}
