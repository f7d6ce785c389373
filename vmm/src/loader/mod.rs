//! Kernel images into guest memory: ELF (32- or 64-bit, with or without a
//! PVH note) and bzImage, plus the initrd.
//!
//! Owns format detection, the checks that give a bad image a clear error,
//! and where each piece lands. Boot structures (zero page, start_info) are
//! the `boot` module's. bzImage loading is linux-loader's; ELF is ours (see
//! `elf.rs` for why).
//!
//! Files are checked before any bulk read: a regular file (not `/dev/zero`
//! or a pipe), and for a bzImage or an initrd no larger than the RAM it must
//! fit into. Then only what is needed is read, straight into guest memory:
//! an ELF's size does not matter (debug vmlinux files are larger than their
//! segments), its segments are bounded by RAM.

mod elf;

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, KernelLoader};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::arch::layout::{RamLayout, HIMEM};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot open {what} {path}")]
    Open {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {what} {path}")]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is not a regular file")]
    NotRegular { what: &'static str, path: PathBuf },
    #[error("{what} {path} is {size} bytes, larger than the {limit} bytes of guest RAM it must fit into")]
    TooLarge {
        what: &'static str,
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("kernel {0}: not an ELF or bzImage kernel")]
    NotAKernel(PathBuf),
    #[error("kernel {path}: bad ELF: {why}")]
    BadElf { path: PathBuf, why: String },
    #[error("kernel {path}: bad bzImage: {why}")]
    BadBzHeader { path: PathBuf, why: String },
    #[error("kernel {path}: bad bzImage")]
    BadBzImage {
        path: PathBuf,
        #[source]
        source: linux_loader::loader::Error,
    },
    #[error("kernel {path}: needs guest RAM up to {end:#x}, but RAM below the MMIO hole ends at {ram_end:#x}")]
    DoesNotFit {
        path: PathBuf,
        end: u64,
        ram_end: u64,
    },
    #[error("kernel {path}: a segment at {addr:#x} would overwrite the boot area below 1 MiB")]
    Overlaps { path: PathBuf, addr: u64 },
    #[error("initrd {path}: {size} bytes do not fit in guest RAM between the kernel end {kernel_end:#x} and {limit:#x}")]
    InitrdDoesNotFit {
        path: PathBuf,
        size: u64,
        kernel_end: u64,
        limit: u64,
    },
    #[error("writing {what} to guest memory")]
    Memory {
        what: &'static str,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

/// How the loaded kernel wants to be entered.
#[derive(Debug, Clone, Copy)]
pub enum KernelKind {
    /// An ELF: PVH entry if it carries the note, else the 64-bit entry.
    Elf { entry: u64, pvh_entry: Option<u64> },
    /// A bzImage: 64-bit entry at load + 0x200, with its setup header.
    BzImage { load: u64, header: setup_header },
}

#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    pub kind: KernelKind,
    /// First byte past the kernel in guest memory.
    pub end: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadedInitrd {
    pub addr: u64,
    pub size: u64,
}

/// Checks that `f` (opened once by the VMM's resources, as `path`) is a
/// regular file; returns it with its size.
fn open_regular<'f>(
    what: &'static str,
    path: &Path,
    f: &'f File,
) -> Result<(&'f File, u64), LoadError> {
    let m = f.metadata().map_err(|source| LoadError::Read {
        what,
        path: path.into(),
        source,
    })?;
    if !m.is_file() {
        return Err(LoadError::NotRegular {
            what,
            path: path.into(),
        });
    }
    Ok((f, m.len()))
}

fn too_large(what: &'static str, path: &Path, size: u64, limit: u64) -> Result<(), LoadError> {
    if size > limit {
        return Err(LoadError::TooLarge {
            what,
            path: path.into(),
            size,
            limit,
        });
    }
    Ok(())
}

/// What the kernel is read from.
pub enum KernelImage<'a> {
    /// The kernel file the VMM opened at start-up, named `path` in messages.
    File(&'a File),
    /// An image in memory (the embedded probe).
    Bytes(&'a [u8]),
}

/// Load the kernel from `image`; `path` names it in messages. `zeroed`:
/// guest RAM is known to be all zero (an ELF's BSS is then not written).
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    path: &Path,
    image: KernelImage<'_>,
    zeroed: bool,
) -> Result<LoadedKernel, LoadError> {
    let (file, image) = match image {
        KernelImage::File(f) => (Some(open_regular("kernel", path, f)?), None),
        KernelImage::Bytes(b) => (None, Some(b)),
    };
    let slice = image.unwrap_or_default();
    let src: &dyn elf::Source = match &file {
        Some(f) => f,
        None => &slice,
    };
    // Enough for the ELF magic and the bzImage "HdrS" at 0x202.
    let mut head = [0u8; 0x206];
    let n = src.size().min(head.len() as u64) as usize;
    src.read_at(&mut head[..n], 0)
        .map_err(|source| LoadError::Read {
            what: "kernel",
            path: path.into(),
            source,
        })?;
    if head[..n].starts_with(b"\x7fELF") {
        return elf::load(mem, ram, path, src, zeroed);
    }
    if n < head.len() || &head[0x202..0x206] != b"HdrS" {
        return Err(LoadError::NotAKernel(path.into()));
    }
    // linux-loader reads the whole bzImage into guest RAM above 1 MiB.
    let size = src.size();
    too_large("kernel", path, size, ram.low_end.saturating_sub(HIMEM))?;
    check_bzimage(src, size).map_err(|why| LoadError::BadBzHeader {
        path: path.into(),
        why,
    })?;
    let r = match &file {
        None => BzImage::load(
            mem,
            None,
            &mut std::io::Cursor::new(slice),
            Some(GuestAddress(HIMEM)),
        ),
        Some((f, _)) => {
            let mut f = f.try_clone().map_err(|source| LoadError::Read {
                what: "kernel",
                path: path.into(),
                source,
            })?;
            BzImage::load(mem, None, &mut f, Some(GuestAddress(HIMEM)))
        }
    };
    let r = r.map_err(|e| match e {
        linux_loader::loader::Error::Bzimage(
            linux_loader::loader::bzimage::Error::ReadBzImageCompressedKernel,
        ) => LoadError::DoesNotFit {
            path: path.into(),
            end: HIMEM + size,
            ram_end: ram.low_end,
        },
        source => LoadError::BadBzImage {
            path: path.into(),
            source,
        },
    })?;
    let header = r.setup_header.unwrap_or_default();
    Ok(LoadedKernel {
        kind: KernelKind::BzImage {
            load: r.kernel_load.0,
            header,
        },
        end: r.kernel_end,
    })
}

/// The setup header's promises against the file, so a broken bzImage is
/// refused saying which field is wrong (linux-loader's own errors, such as
/// an arithmetic underflow, do not say).
fn check_bzimage(src: &dyn elf::Source, size: u64) -> Result<(), String> {
    let mut h = [0u8; 0x210];
    if size < h.len() as u64 {
        return Err(format!("{size} bytes: too short for a setup header"));
    }
    src.read_at(&mut h, 0)
        .map_err(|e| format!("reading its setup header: {e}"))?;
    let version = u16::from_le_bytes([h[0x206], h[0x207]]);
    if version < 0x200 {
        return Err(format!(
            "boot protocol {}.{:02}: 2.00 or later is needed",
            version >> 8,
            version & 0xff
        ));
    }
    // setup_sects 0 means 4, for historical reasons.
    let setup = if h[0x1f1] == 0 {
        4
    } else {
        u64::from(h[0x1f1])
    };
    let kernel_at = (setup + 1) * 512;
    let syssize = u64::from(u32::from_le_bytes([h[0x1f4], h[0x1f5], h[0x1f6], h[0x1f7]])) * 16;
    if kernel_at >= size {
        return Err(format!(
            "setup_sects={} puts the kernel at byte {kernel_at:#x}, past the file's end ({size:#x})",
            h[0x1f1]
        ));
    }
    if syssize == 0 || kernel_at + syssize > size {
        return Err(format!(
            "syssize says the kernel is {syssize:#x} bytes from {kernel_at:#x}, but the file has {size:#x}"
        ));
    }
    Ok(())
}

/// Place the initrd page-aligned at the top of RAM below `limit`.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    path: &Path,
    file: &File,
    kernel_end: u64,
    limit: u64,
) -> Result<LoadedInitrd, LoadError> {
    use vm_memory::Bytes;
    let (file, size) = open_regular("initrd", path, file)?;
    let top = ram.low_end.min(limit);
    too_large("initrd", path, size, top)?;
    let addr = top.checked_sub(size).map(|a| a & !0xfff);
    let addr = match addr {
        Some(a) if a >= kernel_end.next_multiple_of(0x1000) => a,
        _ => {
            return Err(LoadError::InitrdDoesNotFit {
                path: path.into(),
                size,
                kernel_end,
                limit: top,
            })
        }
    };
    // Straight into guest memory, a chunk at a time.
    let mut buf = vec![0u8; size.min(1 << 20) as usize];
    let mut done = 0;
    while done < size {
        let chunk = &mut buf[..(size - done).min(1 << 20) as usize];
        std::os::unix::fs::FileExt::read_exact_at(file, chunk, done).map_err(|source| {
            LoadError::Read {
                what: "initrd",
                path: path.into(),
                source,
            }
        })?;
        mem.write_slice(chunk, GuestAddress(addr + done))
            .map_err(|source| LoadError::Memory {
                what: "initrd",
                source,
            })?;
        done += chunk.len() as u64;
    }
    Ok(LoadedInitrd { addr, size })
}
