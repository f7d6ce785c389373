//! The block I/O engines: what runs parsed requests against the disk in
//! parallel and hands completions back to the worker. The worker sees one
//! type, `IoEngine`, and one completion eventfd, whichever engine runs:
//!
//! ```text
//!   BlockWorker ──submit(Job)/kick()──▶ IoEngine ─┬─ Uring: io_uring READV/WRITEV/FSYNC
//!        ▲                                        │    on the raw file, straight from
//!        │ done_evt (epoll)  take_done(&mut Vec)  │    guest memory; the rest ─▶ pool(1)
//!        └────────────────────────────────────────┴─ Threads: pool of N, Executor
//! ```
//!
//! io_uring is chosen when the image is raw (`DiskImage::raw_file`) and the
//! kernel sets up a ring: no thread hop, no bounce copy, and one syscall per
//! batch. qcow2 keeps the pool: its metadata logic (L2 lookups, allocation,
//! refcounts) lives in `casemate-disk` behind `read_at`/`write_at`, and doing
//! it asynchronously would mean a second implementation of the format.
//! `CASEMATE_BLK_ENGINE=threads|uring|auto` (read at each activation)
//! overrides the choice for benchmarks and tests.

mod exec;
mod pool;
mod uring;

/// Guest buffers as host iovecs; the ATA controllers go direct with them.
pub(crate) use uring::iov;

use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use exec::Executor;
pub use pool::ThreadPool;
pub use uring::{UringEngine, UringSetupError};

use super::request::Request;

/// How writes reach stable storage (`-drive cache=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Host page cache; FLUSH makes data durable.
    Writeback,
    /// Like writeback but bypassing the page cache (O_DIRECT at open).
    None,
    /// Every write is durable before it completes.
    Writethrough,
    /// FLUSH is a no-op: fast, and unsafe across host crashes.
    Unsafe,
}

/// What the guest's discards and zero writes may do to the image
/// (`-drive discard=` and `detect-zeroes=`, as QEMU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZeroPolicy {
    /// `discard=unmap`: DISCARD and WRITE_ZEROES with the UNMAP flag may
    /// deallocate. Off (`discard=ignore`, QEMU's default), DISCARD
    /// completes doing nothing and WRITE_ZEROES writes zeros.
    pub unmap: bool,
    pub detect_zeroes: DetectZeroes,
}

/// `detect-zeroes=`: what a write of all zeros becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DetectZeroes {
    /// A plain write.
    #[default]
    Off,
    /// Over a range that already reads as zeros without being stored,
    /// nothing is written (no allocation); elsewhere a plain write.
    On,
    /// A write-zeroes that may deallocate (needs `unmap`).
    Unmap,
}

/// The largest request the engines accept; the device advertises limits
/// (seg_max x size_max) that keep drivers below it.
pub const MAX_REQUEST: u64 = 32 << 20;

/// The environment variable that overrides the engine choice.
pub const ENGINE_ENV: &str = "CASEMATE_BLK_ENGINE";

/// A request handed to an engine, and its completion.
pub struct Job {
    pub slot: usize,
    pub head: u16,
    pub req: Request,
}

/// A finished request: the status byte is already in guest memory; `len` is
/// what goes into the used ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub slot: usize,
    pub head: u16,
    pub len: u32,
}

/// Which engine to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineChoice {
    /// io_uring for raw images where the kernel has it, else the pool.
    #[default]
    Auto,
    /// Always the thread pool.
    Threads,
    /// io_uring; a disk or kernel that cannot do it still gets the pool,
    /// with a warning.
    Uring,
}

impl EngineChoice {
    /// The choice `CASEMATE_BLK_ENGINE` asks for; unset or unknown is `Auto`.
    pub fn from_env() -> Self {
        match std::env::var(ENGINE_ENV) {
            Err(_) => EngineChoice::Auto,
            Ok(v) => EngineChoice::parse(&v).unwrap_or_else(|| {
                log::warn!("{ENGINE_ENV}={v:?}: expected threads, uring or auto; using auto");
                EngineChoice::Auto
            }),
        }
    }

    pub fn parse(v: &str) -> Option<Self> {
        match v {
            "" | "auto" => Some(EngineChoice::Auto),
            "threads" => Some(EngineChoice::Threads),
            "uring" | "io_uring" => Some(EngineChoice::Uring),
            _ => None,
        }
    }
}

/// Which engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Threads,
    Uring,
}

pub enum IoEngine {
    Threads(ThreadPool),
    /// Boxed: the ring and its slots are large, the pool is small.
    Uring(Box<UringEngine>),
}

/// Sizing for `IoEngine::start`.
pub struct EngineParams {
    pub choice: EngineChoice,
    /// Threads for the pool engine.
    pub threads: usize,
    /// The most requests that can be in flight at once (the sum of the queue
    /// sizes); the ring is sized so that it never overflows.
    pub max_in_flight: usize,
}

impl IoEngine {
    /// The engine `p.choice` asks for and the disk and kernel allow.
    pub fn start(exec: Arc<Executor>, p: &EngineParams) -> std::io::Result<IoEngine> {
        let evt = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        let name = exec.name.clone();
        if p.choice != EngineChoice::Threads {
            let why = match exec.disk.raw_file() {
                None => format!("{} image", exec.disk.format().name()),
                Some(file) => {
                    match UringEngine::new(exec.clone(), file, evt.clone(), p.max_in_flight) {
                        Ok(u) => {
                            log::debug!("{name}: io_uring engine ({} entries)", u.entries());
                            return Ok(IoEngine::Uring(Box::new(u)));
                        }
                        Err(e) => error_chain(&e),
                    }
                }
            };
            if p.choice == EngineChoice::Uring {
                log::warn!("{name}: io_uring engine asked for but not possible ({why})");
            } else {
                log::debug!("{name}: no io_uring engine ({why})");
            }
        }
        log::debug!("{name}: thread-pool engine ({} threads)", p.threads);
        Ok(IoEngine::Threads(ThreadPool::new(exec, p.threads, evt)?))
    }

    pub fn kind(&self) -> EngineKind {
        match self {
            IoEngine::Threads(_) => EngineKind::Threads,
            IoEngine::Uring(_) => EngineKind::Uring,
        }
    }

    /// Queue `job`; it may not start before `kick`. True when it joined a
    /// transfer that the next adjacent request would join too (worth
    /// waiting for before kicking).
    pub fn submit(&mut self, job: Job) -> bool {
        match self {
            IoEngine::Threads(p) => {
                p.submit(job);
                false
            }
            IoEngine::Uring(u) => u.submit(job),
        }
    }

    /// Start everything queued since the last kick (one syscall for io_uring).
    pub fn kick(&mut self) -> std::io::Result<()> {
        match self {
            IoEngine::Threads(_) => Ok(()),
            IoEngine::Uring(u) => u.kick(),
        }
    }

    /// The worker served every queue and waits for the guest (see
    /// `UringEngine::idle`).
    pub fn idle(&mut self) {
        if let IoEngine::Uring(u) = self {
            u.idle();
        }
    }

    /// Readable when completions may be waiting; drain it before `take_done`.
    pub fn done_evt(&self) -> &EventFd {
        match self {
            IoEngine::Threads(p) => p.done_evt(),
            IoEngine::Uring(u) => u.done_evt(),
        }
    }

    /// Append every completion available now to `out`, including those
    /// that completed during `submit`. An error means requests could not be
    /// handed to the kernel (they stay queued and go with the next kick).
    pub fn take_done(&mut self, out: &mut Vec<Done>) -> std::io::Result<()> {
        match self {
            IoEngine::Threads(p) => {
                p.take_done(out);
                Ok(())
            }
            IoEngine::Uring(u) => u.take_done(out),
        }
    }
}

/// `e` and its sources, joined for a one-line log message.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}
