//! Escape attempts from a jailed VMM that must fail, each its own test.
//! The attempts run inside the real, jailed casemate after start-up
//! (`--selftest-escape WHERE:WHAT`, hidden), so what is tested is the
//! confinement a VM run gets, not a copy of its policy:
//! - `main:` the main thread after Landlock, before its seccomp filter:
//!   what the jail (pivot_root, namespaces), the dropped uid/capabilities,
//!   no_new_privs and Landlock refuse on their own, with the exact errno;
//! - `spawner:` the spawner thread, whose filter is the union of every
//!   role's list (so what it refuses, every thread refuses): the SIGSYS
//!   handler must end the VM naming the role and the syscall.
//!
//! Root and a static casemate are needed (SKIP otherwise; a failure under
//! CI=true, where scripts/test.sh builds it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use casemate_tests::{jail, kvm_or_skip, run_with_limit, Scratch};

/// 128 + SIGSYS: the trap handler's exit status.
const TRAP_EXIT: i32 = 159;

struct Jailed {
    vmm: PathBuf,
    _s: Scratch,
    base: PathBuf,
}

fn setup(test: &str) -> Option<Jailed> {
    if !kvm_or_skip(test) {
        return None;
    }
    let vmm = jail::jail_or_skip(test)?;
    let s = Scratch::new(test);
    let base = s.path("jails");
    Some(Jailed { vmm, _s: s, base })
}

/// Run `--selftest-escape SPEC` in a jailed VMM booting `probe=hello`;
/// with `pid_ns` the jailer supervises (new pid namespace) and cleans up,
/// otherwise `--cleanup` runs after. Returns (exit code, stdout, stderr).
fn escape(j: &Jailed, id: &str, spec: &str, pid_ns: bool) -> (Option<i32>, String, String) {
    let extra: &[&str] = if pid_ns { &["--new-pid-ns"] } else { &[] };
    let cmd = jail::jailer(
        &j.vmm,
        &j.base,
        id,
        extra,
        &["--selftest-escape", spec, "-append", "probe=hello"],
    );
    let out = run_with_limit(cmd, Duration::from_secs(60));
    if !pid_ns {
        jail::cleanup(&j.vmm, &j.base, id);
    }
    assert!(
        !jail::jail_dir(&j.base, &j.vmm, id).exists(),
        "{id}: jail left behind"
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The attempt returned `want` (e.g. `Operation not permitted (os error
/// 1)`) and the VM then booted and powered off normally.
fn assert_outcome(j: &Jailed, id: &str, spec: &str, pid_ns: bool, want: &str) {
    let (code, console, err) = escape(j, id, spec, pid_ns);
    let line = format!("casemate: selftest: escape {spec}: ");
    let got = err
        .lines()
        .find_map(|l| l.strip_prefix(&line))
        .unwrap_or_else(|| panic!("{spec}: no outcome line in\n{err}"));
    assert_eq!(got, want, "{spec}");
    assert_eq!(code, Some(0), "{spec}: {err}");
    assert!(console.contains("probe: done status=ok"), "{console}");
}

/// The attempt on the spawner ended the VM through the SIGSYS handler,
/// naming the spawner role and syscall `nr`, before any outcome line.
fn assert_trapped(j: &Jailed, id: &str, spec: &str, nr: i64) {
    let (code, _, err) = escape(j, id, spec, true);
    assert_eq!(code, Some(TRAP_EXIT), "{spec}: {err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("casemate: seccomp: "))
        .unwrap_or_else(|| panic!("{spec}: no seccomp line in\n{err}"));
    assert!(
        line.contains(&format!("thread role spawner made forbidden syscall {nr} ")),
        "{spec}: {line}"
    );
    assert!(
        !err.contains(&format!("escape {spec}: ")),
        "{spec}: the attempt returned:\n{err}"
    );
}

const ENOENT: &str = "No such file or directory (os error 2)";
const EPERM: &str = "Operation not permitted (os error 1)";

#[test]
fn escape_open_host_path_outside_the_jail() {
    let Some(j) = setup("escape_open") else {
        return;
    };
    assert!(Path::new("/etc/passwd").exists());
    // The jail's root has no /etc, and `..` at the root stays at the root.
    assert_outcome(&j, "open-abs", "main:open-abs", true, ENOENT);
    assert_outcome(&j, "open-dotdot", "main:open-dotdot", true, ENOENT);
    assert_trapped(&j, "open-abs-f", "spawner:open-abs", libc::SYS_openat);
    assert_trapped(&j, "open-dotdot-f", "spawner:open-dotdot", libc::SYS_openat);
}

#[test]
fn escape_ptrace_attach_another_process() {
    let Some(j) = setup("escape_ptrace") else {
        return;
    };
    // No pid namespace, so the VMM can name this (root-owned) test
    // process; uid 65534 without CAP_SYS_PTRACE may not attach to it.
    let me = format!("main:ptrace={}", std::process::id());
    assert_outcome(&j, "ptrace", &me, false, EPERM);
    let me = format!("spawner:ptrace={}", std::process::id());
    assert_trapped(&j, "ptrace-f", &me, libc::SYS_ptrace);
}

#[test]
fn escape_new_user_namespace() {
    let Some(j) = setup("escape_userns") else {
        return;
    };
    // The kernel refuses CLONE_NEWUSER to a multi-threaded process
    // (EINVAL): the VMM has its spawner thread from start-up on.
    assert_outcome(
        &j,
        "userns",
        "main:userns",
        true,
        "Invalid argument (os error 22)",
    );
    assert_trapped(&j, "userns-f", "spawner:userns", libc::SYS_unshare);
}

#[test]
fn escape_mount() {
    let Some(j) = setup("escape_mount") else {
        return;
    };
    assert_outcome(&j, "mount", "main:mount", true, EPERM);
    assert_trapped(&j, "mount-f", "spawner:mount", libc::SYS_mount);
}

#[test]
fn escape_raise_rlimit() {
    let Some(j) = setup("escape_rlimit") else {
        return;
    };
    // Above the hard limit the jailer set (soft = hard) needs CAP_SYS_RESOURCE.
    assert_outcome(&j, "rlimit", "main:rlimit", true, EPERM);
    assert_trapped(&j, "rlimit-f", "spawner:rlimit", libc::SYS_prlimit64);
}

#[test]
fn escape_loosen_seccomp_with_an_allow_all_filter() {
    let Some(j) = setup("escape_seccomp") else {
        return;
    };
    // The spawner may load filters (new threads stack theirs from it), so
    // the allow-all filter loads; the old one still decides: socket traps.
    let (code, _, err) = escape(&j, "loosen-f", "spawner:loosen-seccomp", true);
    assert!(
        err.contains("casemate: selftest: allow-all filter load: succeeded; now socket(AF_INET)"),
        "{err}"
    );
    assert_eq!(code, Some(TRAP_EXIT), "{err}");
    assert!(
        err.contains(&format!(
            "thread role spawner made forbidden syscall {} ",
            libc::SYS_socket
        )),
        "{err}"
    );
    // The check can see a loosened filter: the main thread, before its own
    // filter, has nothing to loosen and its socket call goes through.
    assert_outcome(
        &j,
        "loosen",
        "main:loosen-seccomp",
        true,
        "socket(AF_INET) succeeded",
    );
}
