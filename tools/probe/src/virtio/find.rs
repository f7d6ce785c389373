//! Finds virtio devices of one type (block, entropy, ...): virtio-mmio
//! windows from the kernel command line
//! (`virtio_mmio.device=<size>@<base>:<irq>[:<id>]`, as Linux parses it),
//! else from the DSDT (QEMU microvm with ACPI lists them there as LNRO0005
//! devices and leaves the command line alone); then PCI functions 1af4:
//! 0x1040+type (modern) or the type's transitional id. Opens the transport
//! of the one picked, and the block disk on it. Reports what it finds.

use core::sync::atomic::{AtomicBool, Ordering};

use super::blk::Blk;
use super::mmio::{self, Mmio};
use super::pci::{self as vpci};
use super::Transport;
use crate::acpi;
use crate::bootinfo::BootInfo;
use crate::cmdline::{parse_u64, Args};
use crate::pci::{self, Access, BarAlloc, Bdf, Config, Function, MAX_FUNCS};
use crate::report::Line;

const MAX_MMIO: usize = 32;

static LEGACY_SEEN: AtomicBool = AtomicBool::new(false);
pub const VIRTIO_ID_NET: u32 = 1;
pub const VIRTIO_ID_BLOCK: u32 = 2;
pub const VIRTIO_ID_RNG: u32 = 4;
pub const VIRTIO_ID_GPU: u32 = 16;

/// The PCI device ids a virtio device type has: modern 0x1040 + type, and
/// the transitional id (0x1000 + type - 1 for the first ones: 0x1001 block,
/// 0x1005 entropy), which the probe drives through its modern capabilities.
fn pci_ids(typ: u32) -> [u16; 2] {
    let transitional = match typ {
        VIRTIO_ID_NET => 0x1000,
        VIRTIO_ID_BLOCK => 0x1001,
        VIRTIO_ID_RNG => 0x1005,
        _ => 0,
    };
    [0x1040 + typ as u16, transitional]
}

/// Short name for report lines.
fn type_name(typ: u32) -> &'static str {
    match typ {
        VIRTIO_ID_NET => "net",
        VIRTIO_ID_BLOCK => "blk",
        VIRTIO_ID_RNG => "rng",
        VIRTIO_ID_GPU => "gpu",
        _ => "other",
    }
}

/// Which virtio device the PCI id names (0 if none known).
fn pci_type(device: u16) -> u32 {
    match device {
        0x1041..=0x107f => (device - 0x1040) as u32,
        0x1000 => VIRTIO_ID_NET,
        0x1001 => VIRTIO_ID_BLOCK,
        0x1005 => VIRTIO_ID_RNG,
        _ => 0,
    }
}

#[derive(Clone, Copy)]
pub enum Found {
    Mmio { base: u64 },
    Pci { bdf: Bdf },
}

/// `<size>@<base>:<irq>[:<id>]` -> base. Size takes K/M/G suffixes; base
/// is hex with 0x (Linux's memparse accepts decimal too).
pub fn parse_mmio_arg(v: &[u8]) -> Option<(u64, u64, u64)> {
    let at = v.iter().position(|&c| c == b'@')?;
    let (size, rest) = (&v[..at], &v[at + 1..]);
    let mut parts = rest.split(|&c| c == b':');
    let base = parse_u64(parts.next()?)?;
    let irq = parse_u64(parts.next()?)?;
    let (num, shift) = match size.last()? {
        b'K' | b'k' => (&size[..size.len() - 1], 10),
        b'M' | b'm' => (&size[..size.len() - 1], 20),
        b'G' | b'g' => (&size[..size.len() - 1], 30),
        _ => (size, 0),
    };
    let size = parse_u64(num)?.checked_shl(shift)?;
    Some((size, base, irq))
}

fn mmio_from_cmdline(line: &[u8], out: &mut [u64; MAX_MMIO]) -> usize {
    let mut n = 0;
    let key = b"virtio_mmio.device=";
    for w in line.split(|&b| b == b' ' || b == b'\t').filter(|w| w.starts_with(key)) {
        let Some((size, base, irq)) = parse_mmio_arg(&w[key.len()..]) else {
            Line::topic("virtio-mmio").kv_str("bad_arg", w).emit();
            continue;
        };
        if size < 0x100 || !crate::io::phys_ok(base, size) || base % 4 != 0 {
            Line::topic("virtio-mmio").kv_hex("base", base).kv_word("error", "bad-window").emit();
            continue;
        }
        // The irq is not used: the probe polls.
        let _ = irq;
        if n < out.len() {
            out[n] = base;
            n += 1;
        }
    }
    n
}

/// Scans the DSDT for `_HID "LNRO0005"` (a string op 0x0d then the id) and
/// takes the first Memory32Fixed descriptor (0x86, length 9) after it.
fn mmio_from_dsdt(out: &mut [u64; MAX_MMIO]) -> usize {
    let Some(d) = acpi::dsdt() else { return 0 };
    let hid = b"\x0dLNRO0005\x00";
    let mut n = 0;
    let mut off = 36;
    while off + hid.len() as u32 <= d.len && n < out.len() {
        if (0..hid.len() as u32).all(|i| d.u8(off + i) == Some(hid[i as usize])) {
            let from = off + hid.len() as u32;
            for p in from..(from + 128).min(d.len.saturating_sub(12)) {
                if d.u8(p) == Some(0x86) && d.u8(p + 1) == Some(9) && d.u8(p + 2) == Some(0) {
                    let base = d.u32(p + 4).unwrap_or(0) as u64;
                    if base != 0 && base % 4 == 0 {
                        out[n] = base;
                        n += 1;
                    }
                    break;
                }
            }
            off = from;
        } else {
            off += 1;
        }
    }
    n
}

/// All virtio devices of type `typ`, mmio first, in discovery order. Prints
/// one line per virtio device seen.
pub fn devices(boot: &BootInfo, args: &Args, typ: u32, out: &mut [Found]) -> (usize, Option<Access>) {
    let mut n = 0;
    let mut push = |f: Found, n: &mut usize| {
        if *n < out.len() {
            out[*n] = f;
            *n += 1;
        }
    };
    let mut bases = [0u64; MAX_MMIO];
    let mut nb = mmio_from_cmdline(boot.cmdline(), &mut bases);
    let src = if nb > 0 { "cmdline" } else { "dsdt" };
    if nb == 0 {
        nb = mmio_from_dsdt(&mut bases);
    }
    for &base in &bases[..nb] {
        match mmio::identify(base) {
            None => Line::topic("virtio-mmio").kv_hex("base", base).kv_word("error", "bad-magic").emit(),
            Some((_, 0)) => {} // an empty transport slot (QEMU lists all of them)
            Some((version, id)) => {
                let mut l = Line::topic("virtio-mmio");
                l.kv_hex("base", base).kv_u("version", version as u64).kv_u("device_id", id as u64).kv_word("src", src);
                if version != 2 {
                    // Legacy (pre-1.0) register layout: not driven. QEMU
                    // needs -global virtio-mmio.force-legacy=false.
                    l.kv_word("skipped", "legacy");
                    LEGACY_SEEN.store(true, Ordering::Relaxed);
                }
                l.emit();
                if id == typ && version == 2 {
                    push(Found::Mmio { base }, &mut n);
                }
            }
        }
    }

    // `ecam=ADDR` names an ECAM window (buses 0-255) when no MCFG does:
    // QEMU 7.2's microvm,pcie=on has ECAM at 0xe0000000 but no MCFG.
    let ecam_arg = match args.number("ecam", 0) {
        Ok(base) if base != 0 && crate::io::phys_ok(base, 256 << 20) => {
            Some(Access::Ecam { base, start_bus: 0, end_bus: 255 })
        }
        _ => None,
    };
    let access = match args.get("pci") {
        Some(b"cam") => Some(Access::Cam),
        Some(b"ecam") => ecam_arg.or_else(pci::mcfg),
        Some(b"off") => None,
        _ => Some(ecam_arg.or_else(pci::mcfg).unwrap_or(Access::Cam)),
    };
    if let Some(access) = access {
        let cfg = Config { access };
        let mut funcs = [Function { bdf: Bdf { bus: 0, dev: 0, func: 0 }, vendor: 0, device: 0 }; MAX_FUNCS];
        let nf = pci::enumerate(&cfg, &mut funcs).min(MAX_FUNCS);
        let mut l = Line::topic("pci");
        l.kv_word("access", access.name());
        if let Access::Ecam { base, .. } = access {
            l.kv_hex("ecam", base);
        }
        l.kv_u("functions", nf as u64).emit();
        for f in &funcs[..nf] {
            if f.vendor != 0x1af4 {
                continue;
            }
            let ft = pci_type(f.device);
            Line::topic("pci")
                .kv_word("bdf", bdf_str(f.bdf).as_str())
                .kv_hex("vendor", f.vendor as u64)
                .kv_hex("device", f.device as u64)
                .kv_u("blk", (ft == VIRTIO_ID_BLOCK) as u64)
                .kv_word("kind", type_name(ft))
                .emit();
            if pci_ids(typ).contains(&f.device) {
                push(Found::Pci { bdf: f.bdf }, &mut n);
            }
        }
    }
    (n, access)
}

/// "bb:dd.f" without allocation.
pub struct BdfStr([u8; 7]);

impl BdfStr {
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0).unwrap_or("?")
    }
}

pub fn bdf_str(b: Bdf) -> BdfStr {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    BdfStr([
        HEX[(b.bus >> 4) as usize],
        HEX[(b.bus & 15) as usize],
        b':',
        HEX[(b.dev >> 4) as usize],
        HEX[(b.dev & 15) as usize],
        b'.',
        b'0' + b.func,
    ])
}

/// Device `want` of type `typ` in discovery order (the `disk=N`-style
/// argument is the caller's), with the PCI access in use. Prints
/// `probe: blk disks=N disk=M` (other types: `TYPE devices=N index=M`)
/// when there is no such device.
pub fn pick(boot: &BootInfo, args: &Args, typ: u32, want: usize) -> Result<(Found, Option<Access>), &'static str> {
    let mut found = [Found::Mmio { base: 0 }; 16];
    let (n, access) = devices(boot, args, typ, &mut found);
    if want >= n.min(found.len()) {
        let blk = typ == VIRTIO_ID_BLOCK;
        Line::topic(type_name(typ))
            .kv_u(if blk { "disks" } else { "devices" }, n as u64)
            .kv_u(if blk { "disk" } else { "index" }, want as u64)
            .emit();
        let none = if blk { "no-disk" } else { "no-device" };
        return Err(if LEGACY_SEEN.load(Ordering::Relaxed) { "legacy-virtio-mmio" } else { none });
    }
    Ok((found[want], access))
}

/// The transport of a found device. PCI BARs that firmware left unassigned
/// (or `bar_assign=force`) are placed by the probe.
pub fn transport(boot: &BootInfo, args: &Args, f: Found, access: Option<Access>) -> Result<Transport, &'static str> {
    Ok(match f {
        Found::Mmio { base } => Transport::Mmio(Mmio { base }),
        Found::Pci { bdf } => {
            let access = access.ok_or("no-device")?;
            let mut alloc = BarAlloc::new(access, boot.e820());
            let force = args.get("bar_assign") == Some(b"force".as_slice());
            Transport::Pci(vpci::open(&Config { access }, bdf, &mut alloc, force)?)
        }
    })
}

/// Finds block device `disk=N` (default 0), opens it and prints
/// `probe: blk disk=N transport=... capacity_sectors=... features=...`.
pub fn open_disk(boot: &BootInfo, args: &Args, qsize: u16) -> Result<Blk, &'static str> {
    let want = args.number("disk", 0).map_err(|_| "bad-arg")? as usize;
    let (f, access) = pick(boot, args, VIRTIO_ID_BLOCK, want)?;
    let t = transport(boot, args, f, access)?;
    open_blk(t, args, want, qsize)
}

/// Starts virtio-blk on `t` and prints its `probe: blk disk=N ...` line.
pub fn open_blk(t: Transport, args: &Args, want: usize, qsize: u16) -> Result<Blk, &'static str> {
    let no_indirect = args.get("indirect") == Some(b"0".as_slice());
    let blk = Blk::open(t, qsize, no_indirect)?;
    let mut l = Line::topic("blk");
    l.kv_u("disk", want as u64).kv_word("transport", blk.t.name());
    match &blk.t {
        Transport::Mmio(m) => {
            l.kv_hex("base", m.base);
        }
        Transport::Pci(p) => {
            l.kv_word("bdf", bdf_str(p.bdf).as_str())
                .kv_hex("common", p.common)
                .kv_hex("isr", p.isr)
                .kv_hex("bars_assigned", p.assigned as u64);
        }
    }
    l.kv_u("capacity_sectors", blk.capacity)
        .kv_hex("features", blk.offered)
        .kv_hex("negotiated", blk.features)
        .kv_u("event_idx", u64::from(blk.features & super::F_EVENT_IDX != 0))
        .kv_u("queue_size", blk.q.size as u64);
    let mut names = crate::report::TextBuf::new();
    for (bit, name) in super::blk::NAMED {
        if blk.offered & bit != 0 {
            use core::fmt::Write;
            let _ = write!(names, "{}{}", if names.len > 0 { "," } else { "" }, name);
        }
    }
    l.kv_str("named", if names.len > 0 { names.as_bytes() } else { b"none" });
    if blk.seg_max != 0 {
        l.kv_u("seg_max", blk.seg_max as u64);
    }
    l.emit();
    Ok(blk)
}
