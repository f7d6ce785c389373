//! The host's own ceiling: the same workloads on the same kind of file,
//! from this process through io_uring with O_DIRECT (what the VMMs get
//! with `cache=none`), no VM in between. Host CPU is this process's
//! (`getrusage(RUSAGE_SELF)`, io_uring's workers included); there are no
//! exits.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use io_uring::{opcode, types, IoUring};

use crate::table::{Figures, Workload};

/// Page-aligned buffers for O_DIRECT, freed on drop.
struct Buffers {
    ptr: *mut u8,
    layout: Layout,
}

impl Buffers {
    fn new(bytes: usize) -> Result<Buffers> {
        let layout = Layout::from_size_align(bytes.max(4096), 4096)?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            bail!("allocating {bytes} bytes of I/O buffers");
        }
        Ok(Buffers { ptr, layout })
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

fn self_cpu_s() -> f64 {
    // SAFETY: getrusage writes only the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The `pct`th percentile of `v` (sorted here).
pub fn percentile(v: &mut [f64], pct: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 * pct / 100.0).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// Run `w` on `file` for `ms` milliseconds.
pub fn measure(file: &Path, w: &Workload, ms: u64) -> Result<Figures> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(file)
        .with_context(|| format!("opening {} with O_DIRECT", file.display()))?;
    let blocks = f.metadata()?.len() / w.bs as u64;
    if blocks == 0 {
        bail!("{} is smaller than one {}-byte block", file.display(), w.bs);
    }
    let qd = w.qd as usize;
    let bs = w.bs as usize;
    let bufs = Buffers::new(qd * bs)?;
    let mut ring = IoUring::new(qd.next_power_of_two() as u32).context("creating an io_uring")?;
    let write = w.mode.contains("write");
    let random = w.mode.starts_with("rand");
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = 0u64;
    let mut free: Vec<usize> = (0..qd).collect();
    let mut started = vec![Instant::now(); qd];
    let mut lats = Vec::new();
    let (mut done, mut bytes) = (0u64, 0u64);
    let cpu0 = self_cpu_s();
    let t0 = Instant::now();
    let deadline = Duration::from_millis(ms);
    loop {
        let stop = t0.elapsed() >= deadline;
        while !stop && !free.is_empty() {
            let slot = free.pop().unwrap_or_default();
            let block = if random {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % blocks
            } else {
                let b = next;
                next = (next + 1) % blocks;
                b
            };
            // SAFETY: the slot's buffer lies inside `bufs`.
            let buf = unsafe { bufs.ptr.add(slot * bs) };
            let fd = types::Fd(f.as_raw_fd());
            let off = block * bs as u64;
            let sqe = if write {
                opcode::Write::new(fd, buf, bs as u32).offset(off).build()
            } else {
                opcode::Read::new(fd, buf, bs as u32).offset(off).build()
            };
            started[slot] = Instant::now();
            // SAFETY: the buffer and the file outlive the request: both are
            // kept until every submitted request has completed below.
            unsafe { ring.submission().push(&sqe.user_data(slot as u64)) }
                .map_err(|_| anyhow::anyhow!("io_uring submission queue full"))?;
        }
        if free.len() == qd {
            break;
        }
        ring.submit_and_wait(1).context("io_uring_enter")?;
        for cqe in ring.completion() {
            let slot = cqe.user_data() as usize;
            if cqe.result() != bs as i32 {
                bail!(
                    "io_uring {} of {} bytes returned {}",
                    w.mode,
                    bs,
                    cqe.result()
                );
            }
            lats.push(started[slot].elapsed().as_secs_f64() * 1e6);
            free.push(slot);
            done += 1;
            bytes += bs as u64;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = self_cpu_s() - cpu0;
    let mean = lats.iter().sum::<f64>() / lats.len().max(1) as f64;
    Ok(Figures {
        iops: done as f64 / secs,
        mib_s: bytes as f64 / secs / (1 << 20) as f64,
        mean_lat_us: mean,
        p99_lat_us: percentile(&mut lats, 99.0),
        cpu_s_per_gib: Some(cpu / (bytes as f64 / (1u64 << 30) as f64).max(1e-9)),
        exits_per_io: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_sample() {
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&mut v, 99.0), 99.0);
        assert_eq!(percentile(&mut v, 50.0), 50.0);
        assert_eq!(percentile(&mut [], 99.0), 0.0);
    }

    #[test]
    fn the_ceiling_moves_real_data_through_io_uring() {
        let dir = std::env::temp_dir().join(format!("iobench-ceiling-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("d.raw");
        std::fs::write(&file, vec![7u8; 4 << 20]).unwrap();
        let w = Workload {
            mode: "randwrite",
            bs: 4096,
            qd: 4,
        };
        let f = measure(&file, &w, 50);
        let _ = std::fs::remove_dir_all(&dir);
        let f = f.unwrap();
        assert!(f.iops > 0.0 && f.mib_s > 0.0, "{f:?}");
        assert!(f.p99_lat_us >= f.mean_lat_us * 0.5, "{f:?}");
    }
}
