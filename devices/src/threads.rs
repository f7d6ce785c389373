//! Thread roles and the one way every thread of the process starts:
//! `spawn_with_role`.
//!
//! This crate sits at the bottom of the dependency graph and some of its
//! backends start threads (the block device's I/O pool), so the role list
//! and the spawn function live here; the VMM installs, once at start-up,
//! the hook that runs first on every new thread with its role (the
//! per-role seccomp filter). Without a hook (unit tests, tools) threads
//! start plainly. Owns no policy itself.
//!
//! Seccomp filters stack: a thread inherits its creator's filter and adds
//! its own, so it can do only what both allow. To give each role exactly
//! its own policy, the VMM starts one spawner thread (`start_spawner`)
//! before anything is confined, and from then on `spawn_with_role` hands
//! every new thread to it: no role's filter has to cover another role's
//! needs, only the spawner's does (and it runs nothing but spawns).

use std::sync::mpsc;
use std::sync::OnceLock;
use std::thread::JoinHandle;

/// What a thread is for; one seccomp policy per role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `cm-ctl`: device activation, bus changes, vCPU start and stop.
    Ctl,
    /// `cm-vcpuN`: KVM_RUN and exit dispatch.
    Vcpu,
    /// `cm-<device>`: a device's queue worker, by device kind
    /// (`blk`, `rng`, `intx`, ...).
    Worker(&'static str),
    /// `cm-<device>-ioN`: a device backend's helper thread (block I/O pool).
    IoHelper,
    /// `cm-prealloc`: guest RAM population at start-up.
    Prealloc,
    /// `cm-collapse`: background huge page collapse of guest RAM.
    Collapse,
    /// The process's main thread once its resources are open: it starts
    /// and joins one control thread per boot.
    Main,
    /// `cm-spawn`: starts every other thread (see the module doc).
    Spawner,
    /// `cm-qmp`: the QMP and HMP monitors' sockets.
    Qmp,
    /// `cm-vnc`: the VNC server's loop over its client sockets.
    Vnc,
}

impl Role {
    /// The role's name in messages (`worker-blk`, `vcpu`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ctl => "ctl",
            Self::Vcpu => "vcpu",
            Self::Worker("blk") => "worker-blk",
            Self::Worker("rng") => "worker-rng",
            Self::Worker("intx") => "worker-intx",
            Self::Worker("net") => "worker-net",
            Self::Worker("gpu") => "worker-gpu",
            Self::Worker("vga") => "worker-vga",
            Self::Worker(_) => "worker-other",
            Self::IoHelper => "io-helper",
            Self::Prealloc => "prealloc",
            Self::Collapse => "collapse",
            Self::Main => "main",
            Self::Spawner => "spawner",
            Self::Qmp => "qmp",
            Self::Vnc => "vnc",
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();

type Hook = fn(Role);

static HOOK: OnceLock<Hook> = OnceLock::new();

/// Install the function every thread runs first with its role. Only the
/// first call counts: the policy is fixed for the life of the process.
pub fn set_start_hook(hook: Hook) -> bool {
    HOOK.set(hook).is_ok()
}

/// Run the start hook for `role` on the calling thread (the control
/// thread applies its own role this way after set-up).
pub fn enter(role: Role) {
    if let Some(h) = HOOK.get() {
        h(role);
    }
}

/// Start the spawner thread (`cm-spawn`, role `Spawner`); every later
/// `spawn_with_role` goes through it. Call once, before any thread is
/// confined; a second call does nothing.
pub fn start_spawner() -> std::io::Result<()> {
    if SPAWNER.get().is_some() {
        return Ok(());
    }
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("cm-spawn".into())
        .spawn(move || {
            enter(Role::Spawner);
            for job in rx {
                job();
            }
        })?;
    let _ = SPAWNER.set(tx);
    Ok(())
}

/// Run `job` on the spawner thread (the VMM confines it this way); false
/// without a spawner.
pub fn on_spawner(job: impl FnOnce() + Send + 'static) -> bool {
    SPAWNER
        .get()
        .is_some_and(|tx| tx.send(Box::new(job)).is_ok())
}

/// Start `body` on a thread named `name` with `role`'s start hook run first.
pub fn spawn_with_role<T, F>(role: Role, name: String, body: F) -> std::io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let start = move || {
        std::thread::Builder::new().name(name).spawn(move || {
            enter(role);
            body()
        })
    };
    let Some(tx) = SPAWNER.get() else {
        return start();
    };
    let gone = || std::io::Error::other("the spawner thread has ended");
    let (rtx, rrx) = mpsc::sync_channel(1);
    tx.send(Box::new(move || {
        let _ = rtx.send(start());
    }))
    .map_err(|_| gone())?;
    rrx.recv().map_err(|_| gone())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_thread_and_returns_its_value() {
        let h = spawn_with_role(Role::IoHelper, "cm-test-io0".into(), || {
            std::thread::current().name().map(str::to_string)
        })
        .unwrap();
        assert_eq!(h.join().unwrap().as_deref(), Some("cm-test-io0"));
    }
}
