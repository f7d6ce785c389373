//! Thread roles in the VMM and their confinement. Every thread starts
//! through `casemate_devices::threads::spawn_with_role` (re-exported
//! here), which runs the hook `install` sets before the thread body: the
//! hook installs the role's seccomp filter (policies in `seccomp/`, one
//! file per role). `install` also starts the spawner thread, so that each
//! thread's filter is its own role's and not stacked on its creator's.
//! `confine_main` ends start-up: Landlock (`landlock.rs`) on the main and
//! spawner threads (every later thread inherits it), then the main
//! thread's own filter. `-sandbox off` / `--seccomp off` skip the parts.

pub mod escape;
pub mod landlock;
pub mod seccomp;
pub mod selftest;

use std::sync::OnceLock;

pub use casemate_devices::threads::{enter, spawn_with_role, Role};

use crate::config::{LandlockMode, SeccompMode, ValidConfig};
use seccomp::{Filters, SeccompError};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error(transparent)]
    Landlock(#[from] landlock::LandlockError),
    #[error("starting the spawner thread")]
    Spawner(#[source] std::io::Error),
    #[error("the spawner thread did not confine itself")]
    SpawnerGone,
}

static FILTERS: OnceLock<Filters> = OnceLock::new();

/// Build every role's filter, install the SIGSYS handler, start the
/// spawner and install the per-role start hook; once per process (later
/// calls change nothing).
pub fn install(mode: SeccompMode) -> Result<(), SandboxError> {
    let t0 = std::time::Instant::now();
    let built = Filters::build(mode)?;
    log::debug!("seccomp filters compiled in {:?}", t0.elapsed());
    if let Some(filters) = built {
        if FILTERS.get().is_none() {
            fix_malloc_arena_limit();
            seccomp::install_handler().map_err(SeccompError::Handler)?;
            let _ = FILTERS.set(filters);
            casemate_devices::threads::set_start_hook(on_start);
            casemate_devices::threads::start_spawner().map_err(SandboxError::Spawner)?;
        }
    } else {
        casemate_devices::threads::set_start_hook(on_start);
    }
    Ok(())
}

/// glibc's malloc, the first time a thread needs its ninth arena, reads
/// `/sys/devices/system/cpu/online` to size the arena limit: an `openat`
/// no filtered thread may make (seen on a blk worker during a reboot).
/// Setting the limit up front (to glibc's own default, 8 per CPU) means
/// it never looks.
fn fix_malloc_arena_limit() {
    // glibc counts online CPUs, not the cgroup quota available_parallelism
    // reads (three files): the affinity mask is the same count here, cheaply.
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it.
    let cpus = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) == 0 {
            libc::CPU_COUNT(&set).max(1) as usize
        } else {
            1
        }
    };
    let max = i32::try_from(cpus.saturating_mul(8)).unwrap_or(i32::MAX);
    // SAFETY: mallopt only sets a malloc tunable; no memory is passed.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, max) };
}

/// Whether per-role filters are installed in this process.
pub fn filtered() -> bool {
    FILTERS.get().is_some()
}

fn on_start(role: Role) {
    log::trace!(
        "thread {} starts as {role:?}",
        std::thread::current().name().unwrap_or("?")
    );
    if let Some(f) = FILTERS.get() {
        if let Err(e) = f.apply(role) {
            // A thread that cannot be confined must not run unconfined.
            eprintln!("casemate: {e}: {}", std::io::Error::last_os_error());
            std::process::exit(1);
        }
    }
}

/// End of start-up on the main thread, once every resource is open:
/// Landlock on this thread and the spawner (as `config` asks), then the
/// `Main` filter on this thread.
pub fn confine_main(config: &ValidConfig) -> Result<(), SandboxError> {
    let mode = config.sandbox.landlock;
    if mode != LandlockMode::Off {
        let here = landlock::restrict_thread(config)?;
        if filtered() {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let c = config.clone();
            casemate_devices::threads::on_spawner(move || {
                let _ = tx.send(landlock::restrict_thread(&c));
            });
            rx.recv().map_err(|_| SandboxError::SpawnerGone)??;
        }
        match here {
            landlock::Outcome::Enforced { partial } => log::debug!(
                "Landlock: enforced{}",
                if partial { " (partly: older ABI)" } else { "" }
            ),
            landlock::Outcome::Unavailable(why) if mode == LandlockMode::Required => {
                return Err(landlock::LandlockError::Unavailable(why).into());
            }
            landlock::Outcome::Unavailable(why) => eprintln!(
                "casemate: warning: {why}: the VMM keeps its filesystem access \
                 (-sandbox landlock=required makes this an error)"
            ),
        }
    }
    if let Some(p) = &config.sandbox.selftest_open {
        let r = std::fs::File::open(p).map(|_| "opened".to_string());
        eprintln!(
            "casemate: selftest: open {} after set-up: {}",
            p.display(),
            r.unwrap_or_else(|e| e.to_string())
        );
    }
    if let Some(spec) = &config.sandbox.selftest_escape {
        escape::run(spec);
    }
    enter(Role::Main);
    Ok(())
}
