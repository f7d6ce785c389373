//! Running casemate under `casemate-jailer` in tests: the statically linked
//! casemate a jail needs (it has no /lib), the root check, a jailer command
//! builder and what a test reads from `/proc/PID` of a jailed VMM.
//!
//! `scripts/test.sh` builds the static casemate, so under `CI=true` a
//! missing one (or not being root) fails the test instead of skipping it.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{bin, in_ci, target_dir};

/// The build command for the static casemate (named in skip and failure lines).
pub const STATIC_BUILD: &str = "RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build \
     -p casemate-vmm --bin casemate --target x86_64-unknown-linux-gnu";

/// The static casemate for this test build's profile, if one was built:
/// `target/x86_64-unknown-linux-gnu/<profile>/casemate`.
pub fn static_casemate() -> Option<PathBuf> {
    static_casemate_for(target_dir().file_name()?.to_str()?)
}

/// The static casemate of `profile` ("debug" or "release"), if built.
pub fn static_casemate_for(profile: &str) -> Option<PathBuf> {
    let t = target_dir();
    let p = t
        .parent()?
        .join("x86_64-unknown-linux-gnu")
        .join(profile)
        .join("casemate");
    p.exists().then_some(p)
}

/// Whether this process is root (the jailer needs it).
pub fn is_root() -> bool {
    // SAFETY: geteuid only reads the caller's effective uid.
    unsafe { libc::geteuid() == 0 }
}

/// Root and a static casemate, or `None` after a SKIP line; under
/// `CI=true` either missing fails the test (CI runs scripts/test.sh as
/// root, which builds the static binary).
pub fn jail_or_skip(test: &str) -> Option<PathBuf> {
    if !is_root() {
        assert!(!in_ci(), "{test}: the jailer needs root and CI=true");
        println!("SKIP {test}: the jailer needs root");
        return None;
    }
    match static_casemate() {
        Some(p) => Some(p),
        None => {
            assert!(
                !in_ci(),
                "{test}: no static casemate under CI=true (scripts/test.sh builds it: {STATIC_BUILD})"
            );
            println!("SKIP {test}: no static casemate; build one with {STATIC_BUILD}");
            None
        }
    }
}

/// `casemate-jailer --id ID --exec-file VMM --uid 65534 --gid 65534
/// --chroot-base-dir BASE` plus `jailer_extra`, then `--` and `vm_args`.
pub fn jailer(
    vmm: &Path,
    base: &Path,
    id: &str,
    jailer_extra: &[&str],
    vm_args: &[&str],
) -> Command {
    let mut c = Command::new(bin("casemate-jailer"));
    c.args(["--id", id, "--exec-file", vmm.to_str().unwrap()])
        .args(["--uid", "65534", "--gid", "65534"])
        .args(["--chroot-base-dir", base.to_str().unwrap()])
        .args(jailer_extra)
        .arg("--")
        .args(vm_args);
    c
}

/// The jail directory of `id` under `base` (`<base>/casemate/<id>`).
pub fn jail_dir(base: &Path, vmm: &Path, id: &str) -> PathBuf {
    base.join(vmm.file_name().unwrap()).join(id)
}

/// `casemate-jailer --cleanup` for a jail run without `--new-pid-ns`.
pub fn cleanup(vmm: &Path, base: &Path, id: &str) {
    let out = Command::new(bin("casemate-jailer"))
        .args([
            "--cleanup",
            "--id",
            id,
            "--exec-file",
            vmm.to_str().unwrap(),
        ])
        .args(["--chroot-base-dir", base.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cleanup of {id}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The first child of `pid` (the jailed VMM is the supervisor's only child).
pub fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The value of `key` (e.g. `CapEff:`) in `/proc/PID/status`.
pub fn status_field(pid: u32, key: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

/// Where `/proc/PID/ns/NAME` points (e.g. `mnt:[4026531841]`).
pub fn ns(pid: &str, name: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{name}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The cgroup path of `pid` in the v1 hierarchy holding `controller`.
pub fn cgroup_of(pid: u32, controller: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    s.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        ctrls
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })
}
