//! `probe=bar-move [disk=N] [to=ADDR]`: the VMM must follow a guest that
//! moves a virtio-pci BAR. Takes the block device's BAR holding its common
//! configuration, turns memory decoding off, writes a new address (ADDR, or
//! a free one in the same PCI window), turns decoding back on, checks the
//! old address no longer answers, then runs the whole `probe=blk` sequence
//! through the device at its new address. "No longer answers": the device
//! status read there is not the device's, and a write there does not reach
//! the device. What such a read returns is reported (`old_reads`): all-ones
//! on hardware and Casemate, 0 on QEMU 7.2 (its unassigned-memory reads).

use super::{blk, Ctx, Outcome};
use crate::acpi;
use crate::io::{mmio_read32, mmio_read8, mmio_write8};
use crate::pci::{self, Access, BarAlloc, Bdf, Config, Function, MAX_FUNCS};
use crate::report::Line;
use crate::virtio::find::{self, Found, VIRTIO_ID_BLOCK};
use crate::virtio::pci as vpci;
use crate::virtio::Transport;

const MIB: u64 = 1 << 20;
/// device_status in the virtio-pci common configuration.
const STATUS: u64 = 0x14;
/// Below the IOAPIC, HPET, LAPIC and BIOS area at the top of 4 GiB.
const HOLE_END: u64 = 0xfec0_0000;
/// Distance kept from every other BAR's base: BAR sizes are not probed
/// (sizing each one costs exits and flips decoding on live devices), and
/// firmware packs them far closer than this.
const GUARD: u64 = 64 * MIB;

/// 32-bit memory windows (DWord Address Space descriptors, 0x87, of
/// resource type memory) in the DSDT: what the host bridge's `_CRS` gives
/// PCI. Small ones (the VGA hole) are skipped.
fn crs_windows(out: &mut [(u64, u64); 8]) -> usize {
    let Some(d) = acpi::dsdt() else { return 0 };
    let mut n = 0;
    let mut off = 36;
    while off + 26 <= d.len && n < out.len() {
        let hdr = (d.u8(off), d.u8(off + 1), d.u8(off + 2), d.u8(off + 3));
        if hdr == (Some(0x87), Some(0x17), Some(0), Some(0)) {
            let min = d.u32(off + 10).unwrap_or(0) as u64;
            let max = d.u32(off + 14).unwrap_or(0) as u64;
            if max > min && max - min + 1 >= 16 * MIB {
                out[n] = (min, max + 1);
                n += 1;
            }
            off += 26;
        } else {
            off += 1;
        }
    }
    n
}

/// A free, naturally aligned address for a BAR of `size` at `old`, inside
/// the window that holds `old`: old +- 256/128/64/16 MiB, the first clear of
/// every other BAR (by GUARD), RAM/reserved e820 ranges and ECAM.
/// Returns (address, window, where the window came from).
fn pick_new(ctx: &Ctx, cfg: &Config, me: Bdf, old: u64, size: u64) -> Option<(u64, (u64, u64), &'static str)> {
    let mut wins = [(0u64, 0u64); 8];
    let nw = crs_windows(&mut wins);
    let (win, src) = match wins[..nw].iter().copied().find(|&(lo, hi)| (lo..hi).contains(&old)) {
        Some(w) => (w, "crs"),
        // No _CRS to read (Casemate's 32-bit window is 0xc0000000..0xe0000000).
        None if (0xc000_0000..0xe000_0000).contains(&old) => ((0xc000_0000, 0xe000_0000), "default"),
        None => ((0x8000_0000, HOLE_END), "default"),
    };
    let mut others = [0u64; 6 * MAX_FUNCS];
    let mut no = 0;
    let mut funcs = [Function { bdf: me, vendor: 0, device: 0 }; MAX_FUNCS];
    let nf = pci::enumerate(cfg, &mut funcs).min(MAX_FUNCS);
    for f in &funcs[..nf] {
        let nbars = if cfg.read8(f.bdf, 0x0e) & 0x7f == 1 { 2 } else { 6 };
        for i in 0..nbars {
            let v = cfg.read32(f.bdf, 0x10 + 4 * i);
            if v & 1 == 0 && v & !0xf != 0 && !(f.bdf == me && (v & !0xf) as u64 == old) {
                others[no] = (v & !0xf) as u64;
                no += 1;
            }
        }
    }
    let ecam = match cfg.access {
        Access::Ecam { base, start_bus, end_bus } => (base, base + ((end_bus - start_bus) as u64 + 1) * MIB),
        Access::Cam => (0, 0),
    };
    let overlaps = |a: u64, len: u64, lo: u64, hi: u64| a < hi && lo < a + len;
    for step in [256, 128, 64, 16] {
        let off = step * MIB;
        if off % size.max(4096) != 0 {
            continue;
        }
        for new in [old.checked_add(off), old.checked_sub(off)].into_iter().flatten() {
            let inside = new >= win.0 && new + size <= win.1 && new + size <= HOLE_END;
            let clear = others[..no].iter().all(|&o| o.abs_diff(new) >= GUARD)
                && !ctx.boot.e820().iter().any(|e| overlaps(new, size, e.addr, e.addr + e.size))
                && !overlaps(new, size, ecam.0, ecam.1);
            if inside && clear {
                return Some((new, win, src));
            }
        }
    }
    None
}

pub fn run(ctx: &Ctx) -> Outcome {
    let want = ctx.args.number("disk", 0).map_err(|_| "bad-arg")? as usize;
    let to = ctx.args.number("to", 0).map_err(|_| "bad-arg")?;
    let (found, access) = find::pick(ctx.boot, &ctx.args, VIRTIO_ID_BLOCK, want)?;
    let (Found::Pci { bdf }, Some(access)) = (found, access) else { return Err("bar-move-needs-pci") };
    let cfg = Config { access };
    let Transport::Pci(p) = find::transport(ctx.boot, &ctx.args, found, Some(access))? else {
        return Err("bar-move-needs-pci");
    };
    let bar = pci::bar(&cfg, bdf, p.common_bar).ok_or("pci-bad-bar")?;
    let old = bar.addr;
    let (new, win, src) = if to != 0 {
        (to, (0, 0), "cmdline")
    } else {
        pick_new(ctx, &cfg, bdf, old, bar.size).ok_or("bar-move-no-space")?
    };
    if new % bar.size != 0 || new + bar.size > crate::io::MAPPED_LIMIT || (!bar.is64 && new >> 32 != 0) {
        return Err("bad-arg");
    }
    // Device status (common configuration + 0x14) is the proof of who
    // answers where: reset the device and set ACKNOWLEDGE (1) through the
    // old address; the device must read 1 there now, and keep it at the new
    // address after a write of 0 (a reset) to the old one.
    let common_off = p.common - old;
    let status_at = |base: u64| base + common_off + STATUS;
    mmio_write8(status_at(old), 0);
    mmio_write8(status_at(old), 1);
    let before = mmio_read8(status_at(old));
    if before != 1 {
        return Err("bar-move-no-status");
    }

    let cmd = cfg.read16(bdf, 4);
    cfg.write16(bdf, 4, cmd & !2);
    pci::set_bar(&cfg, bdf, p.common_bar, new, bar.is64);
    cfg.write16(bdf, 4, cmd);
    let now = pci::bar(&cfg, bdf, p.common_bar).ok_or("pci-bad-bar")?;
    // Reported: what the old address reads now (all-ones where nothing
    // decodes it, 0 on QEMU 7.2).
    let old_reads = mmio_read32(old + common_off);
    let old_status = mmio_read8(status_at(old));
    mmio_write8(status_at(old), 0);
    let new_status = mmio_read8(status_at(new));
    Line::topic("bar-move")
        .kv_word("bdf", find::bdf_str(bdf).as_str())
        .kv_u("bar", p.common_bar as u64)
        .kv_hex("size", bar.size)
        .kv_hex("old", old)
        .kv_hex("new", now.addr)
        .kv_hex("before", before as u64)
        .kv_hex("old_reads", old_reads as u64)
        .kv_hex("old_status", old_status as u64)
        .kv_hex("new_status", new_status as u64)
        .kv_word("window_src", src)
        .kv_hex("window_lo", win.0)
        .kv_hex("window_hi", win.1)
        .emit();
    if now.addr != new {
        return Err("bar-move-not-taken");
    }
    if old_status == before {
        return Err("bar-move-old-answers");
    }
    match new_status {
        1 => {}
        0 => return Err("bar-move-old-answers"),
        _ => return Err("bar-move-new-silent"),
    }
    // Reopen from configuration space: the structures are found again at
    // the BAR's new address (no BAR is unassigned, so nothing is placed).
    let mut alloc = BarAlloc::new(access, ctx.boot.e820());
    let p = vpci::open(&cfg, bdf, &mut alloc, false)?;
    if !(new..new + bar.size).contains(&p.common) {
        return Err("bar-move-not-taken");
    }
    let mut b = find::open_blk(Transport::Pci(p), &ctx.args, want, 256)?;
    blk::exercise(&mut b, &ctx.args)
}
