//! How the VMM confines itself (`-sandbox`, `--seccomp`): per-thread
//! seccomp filters and a Landlock ruleset, both on by default. Plain data;
//! `threads` applies it.

use serde::{Deserialize, Serialize};

/// `-sandbox on|off[,landlock=on|off|required]` and `--seccomp`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxConfig {
    pub seccomp: SeccompMode,
    pub landlock: LandlockMode,
    /// Hidden `--selftest-open PATH` (tests): once start-up is over and
    /// Landlock applied, the main thread tries to open PATH and reports the
    /// result on stderr, before its own seccomp filter would refuse the
    /// `openat` itself.
    #[serde(skip)]
    pub selftest_open: Option<std::path::PathBuf>,
    /// Hidden `--selftest-escape WHERE:WHAT` (tests): after the same point,
    /// one escape attempt (`threads::escape`) on the main thread or the
    /// spawner, its outcome reported on stderr.
    #[serde(skip)]
    pub selftest_escape: Option<String>,
}

impl SandboxConfig {
    /// `-sandbox off`: no filters and no Landlock.
    pub fn off() -> Self {
        Self {
            seccomp: SeccompMode::Off,
            landlock: LandlockMode::Off,
            selftest_open: None,
            selftest_escape: None,
        }
    }
}

/// What a thread's filter does with a syscall outside its role's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    /// SIGSYS; the handler names the role and syscall and ends the VM.
    #[default]
    Trap,
    /// The kernel kills the process at once (no message of ours).
    Kill,
    /// Allowed and logged by the kernel (audit / dmesg): for development.
    Log,
    /// No filters.
    Off,
}

/// Whether the Landlock ruleset is applied, and whether a kernel without
/// Landlock is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LandlockMode {
    /// Applied where the kernel has it; a warning where it does not.
    #[default]
    On,
    /// Applied, and a kernel without (full) Landlock is an error.
    Required,
    Off,
}
