//! `casemate.mode=rng`: the virtio entropy device through the real Linux
//! driver (virtio_rng behind /dev/hwrng). Names the hwrng the kernel picked
//! and reads 32 bytes from it; fails if none came or all are equal.

use crate::line::Line;
use crate::{failed, read_small, sys, trim, Outcome};

const WANT: usize = 32;

pub fn run() -> Outcome {
    let mut name = [0u8; 64];
    let n = read_small(c"/sys/class/misc/hw_random/rng_current", &mut name)?;
    let fd = sys::open(c"/dev/hwrng", sys::O_RDONLY).map_err(|e| failed("open-hwrng", e, "no-hwrng"))?;
    // A hwrng read may return fewer bytes than asked; a few reads at most.
    let mut buf = [0u8; WANT];
    let mut got = 0;
    for _ in 0..4 {
        if got == WANT {
            break;
        }
        match sys::read(fd, &mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) => {
                let _ = sys::close(fd);
                return Err(failed("read-hwrng", e, "rng-io"));
            }
        }
    }
    let _ = sys::close(fd);
    let mut seen = [false; 256];
    for &b in &buf[..got] {
        seen[b as usize] = true;
    }
    let distinct = seen.iter().filter(|&&s| s).count() as u64;
    Line::topic("rng")
        .text("current", trim(&name[..n]))
        .u("bytes", got as u64)
        .u("distinct", distinct)
        .emit();
    if got == 0 {
        return Err("rng-no-bytes");
    }
    if distinct < 2 {
        return Err("rng-all-equal");
    }
    Ok(())
}
