//! Reads the backing chain a qcow2 image's headers name, so the jailer can
//! open it on the host and hand it over with the image (a jailed VMM can
//! open no host path). Reads only the header fields it needs: the magic,
//! the backing file name and the backing format header extension.
//! Casemate's disk crate has the full qcow2 reader; the jailer keeps to
//! libc and std, and a header walk is all it needs.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// `QFI\xfb`.
const QCOW_MAGIC: u32 = 0x5146_49fb;
/// The backing format header extension.
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
/// QEMU's limit on a backing file name.
const MAX_NAME: usize = 1023;
/// Header and extensions are read from this prefix only (QEMU keeps them
/// in the first cluster; 64 KiB is the default cluster size).
const HEADER_BYTES: usize = 64 << 10;
/// Deepest chain handed over (the VMM's `-drive backing.` limit).
pub const MAX_LEVELS: usize = 16;

/// One backing file: its host path and the format its child's header
/// records (`raw` or `qcow2`), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backing {
    pub path: PathBuf,
    pub format: Option<&'static str>,
}

/// The backing chain of the qcow2 image at `image` (the caller knows it is
/// one: `format=qcow2`), top first; empty when it has no backing file or
/// cannot be read (opening it later reports that). The walk goes on below
/// a backing file only when its child's header records it as qcow2 (it
/// never probes a format), and ends at one that cannot be read (its own
/// open reports it). Errors: a chain that loops or is too deep, or a
/// header that names a backing file it does not hold.
pub fn backing_chain(image: &Path) -> Result<Vec<Backing>, String> {
    let mut chain: Vec<Backing> = Vec::new();
    let mut seen = vec![std::fs::canonicalize(image).unwrap_or_else(|_| image.to_path_buf())];
    let mut cur = image.to_path_buf();
    loop {
        let Ok(f) = File::open(&cur) else {
            return Ok(chain);
        };
        let Some((name, format)) =
            read_backing(&f).map_err(|e| format!("{}: {e}", cur.display()))?
        else {
            return Ok(chain);
        };
        let path = resolve(&cur, &name);
        let canon = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if seen.contains(&canon) {
            return Err(format!("the chain loops back to {}", path.display()));
        }
        if chain.len() == MAX_LEVELS {
            return Err(format!("the chain is longer than {MAX_LEVELS} images"));
        }
        seen.push(canon);
        chain.push(Backing {
            path: path.clone(),
            format,
        });
        if format != Some("qcow2") {
            // Never probe: a raw file whose data looks like a qcow2 header
            // (a guest can write one) would make the jailer, as root, open
            // any host file it names.
            return Ok(chain);
        }
        cur = path;
    }
}

/// A backing name relative to the image's folder, as QEMU resolves it.
fn resolve(image: &Path, name: &str) -> PathBuf {
    let p = Path::new(name);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    image.parent().unwrap_or(Path::new("")).join(p)
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The backing file name and recorded format of the qcow2 in `f`; `None`
/// when it is not a qcow2 or names no backing file.
fn read_backing(f: &File) -> Result<Option<(String, Option<&'static str>)>, String> {
    let mut buf = vec![0u8; HEADER_BYTES];
    let mut len = 0;
    while len < buf.len() {
        match f.read_at(&mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read the header: {e}")),
        }
    }
    let b = &buf[..len];
    if be32(b, 0) != Some(QCOW_MAGIC) {
        return Ok(None);
    }
    let version = be32(b, 4).ok_or("a truncated qcow2 header")?;
    let offset = be64(b, 8).ok_or("a truncated qcow2 header")?;
    let size = be32(b, 16).ok_or("a truncated qcow2 header")? as usize;
    if offset == 0 || size == 0 {
        return Ok(None);
    }
    if size > MAX_NAME {
        return Err(format!("a backing file name of {size} bytes"));
    }
    let name = usize::try_from(offset)
        .ok()
        .and_then(|o| b.get(o..o.checked_add(size)?))
        .ok_or("the backing file name lies outside the header cluster")?;
    let name = std::str::from_utf8(name)
        .map_err(|_| "a backing file name that is not UTF-8".to_string())?
        .to_string();
    let ext_start = match version {
        2 => 72,
        _ => be32(b, 100).ok_or("a truncated qcow2 header")? as usize,
    };
    Ok(Some((name, backing_format(b, ext_start)?)))
}

/// The backing format extension's value, if the header has one; one the
/// VMM does not read is an error (as the VMM's own open refuses it).
fn backing_format(b: &[u8], mut at: usize) -> Result<Option<&'static str>, String> {
    // Each extension: type, length, data padded to 8 bytes; type 0 ends.
    while let (Some(kind), Some(len)) = (be32(b, at), be32(b, at + 4)) {
        let len = len as usize;
        let Some(data) = (at + 8).checked_add(len).and_then(|end| b.get(at + 8..end)) else {
            return Ok(None);
        };
        match kind {
            0 => return Ok(None),
            EXT_BACKING_FORMAT => {
                return match data {
                    b"raw" => Ok(Some("raw")),
                    b"qcow2" => Ok(Some("qcow2")),
                    other => Err(format!(
                        "backing file format {:?} is not supported (raw, qcow2)",
                        String::from_utf8_lossy(other)
                    )),
                }
            }
            _ => at = at + 8 + len.div_ceil(8) * 8,
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
