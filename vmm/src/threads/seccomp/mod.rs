//! Per-role seccomp policies as Rust data, and turning them into BPF.
//!
//! Each role's file (`ctl.rs`, `vcpu.rs`, ...) lists the syscalls that
//! role makes after its filter is in place, on top of `base.rs`; every
//! rule carries the reason it is there. `ioctl` is allowed only for the
//! request numbers a role issues, `mmap`/`mprotect` only without
//! PROT_EXEC, and no role may create a socket. `Filters::build` compiles
//! every role once at start-up; a thread installs its own program in the
//! start hook. A syscall outside the list traps (SIGSYS): `sigsys` writes
//! one line naming the role and the syscall and ends the process.

mod base;
mod collapse;
mod ctl;
mod io_helper;
pub mod kvm;
mod main_thread;
mod prealloc;
mod qmp;
mod sigsys;
mod spawner;
mod vcpu;
mod vnc;
mod worker;

use std::collections::{BTreeMap, HashMap};

use casemate_devices::threads::Role;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::config::SeccompMode;

pub use sigsys::{install_handler, set_thread_role, syscall_name, EXIT_CODE};

/// When an allowed syscall's arguments must also match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Args {
    Any,
    /// Argument `idx` (a 32-bit value: a request, option or flag) equals `val`.
    Eq {
        idx: u8,
        val: u64,
    },
    /// Argument `idx` has none of the bits in `mask` set.
    Clear {
        idx: u8,
        mask: u64,
    },
}

/// One allowed syscall and why the role needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub nr: i64,
    pub args: Args,
    pub why: &'static str,
}

impl Rule {
    pub const fn any(nr: i64, why: &'static str) -> Self {
        Self {
            nr,
            args: Args::Any,
            why,
        }
    }

    /// `nr` only when argument `idx` is `val`.
    pub const fn arg(nr: i64, idx: u8, val: u64, why: &'static str) -> Self {
        Self {
            nr,
            args: Args::Eq { idx, val },
            why,
        }
    }

    /// `ioctl` with exactly this request number.
    pub const fn ioctl(request: u64, why: &'static str) -> Self {
        Self::arg(libc::SYS_ioctl, 1, request, why)
    }

    /// `mmap` or `mprotect` without PROT_EXEC: no role maps code.
    pub const fn no_exec(nr: i64, why: &'static str) -> Self {
        Self {
            nr,
            args: Args::Clear {
                idx: 2,
                mask: libc::PROT_EXEC as u64,
            },
            why,
        }
    }
}

/// The roles that have a policy, in a fixed order (messages, tests).
pub const ROLES: &[Role] = &[
    Role::Main,
    Role::Spawner,
    Role::Ctl,
    Role::Vcpu,
    Role::Worker("blk"),
    Role::Worker("rng"),
    Role::Worker("intx"),
    Role::Worker("net"),
    Role::Worker("gpu"),
    Role::Worker("vga"),
    Role::Worker("other"),
    Role::IoHelper,
    Role::Prealloc,
    Role::Collapse,
    Role::Qmp,
    Role::Vnc,
];

/// The role's own rules, base list included (the spawner's are the union
/// of every role's, since each thread it starts runs under both filters).
pub fn rules(role: Role) -> Vec<Rule> {
    let own = match role {
        Role::Main => main_thread::rules(),
        Role::Spawner => {
            let mut all = spawner::rules();
            for r in ROLES.iter().filter(|r| **r != Role::Spawner) {
                all.extend(rules(*r));
            }
            all
        }
        Role::Ctl => ctl::rules(),
        Role::Vcpu => vcpu::rules(),
        Role::Worker(kind) => worker::rules(kind),
        Role::IoHelper => io_helper::rules(),
        Role::Prealloc => prealloc::rules(),
        Role::Collapse => collapse::rules(),
        Role::Qmp => qmp::rules(),
        Role::Vnc => vnc::rules(),
    };
    let mut all = base::rules();
    all.extend(own);
    all
}

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter for role {role}")]
    Build {
        role: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("compiling the seccomp filter for role {role}")]
    Compile {
        role: &'static str,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("installing the seccomp filter for role {role}")]
    Apply {
        role: &'static str,
        #[source]
        source: seccompiler::Error,
    },
    #[error("installing the SIGSYS handler")]
    Handler(#[source] std::io::Error),
}

fn condition(
    idx: u8,
    op: SeccompCmpOp,
    val: u64,
) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(idx, SeccompCmpArgLen::Dword, op, val)
}

/// Compile `rules` to BPF: allowed when any rule for the syscall matches,
/// `mismatch` otherwise.
pub fn compile(
    role: Role,
    rules: &[Rule],
    mismatch: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    let name = role.name();
    let build = |source| SeccompError::Build { role: name, source };
    let mut map: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
    // The same condition twice adds BPF (and a check on every syscall) but
    // allows nothing more; the spawner's union holds every role's copy of
    // the base list, so without this its filter was twice its size.
    let mut seen = std::collections::HashSet::new();
    for r in rules {
        if !seen.insert((r.nr, r.args)) {
            continue;
        }
        let entry = map.entry(r.nr).or_insert_with(|| Some(Vec::new()));
        let cond = match r.args {
            // An unconditional rule makes the whole syscall allowed.
            Args::Any => {
                *entry = None;
                continue;
            }
            Args::Eq { idx, val } => condition(idx, SeccompCmpOp::Eq, val),
            Args::Clear { idx, mask } => condition(idx, SeccompCmpOp::MaskedEq(mask), 0),
        }
        .map_err(build)?;
        if let Some(list) = entry {
            list.push(SeccompRule::new(vec![cond]).map_err(build)?);
        }
    }
    let map = map
        .into_iter()
        .map(|(nr, r)| (nr, r.unwrap_or_default()))
        .collect();
    let filter = SeccompFilter::new(map, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(build)?;
    filter
        .try_into()
        .map_err(|source| SeccompError::Compile { role: name, source })
}

/// Every role's compiled filter, built once at start-up.
pub struct Filters {
    progs: HashMap<Role, BpfProgram>,
}

impl Filters {
    /// Compile every role's policy for `mode` (None for `SeccompMode::Off`).
    pub fn build(mode: SeccompMode) -> Result<Option<Self>, SeccompError> {
        let mismatch = match mode {
            SeccompMode::Off => return Ok(None),
            SeccompMode::Trap => SeccompAction::Trap,
            SeccompMode::Kill => SeccompAction::KillProcess,
            SeccompMode::Log => SeccompAction::Log,
        };
        let mut progs = HashMap::new();
        for &role in ROLES {
            progs.insert(role, compile(role, &rules(role), mismatch.clone())?);
        }
        Ok(Some(Self { progs }))
    }

    /// The program for `role` (a worker of an unlisted kind gets `other`'s).
    pub fn get(&self, role: Role) -> &BpfProgram {
        let key = match role {
            Role::Worker(k) if !matches!(k, "blk" | "rng" | "intx" | "net" | "gpu" | "vga") => {
                Role::Worker("other")
            }
            r => r,
        };
        // Every role in ROLES is built, and `key` is always one of them.
        &self.progs[&key]
    }

    /// Install `role`'s filter on the calling thread (sets no_new_privs).
    pub fn apply(&self, role: Role) -> Result<(), SeccompError> {
        set_thread_role(role.name());
        seccompiler::apply_filter(self.get(role)).map_err(|source| SeccompError::Apply {
            role: role.name(),
            source,
        })
    }
}

#[cfg(test)]
mod tests;
