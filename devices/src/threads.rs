//! Thread roles and the one way every thread of the process starts:
//! `spawn_with_role`.
//!
//! This crate sits at the bottom of the dependency graph and some of its
//! backends start threads (the block device's I/O pool), so the role list
//! and the spawn function live here; the VMM installs, once at start-up,
//! the hook that runs first on every new thread with its role (the
//! per-role seccomp filter). Without a hook (unit tests, tools) threads
//! start plainly. Owns no policy itself.

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
}

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

/// Start `body` on a thread named `name` with `role`'s start hook run first.
pub fn spawn_with_role<T, F>(role: Role, name: String, body: F) -> std::io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new().name(name).spawn(move || {
        enter(role);
        body()
    })
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
