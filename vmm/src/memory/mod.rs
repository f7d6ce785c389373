//! Guest RAM from a validated `MemoryBackendConfig`: backing object
//! (`backing`), vm-memory regions (`mapping`), kernel advice (`advice`),
//! population (`prealloc`, with `steer` picking huge or small pages and
//! `collapse` restoring huge ones afterwards) and hugepage pool checks
//! (`hugetlb`). The result
//! is a plain `GuestMemoryMmap`, so every device works with every backend.
//! Runs on the main thread before the VM exists; `prealloc=on` goes on in
//! background threads while the builder creates the VM, until
//! `GuestRam::populated`. Knows nothing of KVM.

pub mod advice;
pub mod backing;
pub mod collapse;
pub mod hugetlb;
pub mod mapping;
pub mod prealloc;
pub mod steer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::config::validate::human_size;
use crate::config::MemoryBackendConfig;
use advice::Advice;
use mapping::MapFlags;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("memory backend '{id}': memfd_create failed")]
    Memfd {
        id: String,
        #[source]
        source: std::io::Error,
    },
    #[error("memory backend: opening mem-path {}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("memory backend '{id}': sizing the backing file to {size} bytes")]
    Resize {
        id: String,
        size: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("mapping {size:#x} bytes of guest RAM at guest address {gpa:#x}: {why}")]
    Map { gpa: u64, size: u64, why: String },
    #[error("guest RAM size {0:#x} does not fit this host's address space")]
    TooLarge(u64),
    #[error("guest RAM regions: {0}")]
    Layout(String),
    #[error("{what} on {size} bytes of guest RAM")]
    Madvise {
        what: &'static str,
        size: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("mem-lock=on: mlock of {size} bytes of guest RAM (raise RLIMIT_MEMLOCK?)")]
    Mlock {
        size: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("prealloc=on: {method} failed at offset {offset:#x} of {size} bytes of guest RAM")]
    Prealloc {
        method: &'static str,
        offset: u64,
        size: u64,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "hugepages: {size} of guest RAM needs {needed} pages of {page}, but only {free} are free \
         (pool total {total}); raise {}",
        .path.display()
    )]
    HugePoolTooSmall {
        page: String,
        size: String,
        needed: u64,
        free: u64,
        total: u64,
        path: PathBuf,
    },
    #[error("hugepages of {page}: {why} ({} is missing)", .path.display())]
    NoHugePages {
        page: String,
        path: PathBuf,
        why: &'static str,
    },
    #[error("reading the hugepage pool at {}", .path.display())]
    HugePoolRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Guest RAM, mapped and ready for KVM memory slots. With `prealloc=on`
/// it may still be being populated: call `populated` before anything
/// writes it.
#[derive(Debug)]
pub struct GuestRam {
    /// Population still under way; dropped (workers joined) before `mem`
    /// unmaps, since fields drop in declaration order.
    population: Option<Pending>,
    /// Collapsing what prealloc filled with small pages back into huge
    /// ones; joined before `mem` unmaps, like `population`.
    collapse: Option<collapse::Collapser>,
    pub mem: GuestMemoryMmap,
    /// The memfd or file behind guest RAM, kept open so it can be handed to
    /// other processes (share=on); None for anonymous memory.
    pub file: Option<File>,
    /// The page size backing RAM (hugepage size on hugetlb).
    pub page_size: u64,
}

/// A background population and what the log line says about it.
struct Pending {
    run: prealloc::Population,
    summary: String,
    started: Instant,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary)
    }
}

impl GuestRam {
    /// Wait until `prealloc=on` has populated every page, this thread
    /// taking chunks too. Until this returns Ok nothing may write guest
    /// RAM: without MADV_POPULATE_WRITE the population writes zeros over
    /// it. A no-op without prealloc.
    pub fn populated(&mut self) -> Result<(), MemoryError> {
        if let Some(p) = self.population.take() {
            let waited = Instant::now();
            let small = p.run.finish()?;
            log::info!(
                "{}, populated in {:?} (the last {:?} waited for; {} with small pages first)",
                p.summary,
                p.started.elapsed(),
                waited.elapsed(),
                human_size(small.iter().map(|r| r.1 as u64).sum())
            );
            self.collapse = collapse::Collapser::start(&small);
        }
        Ok(())
    }
}

/// Tests that flip or depend on the process-wide THP switch take this, so
/// the steering test cannot turn THP off under the collapse test.
#[cfg(test)]
pub(crate) static THP_SWITCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Guest RAM from which prealloc steers between huge and small pages.
const STEER_FROM: u64 = 1 << 30;

/// Host-side switches that are not backend properties.
#[derive(Debug, Clone, Copy)]
pub struct RamOptions<'a> {
    /// Transparent huge pages for non-hugetlb RAM.
    pub thp: bool,
    /// `-overcommit mem-lock=on`.
    pub mem_lock: bool,
    /// Where sysfs is mounted (tests pass a fake one).
    pub sysfs: &'a Path,
}

/// Build guest RAM for `ranges` (guest address, length) from backend `b`.
/// With `prealloc=on` population starts on background threads and the
/// caller must call `GuestRam::populated` before writing guest RAM (with
/// `mem_lock` it is done here, before mlock).
pub fn build(
    b: &MemoryBackendConfig,
    ranges: &[(u64, u64)],
    opts: RamOptions,
) -> Result<GuestRam, MemoryError> {
    let t0 = Instant::now();
    let back = backing::open(b, opts.sysfs)?;
    // Only prealloc uses threads; finding the default reads cgroup files.
    let threads = match (b.prealloc, b.prealloc_threads) {
        (false, _) => 1,
        (true, Some(n)) => n as usize,
        (true, None) => prealloc::default_threads(),
    };
    let hugetlb = back.hugepage.is_some();
    let anon_private = back.file.is_none() && !b.share;
    let method = prealloc::choose(anon_private, prealloc::populate_write_supported(), threads);
    let flags = MapFlags {
        share: b.share,
        hugetlb,
        populate: b.prealloc && method == prealloc::Method::MapPopulate,
    };
    let mem = mapping::map(ranges, back.file.as_ref(), flags)?;
    let maps: Vec<(usize, usize)> = mem
        .iter()
        .map(|r| (r.as_ptr() as usize, r.len() as usize))
        .collect();
    let adv = Advice {
        thp: (!hugetlb).then_some(opts.thp),
        merge: b.merge,
        dump: b.dump,
    };
    for r in mem.iter() {
        let (addr, len) = (r.as_ptr() as usize, r.len() as usize);
        advice::apply_ram(addr, len, r.start_addr().raw_value(), adv)?;
    }
    let page_size = back.hugepage.unwrap_or(4096);
    // Steering trades huge-page backing for speed until the collapse
    // catches up: worth it only where population takes long, and not with
    // mem-lock, which wants the pages it locks to stay put.
    let steer = b.prealloc
        && anon_private
        && !hugetlb
        && opts.thp
        && !opts.mem_lock
        && method == prealloc::Method::PopulateWrite
        && b.size >= STEER_FROM
        && !steer::thp_disabled_already();
    let summary = format!(
        "guest RAM: {} from {} '{}' ({}{}), prealloc {}",
        human_size(b.size),
        b.kind.qom_type(),
        b.id,
        if b.share { "shared" } else { "private" },
        back.hugepage
            .map(|p| format!(", {} hugepages", human_size(p)))
            .unwrap_or_default(),
        if b.prealloc {
            format!("{} x{threads}", method.name())
        } else {
            "off".into()
        },
    );
    let mut ram = GuestRam {
        population: b.prealloc.then(|| Pending {
            run: prealloc::Population::start(&maps, page_size as usize, method, threads, steer),
            summary: summary.clone(),
            started: t0,
        }),
        collapse: None,
        mem,
        file: back.file,
        page_size,
    };
    if opts.mem_lock {
        ram.populated()?;
        for &(addr, len) in &maps {
            advice::lock(addr as *mut u8, len)?;
        }
    }
    if !b.prealloc {
        log::info!("{summary}, mapped in {:?}", t0.elapsed());
    }
    Ok(ram)
}
