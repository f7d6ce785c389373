//! `Spawner` (`cm-spawn`): starts every thread after start-up. A new
//! thread runs under this filter until its own role's filter is stacked on
//! top, so `rules()` (mod.rs) gives the spawner the union of every role's
//! list plus what starting a thread takes, listed here.

use super::Rule;
use libc::*;

pub fn rules() -> Vec<Rule> {
    vec![
        Rule::any(SYS_clone3, "std::thread::spawn (glibc pthread_create)"),
        Rule::any(SYS_clone, "pthread_create where clone3 is refused"),
        Rule::any(
            SYS_set_robust_list,
            "a new thread registers its robust futex list",
        ),
        Rule::any(
            SYS_rseq,
            "a new thread registers its restartable sequence area",
        ),
        Rule::arg(
            SYS_prctl,
            0,
            PR_SET_NAME as u64,
            "std names the new thread (cm-...)",
        ),
        Rule::any(
            SYS_sched_getaffinity,
            "std reads the new thread's stack bounds (pthread_getattr_np)",
        ),
        Rule::arg(
            SYS_prctl,
            0,
            PR_SET_NO_NEW_PRIVS as u64,
            "a new thread sets no_new_privs before its filter",
        ),
        Rule::arg(
            SYS_seccomp,
            0,
            SECCOMP_SET_MODE_FILTER as u64,
            "a new thread installs its role's filter",
        ),
        Rule::any(
            SYS_landlock_create_ruleset,
            "the spawner confines itself with Landlock after start-up",
        ),
        Rule::any(
            SYS_landlock_add_rule,
            "the spawner confines itself with Landlock after start-up",
        ),
        Rule::any(
            SYS_landlock_restrict_self,
            "the spawner confines itself with Landlock after start-up",
        ),
    ]
}
