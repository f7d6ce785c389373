//! ELF kernels, 32- and 64-bit: program headers, `PT_LOAD` segments and the
//! Xen PVH entry note.
//!
//! Hand-written because linux-loader's ELF loader accepts only ELF64, and
//! QEMU (our users' reference) boots 32-bit PVH ELFs too. One parser for both
//! classes keeps one set of bounds checks; every offset and size read from
//! the file is checked before use, so a truncated or hostile ELF is an error.
//! Headers and notes are read piecewise and segments go straight into guest
//! memory in bounded chunks: the file is never held whole in memory.

use std::path::Path;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{KernelKind, LoadError, LoadedKernel};
use crate::arch::layout::{RamLayout, HIMEM};

const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const EM_386: u16 = 3;
const EM_X86_64: u16 = 62;
/// Linux kernels have a handful of program headers; this bound keeps a
/// hostile `e_phnum` from making us loop over garbage.
const MAX_PHDRS: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Phdr {
    kind: u32,
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

/// Bytes of the kernel, wherever they are: the embedded probe (a slice) or
/// the `-kernel` file.
pub(super) trait Source {
    fn size(&self) -> u64;
    /// Fills `buf` from `off`; the range is inside `size()`.
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()>;
}

impl Source for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        let src = self
            .get(off as usize..off as usize + buf.len())
            .ok_or(std::io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A regular file and the size it had when checked.
impl Source for (&std::fs::File, u64) {
    fn size(&self) -> u64 {
        self.1
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self.0, buf, off)
    }
}

/// Largest piece read into host memory at once (headers, a note, or a
/// chunk of a segment on its way to guest memory).
const CHUNK: u64 = 1 << 20;

struct Reader<'a> {
    b: &'a dyn Source,
}

impl Reader<'_> {
    fn check(&self, off: u64, len: u64) -> Result<(), String> {
        let end = off.checked_add(len).ok_or("offset overflows")?;
        if end > self.b.size() {
            return Err(format!(
                "truncated: needs bytes {off:#x}..{end:#x}, file has {:#x}",
                self.b.size()
            ));
        }
        Ok(())
    }
    fn bytes(&self, off: u64, len: u64) -> Result<Vec<u8>, String> {
        self.check(off, len)?;
        if len > CHUNK {
            return Err(format!("a {len}-byte header item is implausibly large"));
        }
        let mut v = vec![0u8; len as usize];
        self.b
            .read_at(&mut v, off)
            .map_err(|e| format!("read at {off:#x}: {e}"))?;
        Ok(v)
    }
    fn u16(&self, off: u64) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.bytes(off, 2)?.try_into().map_err(|_| "u16")?,
        ))
    }
    fn u32(&self, off: u64) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.bytes(off, 4)?.try_into().map_err(|_| "u32")?,
        ))
    }
    fn u64(&self, off: u64) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.bytes(off, 8)?.try_into().map_err(|_| "u64")?,
        ))
    }
    /// A word of the file's class: 4 bytes for ELF32, 8 for ELF64.
    fn word(&self, off: u64, wide: bool) -> Result<u64, String> {
        if wide {
            self.u64(off)
        } else {
            self.u32(off).map(u64::from)
        }
    }
}

struct Parsed {
    entry: u64,
    phdrs: Vec<Phdr>,
}

fn parse(b: &dyn Source) -> Result<Parsed, String> {
    let r = Reader { b };
    let ident = r.bytes(0, 16)?;
    let wide = match ident[4] {
        1 => false,
        2 => true,
        c => return Err(format!("unknown ELF class {c}")),
    };
    if ident[5] != 1 {
        return Err("not little-endian".into());
    }
    let machine = r.u16(18)?;
    if machine != EM_386 && machine != EM_X86_64 {
        return Err(format!("machine {machine} is not x86"));
    }
    let entry = r.word(24, wide)?;
    let (phoff, phentsize, phnum) = if wide {
        (r.u64(32)?, r.u16(54)?, r.u16(56)?)
    } else {
        (u64::from(r.u32(28)?), r.u16(42)?, r.u16(44)?)
    };
    let want = if wide { 56 } else { 32 };
    if usize::from(phentsize) != want {
        return Err(format!("program header size {phentsize}, expected {want}"));
    }
    if phnum == 0 || usize::from(phnum) > MAX_PHDRS {
        return Err(format!("{phnum} program headers"));
    }
    r.check(phoff, u64::from(phentsize) * u64::from(phnum))
        .map_err(|e| format!("program header table: {e}"))?;
    let mut phdrs = Vec::with_capacity(phnum.into());
    for i in 0..u64::from(phnum) {
        let p = phoff + i * u64::from(phentsize);
        let ph = if wide {
            Phdr {
                kind: r.u32(p)?,
                offset: r.u64(p + 8)?,
                paddr: r.u64(p + 24)?,
                filesz: r.u64(p + 32)?,
                memsz: r.u64(p + 40)?,
            }
        } else {
            Phdr {
                kind: r.u32(p)?,
                offset: r.u32(p + 4)?.into(),
                paddr: r.u32(p + 12)?.into(),
                filesz: r.u32(p + 16)?.into(),
                memsz: r.u32(p + 20)?.into(),
            }
        };
        if ph.kind == PT_LOAD || ph.kind == PT_NOTE {
            r.check(ph.offset, ph.filesz)
                .map_err(|e| format!("segment {i}: {e}"))?;
        }
        if ph.kind == PT_LOAD && ph.filesz > ph.memsz {
            return Err(format!("segment {i}: file size exceeds memory size"));
        }
        phdrs.push(ph);
    }
    if !phdrs.iter().any(|p| p.kind == PT_LOAD && p.memsz > 0) {
        return Err("no loadable segment".into());
    }
    Ok(Parsed { entry, phdrs })
}

/// The PVH entry from a `XEN_ELFNOTE_PHYS32_ENTRY` note, if any.
fn pvh_entry(b: &dyn Source, phdrs: &[Phdr]) -> Result<Option<u64>, String> {
    let r = Reader { b };
    for p in phdrs.iter().filter(|p| p.kind == PT_NOTE) {
        if p.filesz > CHUNK {
            // Walking it 12 bytes at a time would take forever.
            return Err(format!("note segment of {} bytes", p.filesz));
        }
        let mut off = p.offset;
        let end = p.offset + p.filesz;
        while off + 12 <= end {
            let (namesz, descsz, kind) = (r.u32(off)?, r.u32(off + 4)?, r.u32(off + 8)?);
            let name_off = off + 12;
            let desc_off = name_off + u64::from(namesz).next_multiple_of(4);
            let next = desc_off + u64::from(descsz).next_multiple_of(4);
            if next > end {
                return Err("note runs past its segment".into());
            }
            if kind == XEN_ELFNOTE_PHYS32_ENTRY
                && r.bytes(name_off, u64::from(namesz))?.starts_with(b"Xen")
            {
                return match descsz {
                    4 => Ok(Some(r.u32(desc_off)?.into())),
                    8 => Ok(Some(r.u64(desc_off)?)),
                    n => Err(format!("PVH note descriptor of {n} bytes")),
                };
            }
            off = next;
        }
    }
    Ok(None)
}

pub(super) fn load(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    path: &Path,
    b: &dyn Source,
    zeroed: bool,
) -> Result<LoadedKernel, LoadError> {
    let bad = |why: String| LoadError::BadElf {
        path: path.into(),
        why,
    };
    let parsed = parse(b).map_err(bad)?;
    let pvh = pvh_entry(b, &parsed.phdrs).map_err(bad)?;
    let mut end = 0u64;
    for p in parsed
        .phdrs
        .iter()
        .filter(|p| p.kind == PT_LOAD && p.memsz > 0)
    {
        if p.paddr < HIMEM {
            return Err(LoadError::Overlaps {
                path: path.into(),
                addr: p.paddr,
            });
        }
        let seg_end = p.paddr.saturating_add(p.memsz);
        if seg_end > ram.low_end {
            return Err(LoadError::DoesNotFit {
                path: path.into(),
                end: seg_end,
                ram_end: ram.low_end,
            });
        }
        end = end.max(seg_end);
    }
    for p in parsed
        .phdrs
        .iter()
        .filter(|p| p.kind == PT_LOAD && p.memsz > 0)
    {
        copy_segment(mem, path, b, p, zeroed)?;
    }
    Ok(LoadedKernel {
        kind: KernelKind::Elf {
            entry: parsed.entry,
            pvh_entry: pvh,
        },
        end,
    })
}

/// Copies a segment's file bytes into guest memory chunk by chunk, then
/// zeroes its BSS, unless `zeroed` says guest RAM is still all zero (the
/// first boot on anonymous or memfd RAM; a reboot reuses dirty RAM).
/// Touching a multi-MiB BSS only to write zeros costs a millisecond of
/// page faults at start-up.
fn copy_segment(
    mem: &GuestMemoryMmap,
    path: &Path,
    b: &dyn Source,
    p: &Phdr,
    zeroed: bool,
) -> Result<(), LoadError> {
    let mut buf = vec![0u8; CHUNK.min(p.memsz) as usize];
    let mut done = 0;
    while done < p.memsz {
        let n = (p.memsz - done).min(CHUNK) as usize;
        let chunk = &mut buf[..n];
        let from_file = p.filesz.saturating_sub(done).min(n as u64) as usize;
        if from_file == 0 && zeroed {
            break;
        }
        // Chunks wholly in the BSS lie past the file's end: nothing to read.
        if from_file > 0 {
            b.read_at(&mut chunk[..from_file], p.offset + done)
                .map_err(|source| LoadError::Read {
                    what: "kernel",
                    path: path.into(),
                    source,
                })?;
        }
        chunk[from_file..].fill(0);
        mem.write_slice(chunk, GuestAddress(p.paddr + done))
            .map_err(|source| LoadError::Memory {
                what: "kernel segment",
                source,
            })?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF: header, one PT_LOAD, optionally a PVH note.
    pub(crate) fn tiny_elf(wide: bool, paddr: u64, memsz: u64, pvh: Option<u32>) -> Vec<u8> {
        let (ehsize, phsize) = if wide { (64u64, 56u64) } else { (52, 32) };
        let nph = if pvh.is_some() { 2 } else { 1 };
        let data_off = ehsize + phsize * nph;
        let payload = [0x90u8; 16];
        let note_off = data_off + payload.len() as u64;
        let mut b = vec![0u8; ehsize as usize];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = if wide { 2 } else { 1 };
        b[5] = 1;
        b[6] = 1;
        b[16] = 2;
        let machine: u16 = if wide { 62 } else { 3 };
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        let put = |b: &mut Vec<u8>, off: usize, v: u64, w: bool| {
            if w {
                b[off..off + 8].copy_from_slice(&v.to_le_bytes());
            } else {
                b[off..off + 4].copy_from_slice(&(v as u32).to_le_bytes());
            }
        };
        put(&mut b, 24, paddr, wide);
        if wide {
            put(&mut b, 32, ehsize, true);
            b[54..56].copy_from_slice(&(phsize as u16).to_le_bytes());
            b[56..58].copy_from_slice(&(nph as u16).to_le_bytes());
        } else {
            put(&mut b, 28, ehsize, false);
            b[42..44].copy_from_slice(&(phsize as u16).to_le_bytes());
            b[44..46].copy_from_slice(&(nph as u16).to_le_bytes());
        }
        let mut ph = |kind: u32, off: u64, addr: u64, filesz: u64, memsz: u64| {
            let mut p = vec![0u8; phsize as usize];
            p[0..4].copy_from_slice(&kind.to_le_bytes());
            if wide {
                p[8..16].copy_from_slice(&off.to_le_bytes());
                p[24..32].copy_from_slice(&addr.to_le_bytes());
                p[32..40].copy_from_slice(&filesz.to_le_bytes());
                p[40..48].copy_from_slice(&memsz.to_le_bytes());
            } else {
                p[4..8].copy_from_slice(&(off as u32).to_le_bytes());
                p[12..16].copy_from_slice(&(addr as u32).to_le_bytes());
                p[16..20].copy_from_slice(&(filesz as u32).to_le_bytes());
                p[20..24].copy_from_slice(&(memsz as u32).to_le_bytes());
            }
            b.extend_from_slice(&p);
        };
        ph(PT_LOAD, data_off, paddr, payload.len() as u64, memsz);
        if pvh.is_some() {
            ph(PT_NOTE, note_off, 0, 20, 20);
        }
        b.extend_from_slice(&payload);
        if let Some(e) = pvh {
            b.extend_from_slice(&4u32.to_le_bytes());
            b.extend_from_slice(&4u32.to_le_bytes());
            b.extend_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
            b.extend_from_slice(b"Xen\0");
            b.extend_from_slice(&e.to_le_bytes());
        }
        b
    }

    fn mem(size: u64) -> (GuestMemoryMmap, RamLayout) {
        let ram = RamLayout::new(size);
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size as usize)]).unwrap();
        (m, ram)
    }

    #[test]
    fn known_zero_ram_skips_the_bss_and_dirty_ram_gets_it_zeroed() {
        let (m, ram) = mem(16 << 20);
        let elf = tiny_elf(true, 0x100000, 2 * CHUNK, None);
        let bss = GuestAddress(0x100000 + CHUNK + 8);
        m.write_obj(0xaau8, bss).unwrap();
        load(&m, &ram, Path::new("k"), &elf.as_slice(), true).unwrap();
        assert_eq!(
            m.read_obj::<u8>(bss).unwrap(),
            0xaa,
            "zeroed RAM is left alone"
        );
        load(&m, &ram, Path::new("k"), &elf.as_slice(), false).unwrap();
        assert_eq!(
            m.read_obj::<u8>(bss).unwrap(),
            0,
            "a reboot's BSS is zeroed"
        );
    }

    #[test]
    fn a_bss_larger_than_a_chunk_past_the_files_end_loads() {
        // The probe guest's own layout: a few KiB of file, megabytes of
        // BSS, the last chunks lying wholly past the end of the file.
        let (m, ram) = mem(16 << 20);
        let elf = tiny_elf(true, 0x100000, 3 * CHUNK + 0x123, None);
        let k = load(&m, &ram, Path::new("k"), &elf.as_slice(), false).unwrap();
        assert_eq!(k.end, 0x100000 + 3 * CHUNK + 0x123);
    }

    #[test]
    fn loads_both_classes_and_finds_the_pvh_note() {
        let (m, ram) = mem(4 << 20);
        for wide in [false, true] {
            let elf = tiny_elf(wide, 0x100000, 0x2000, Some(0x100004));
            let k = load(&m, &ram, Path::new("k"), &elf.as_slice(), false).unwrap();
            match k.kind {
                KernelKind::Elf { entry, pvh_entry } => {
                    assert_eq!(entry, 0x100000);
                    assert_eq!(pvh_entry, Some(0x100004));
                }
                _ => panic!(),
            }
            assert_eq!(k.end, 0x102000);
            assert_eq!(m.read_obj::<u8>(GuestAddress(0x100000)).unwrap(), 0x90);
            assert_eq!(m.read_obj::<u8>(GuestAddress(0x100010)).unwrap(), 0);
        }
        let k = load(
            &m,
            &ram,
            Path::new("k"),
            &tiny_elf(true, 0x100000, 16, None).as_slice(),
            false,
        )
        .unwrap();
        assert!(matches!(
            k.kind,
            KernelKind::Elf {
                pvh_entry: None,
                ..
            }
        ));
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (m, ram) = mem(4 << 20);
        let elf = tiny_elf(true, 0x100000, 0x2000, Some(0x100004));
        for len in 0..elf.len() {
            let r = load(&m, &ram, Path::new("k"), &&elf[..len], false);
            assert!(r.is_err(), "truncated to {len} bytes loaded");
        }
    }

    #[test]
    fn too_big_or_too_low_is_refused() {
        let (m, ram) = mem(4 << 20);
        let big = tiny_elf(true, 0x100000, 8 << 20, None);
        assert!(matches!(
            load(&m, &ram, Path::new("k"), &big.as_slice(), false),
            Err(LoadError::DoesNotFit { .. })
        ));
        let low = tiny_elf(false, 0x8000, 16, None);
        assert!(matches!(
            load(&m, &ram, Path::new("k"), &low.as_slice(), false),
            Err(LoadError::Overlaps { .. })
        ));
        let wrap = tiny_elf(true, u64::MAX - 4, 16, None);
        assert!(load(&m, &ram, Path::new("k"), &wrap.as_slice(), false).is_err());
    }
}
