use super::*;

fn ids() -> PciIds {
    PciIds {
        vendor: 0x1af4,
        device: 0x1042,
        revision: 1,
        class: 0x01,
        subclass: 0x80,
        prog_if: 0,
        subsys_vendor: 0x1af4,
        subsys_id: 0x1100,
    }
}

fn r32(c: &PciConfig, off: u16) -> u32 {
    let mut b = [0u8; 4];
    c.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn w32(c: &mut PciConfig, off: u16, v: u32) {
    c.write(off, &v.to_le_bytes());
}

#[test]
fn identity_registers_are_read_only() {
    let mut c = PciConfig::new(&ids());
    assert_eq!(r32(&c, 0), 0x1042_1af4);
    assert_eq!(r32(&c, 8), 0x0180_0001);
    assert_eq!(r32(&c, 0x2c), 0x1100_1af4);
    for off in [0u16, 8, 0x2c, 0x34] {
        let before = r32(&c, off);
        w32(&mut c, off, 0xdead_beef);
        assert_eq!(r32(&c, off), before, "offset {off:#x}");
    }
    c.set_interrupt(11, 1);
    w32(&mut c, 0x3c, 0xffff_ff05);
    assert_eq!(
        r32(&c, 0x3c),
        0x0000_0105,
        "line writable, pin and the rest not"
    );
}

#[test]
fn command_and_status_masks() {
    let mut c = PciConfig::new(&ids());
    c.write(COMMAND, &0xffffu16.to_le_bytes());
    assert_eq!(c.command(), 0x0547);
    // An error bit the device set clears when the guest writes 1 to it,
    // and writing 0 leaves it alone.
    c.set_u16(STATUS, 1 << 13);
    c.write(STATUS, &0u16.to_le_bytes());
    assert_eq!(c.u16_at(STATUS), 1 << 13);
    c.write(STATUS, &(1u16 << 13).to_le_bytes());
    assert_eq!(c.u16_at(STATUS), 0);
    c.set_interrupt_status(true);
    c.write(STATUS, &0xffffu16.to_le_bytes());
    assert_eq!(c.u16_at(STATUS), STATUS_INTERRUPT, "bit 3 is read-only");
}

#[test]
fn io_bar_sizing() {
    let mut c = PciConfig::new(&ids());
    c.declare_bar(1, BarKind::Io, 0x20).unwrap();
    c.set_bar_addr(1, 0xc040).unwrap();
    assert_eq!(r32(&c, 0x14), 0xc041);
    w32(&mut c, 0x14, 0xffff_ffff);
    assert_eq!(r32(&c, 0x14), !(0x20 - 1) | 1);
    w32(&mut c, 0x14, 0xc080);
    assert_eq!(c.bar_addr(1), Some(0xc080));
    assert!(c.active_bars().is_empty(), "I/O decode is off");
    c.set_command(CMD_IO);
    assert_eq!(
        c.active_bars(),
        vec![BarRange {
            index: 1,
            kind: BarKind::Io,
            addr: 0xc080,
            size: 0x20
        }]
    );
}

#[test]
fn mem32_bar_sizing_keeps_type_bits() {
    let mut c = PciConfig::new(&ids());
    c.declare_bar(0, BarKind::Mem32, 0x1000).unwrap();
    w32(&mut c, 0x10, 0xffff_ffff);
    assert_eq!(r32(&c, 0x10), 0xffff_f000);
    w32(&mut c, 0x10, 0xfebf_f00f);
    assert_eq!(r32(&c, 0x10), 0xfebf_f000, "low type bits stay read-only");
    assert_eq!(r32(&c, 0x14), 0, "undeclared BAR reads zero");
    w32(&mut c, 0x14, 0xffff_ffff);
    assert_eq!(r32(&c, 0x14), 0, "and sizes to zero");
}

#[test]
fn mem64_bar_sizes_both_halves() {
    let mut c = PciConfig::new(&ids());
    c.declare_bar(2, BarKind::Mem64 { prefetchable: true }, 1 << 33)
        .unwrap();
    c.set_bar_addr(2, 0x40_0000_0000).unwrap();
    assert_eq!(r32(&c, 0x18), 0xc);
    assert_eq!(r32(&c, 0x1c), 0x40);
    w32(&mut c, 0x18, 0xffff_ffff);
    w32(&mut c, 0x1c, 0xffff_ffff);
    assert_eq!(r32(&c, 0x18), 0xc, "8 GiB: no low address bits");
    assert_eq!(r32(&c, 0x1c), 0xffff_fffe);
    let mut c = PciConfig::new(&ids());
    c.declare_bar(
        0,
        BarKind::Mem64 {
            prefetchable: false,
        },
        0x8000,
    )
    .unwrap();
    w32(&mut c, 0x10, 0xffff_ffff);
    w32(&mut c, 0x14, 0xffff_ffff);
    assert_eq!(r32(&c, 0x10), 0xffff_8004);
    assert_eq!(r32(&c, 0x14), 0xffff_ffff);
    // One 8-byte ECAM write places both halves.
    c.write(0x10, &0x1_2345_8000u64.to_le_bytes());
    assert_eq!(c.bar_addr(0), Some(0x1_2345_8000));
}

#[test]
fn bad_bar_declarations_are_refused() {
    use PciConfigError::*;
    let mut c = PciConfig::new(&ids());
    let m64 = BarKind::Mem64 {
        prefetchable: false,
    };
    // Each refusal names the BAR and why, not just "an error".
    assert_eq!(
        c.declare_bar(5, m64, 0x1000),
        Err(BarIndex { index: 5 }),
        "no room for the pair"
    );
    assert_eq!(
        c.declare_bar(6, BarKind::Io, 0x10),
        Err(BarIndex { index: 6 })
    );
    assert_eq!(
        c.declare_bar(0, BarKind::Io, 8),
        Err(BarSize { index: 0, size: 8 }),
        "below 16"
    );
    assert_eq!(
        c.declare_bar(0, BarKind::Mem32, 0x3000),
        Err(BarSize {
            index: 0,
            size: 0x3000
        })
    );
    c.declare_bar(0, m64, 0x1000).unwrap();
    assert_eq!(
        c.declare_bar(1, BarKind::Io, 0x10),
        Err(BarTaken { index: 1 }),
        "upper half"
    );
    assert_eq!(
        c.declare_bar(0, BarKind::Io, 0x10),
        Err(BarTaken { index: 0 }),
        "taken"
    );
    assert_eq!(
        c.set_bar_addr(0, 0x1800),
        Err(BarAddr {
            index: 0,
            addr: 0x1800
        }),
        "misaligned"
    );
    assert_eq!(
        c.set_bar_addr(3, 0x1000),
        Err(BarIndex { index: 3 }),
        "undeclared"
    );
    c.declare_bar(2, BarKind::Mem32, 0x1000).unwrap();
    assert_eq!(
        c.set_bar_addr(2, 1 << 32),
        Err(BarAddr {
            index: 2,
            addr: 1 << 32
        }),
        "past 4 GiB"
    );
}

#[test]
fn active_bars_follow_memory_decode_and_skip_unassigned() {
    let mut c = PciConfig::new(&ids());
    c.declare_bar(0, BarKind::Mem32, 0x1000).unwrap();
    c.declare_bar(1, BarKind::Mem32, 0x1000).unwrap();
    c.set_bar_addr(0, 0xfe00_0000).unwrap();
    c.set_command(CMD_MEMORY);
    let active = c.active_bars();
    assert_eq!(active.len(), 1, "BAR 1 still at 0");
    assert_eq!(active[0].addr, 0xfe00_0000);
    c.write(COMMAND, &0u16.to_le_bytes());
    assert!(c.active_bars().is_empty());
}

#[test]
fn capability_chain_walks_from_0x34() {
    let mut c = PciConfig::new(&ids());
    assert_eq!(c.u16_at(STATUS) & STATUS_CAP_LIST, 0);
    let a = c.add_capability(0x09, &[1, 2, 3], &[0, 0xff, 0]).unwrap();
    let b = c.add_capability(0x11, &[0; 10], &[0; 10]).unwrap();
    let d = c.add_capability(0x05, &[0; 2], &[0; 2]).unwrap();
    assert_eq!((a, b, d), (0x40, 0x48, 0x54));
    assert_ne!(c.u16_at(STATUS) & STATUS_CAP_LIST, 0);
    let mut seen = Vec::new();
    let mut p = c.u8_at(CAPABILITIES_POINTER);
    while p != 0 {
        seen.push((p, c.u8_at(p.into())));
        p = c.u8_at(u16::from(p) + 1);
    }
    assert_eq!(seen, vec![(0x40, 0x09), (0x48, 0x11), (0x54, 0x05)]);
    // Only the masked body byte is writable; the header never is.
    c.write(0x40, &[0xaa; 5]);
    assert_eq!(
        [
            c.u8_at(0x40),
            c.u8_at(0x41),
            c.u8_at(0x42),
            c.u8_at(0x43),
            c.u8_at(0x44)
        ],
        [0x09, 0x48, 1, 0xaa, 3]
    );
    assert!(matches!(
        c.add_capability(0x09, &[0; 200], &[0; 200]),
        Err(PciConfigError::NoRoom { .. })
    ));
    assert!(matches!(
        c.add_capability(0x09, &[0; 2], &[0; 1]),
        Err(PciConfigError::MaskLength { .. })
    ));
}

#[test]
fn unimplemented_and_odd_accesses_are_harmless() {
    let mut c = PciConfig::new(&ids());
    for off in [0x28u16, 0x30, 0x40, 0x80, 0xfc, 0x100, 0xffc] {
        w32(&mut c, off, 0xffff_ffff);
        assert_eq!(r32(&c, off), 0, "offset {off:#x}");
    }
    let mut b = [0u8; 3];
    c.read(0x01, &mut b);
    assert_eq!(b, [0x1a, 0x42, 0x10]);
    let mut b = [0u8; 8];
    c.read(0xffe, &mut b);
    assert_eq!(b, [0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    c.write(0xfff, &[1, 2, 3]);
    c.write(u16::MAX, &[1; 16]);
    c.read(u16::MAX, &mut [0; 16]);
    c.write(0x03, &[0xff, 0xff]);
    assert_eq!(r32(&c, 0), 0x1042_1af4);
    assert!(!overlaps(0x10, 4, 0x14, 4));
    assert!(overlaps(0x12, 4, 0x14, 4));
}
