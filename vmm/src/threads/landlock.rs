//! The Landlock ruleset the VMM confines itself with once its resources
//! are open. Everything a run needs from the filesystem is opened at
//! start-up (resources.rs: kernel, initrd, disks, the `-snapshot` overlay,
//! which is created and unlinked there, the serial file, entropy sources)
//! and a guest reboot reopens nothing, so the ruleset handles every
//! filesystem and TCP right and grants none: after set-up no path can be
//! opened, created, removed or executed, and no TCP port bound or
//! connected. `runtime_rules` is where a path used after start-up (a QMP
//! or VNC socket, once those exist) would be granted.

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetError, RulesetStatus, ABI,
};

use crate::config::ValidConfig;

/// The newest ABI this code was written against (this host has 7).
const ABI_USED: ABI = ABI::V7;

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("Landlock ruleset")]
    Ruleset(#[from] RulesetError),
    #[error("Landlock rule")]
    Path(#[from] landlock::PathFdError),
    #[error("Landlock is required (-sandbox landlock=required) but {0}")]
    Unavailable(String),
}

/// How the calling thread ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Fully or partly (an older ABI) enforced.
    Enforced { partial: bool },
    /// The kernel has no (enabled) Landlock; why, in words.
    Unavailable(String),
}

/// Paths the VMM still opens after start-up, with the access each needs:
/// none today (see the module doc).
fn runtime_rules(_config: &ValidConfig) -> Vec<(std::path::PathBuf, landlock::BitFlags<AccessFs>)> {
    Vec::new()
}

/// Confine the calling thread (and every thread it starts later) to what
/// `config` needs at run time. Also sets no_new_privs.
pub fn restrict_thread(config: &ValidConfig) -> Result<Outcome, LandlockError> {
    let mut created = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(ABI_USED))?
        .handle_access(AccessNet::from_all(ABI_USED))?
        .create()?;
    for (path, access) in runtime_rules(config) {
        let fd = landlock::PathFd::new(&path)?;
        created = created.add_rule(landlock::PathBeneath::new(fd, access))?;
    }
    let status = created.restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Outcome::Enforced { partial: false },
        RulesetStatus::PartiallyEnforced => Outcome::Enforced { partial: true },
        RulesetStatus::NotEnforced => Outcome::Unavailable(match status.landlock {
            LandlockStatus::NotEnabled => "Landlock is built into this kernel but not enabled \
                (add landlock to the lsm= boot parameter)"
                .into(),
            LandlockStatus::NotImplemented => "this kernel has no Landlock".into(),
            LandlockStatus::Available { .. } => "the ruleset was not enforced".into(),
        }),
    })
}
