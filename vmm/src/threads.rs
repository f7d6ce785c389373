//! Thread roles in the VMM. Every thread starts through
//! `casemate_devices::threads::spawn_with_role` (re-exported here), which
//! runs the hook `install` sets before the thread body: that hook is where
//! each role's seccomp filter goes (the confinement issue fills in the
//! policies, one per role; until then it records the role in the log at
//! trace level). The control thread enters its own role with `enter`.

pub use casemate_devices::threads::{enter, spawn_with_role, Role};

/// Install the per-role start hook; once per process.
pub fn install() {
    casemate_devices::threads::set_start_hook(on_start);
}

fn on_start(role: Role) {
    log::trace!(
        "thread {} starts as {role:?}",
        std::thread::current().name().unwrap_or("?")
    );
}
