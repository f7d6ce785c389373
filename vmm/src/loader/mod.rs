//! Kernel images into guest memory: ELF (32- or 64-bit, with or without a
//! PVH note) and bzImage, plus the initrd.
//!
//! Owns format detection, the checks that give a bad image a clear error,
//! and where each piece lands. Boot structures (zero page, start_info) are
//! the `boot` module's. bzImage loading is linux-loader's; ELF is ours (see
//! `elf.rs` for why).

mod elf;

use std::fs::File;
use std::io::Read;
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
    #[error("kernel {0}: not an ELF or bzImage kernel")]
    NotAKernel(PathBuf),
    #[error("kernel {path}: bad ELF: {why}")]
    BadElf { path: PathBuf, why: String },
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

fn read_all(what: &'static str, path: &Path) -> Result<Vec<u8>, LoadError> {
    let mut f = File::open(path).map_err(|source| LoadError::Open {
        what,
        path: path.into(),
        source,
    })?;
    let mut v = Vec::new();
    f.read_to_end(&mut v).map_err(|source| LoadError::Read {
        what,
        path: path.into(),
        source,
    })?;
    Ok(v)
}

/// Load the kernel at `path`, or `image` (the embedded probe) when given.
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    path: &Path,
    image: Option<&[u8]>,
) -> Result<LoadedKernel, LoadError> {
    let owned;
    let bytes = match image {
        Some(b) => b,
        None => {
            owned = read_all("kernel", path)?;
            &owned
        }
    };
    if bytes.starts_with(b"\x7fELF") {
        return elf::load(mem, ram, path, bytes);
    }
    let is_bzimage = bytes.get(0x202..0x206) == Some(b"HdrS");
    if !is_bzimage {
        return Err(LoadError::NotAKernel(path.into()));
    }
    let mut cursor = std::io::Cursor::new(bytes);
    let r =
        BzImage::load(mem, None, &mut cursor, Some(GuestAddress(HIMEM))).map_err(|e| match e {
            linux_loader::loader::Error::Bzimage(
                linux_loader::loader::bzimage::Error::ReadBzImageCompressedKernel,
            ) => LoadError::DoesNotFit {
                path: path.into(),
                end: HIMEM + bytes.len() as u64,
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

/// Place the initrd page-aligned at the top of RAM below `limit`.
pub fn load_initrd(
    mem: &GuestMemoryMmap,
    ram: &RamLayout,
    path: &Path,
    data: &[u8],
    kernel_end: u64,
    limit: u64,
) -> Result<LoadedInitrd, LoadError> {
    use vm_memory::Bytes;
    let size = data.len() as u64;
    let top = ram.low_end.min(limit);
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
    mem.write_slice(data, GuestAddress(addr))
        .map_err(|source| LoadError::Memory {
            what: "initrd",
            source,
        })?;
    Ok(LoadedInitrd { addr, size })
}
