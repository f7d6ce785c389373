//! `--selftest-escape WHERE:WHAT` (hidden; for the tests): once start-up
//! is over and the VMM confined as a real run confines it, make one escape
//! attempt and report its outcome on stderr as
//! `casemate: selftest: escape WHERE:WHAT: OUTCOME`, then boot as usual.
//!
//! WHERE says which confinement is tested:
//! - `main`: the main thread after Landlock, before its own seccomp filter:
//!   what the jail, the dropped privileges and Landlock refuse by themselves.
//! - `spawner`: the spawner thread (`cm-spawn`), whose filter is the union
//!   of every role's list, so what it refuses every thread refuses. A
//!   refused syscall there ends the VM through the SIGSYS handler (one line
//!   naming the role and syscall, exit 159); no OUTCOME line follows.
//!
//! The attempts are the real calls an attacker in the VMM would make; the
//! policy under test is the one a VM run installs, not a copy of it.

use std::io::Write;

/// Where an attempt runs (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    Main,
    Spawner,
}

/// One escape attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// `open("/etc/passwd")`.
    OpenAbsolute,
    /// `open("../../../../../../../../etc/passwd")` from the working directory.
    OpenDotDot,
    /// `ptrace(PTRACE_ATTACH, pid)` of another process.
    Ptrace(i32),
    /// `unshare(CLONE_NEWUSER)`.
    UserNs,
    /// `mount` of a tmpfs over `/` (undone at once if it ever succeeds).
    Mount,
    /// `prlimit64(0, RLIMIT_NOFILE)` to one above the hard limit.
    Rlimit,
    /// Load an allow-everything seccomp filter on top, then
    /// `socket(AF_INET)`: the older filter must still decide.
    LoosenSeccomp,
}

/// A parsed `WHERE:WHAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub place: Where,
    pub what: What,
}

const USAGE: &str = "WHERE:WHAT, WHERE main or spawner, WHAT open-abs, open-dotdot, \
                     ptrace=PID, userns, mount, rlimit or loosen-seccomp";

impl Attempt {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        let (place, what) = s.split_once(':').ok_or(USAGE)?;
        let place = match place {
            "main" => Where::Main,
            "spawner" => Where::Spawner,
            _ => return Err(USAGE),
        };
        let what = match what {
            "open-abs" => What::OpenAbsolute,
            "open-dotdot" => What::OpenDotDot,
            "userns" => What::UserNs,
            "mount" => What::Mount,
            "rlimit" => What::Rlimit,
            "loosen-seccomp" => What::LoosenSeccomp,
            w => match w.strip_prefix("ptrace=").map(str::parse) {
                Some(Ok(pid)) if pid > 0 => What::Ptrace(pid),
                _ => return Err(USAGE),
            },
        };
        Ok(Self { place, what })
    }
}

/// `Ok(())` -> "succeeded", an errno -> its text, as `io::Error` prints it.
fn outcome(rc: i64) -> String {
    if rc < 0 {
        std::io::Error::last_os_error().to_string()
    } else {
        "succeeded".into()
    }
}

/// Make the attempt on the calling thread; the outcome line's text.
fn attempt(what: What) -> String {
    match what {
        What::OpenAbsolute => std::fs::File::open("/etc/passwd")
            .map(|_| "succeeded".into())
            .unwrap_or_else(|e| e.to_string()),
        What::OpenDotDot => std::fs::File::open("../../../../../../../../etc/passwd")
            .map(|_| "succeeded".into())
            .unwrap_or_else(|e| e.to_string()),
        What::Ptrace(pid) => {
            // SAFETY: PTRACE_ATTACH takes a pid and ignores addr and data.
            let rc = unsafe {
                libc::ptrace(
                    libc::PTRACE_ATTACH,
                    pid,
                    std::ptr::null_mut::<libc::c_void>(),
                    std::ptr::null_mut::<libc::c_void>(),
                )
            };
            let r = outcome(rc);
            if rc == 0 {
                // Let the process go again: the test reports, it does not harm.
                // SAFETY: as above; detaching a tracee we just attached.
                unsafe {
                    libc::ptrace(
                        libc::PTRACE_DETACH,
                        pid,
                        std::ptr::null_mut::<libc::c_void>(),
                        std::ptr::null_mut::<libc::c_void>(),
                    )
                };
            }
            r
        }
        What::UserNs => {
            // SAFETY: unshare takes only flags; on success it changes this
            // process's namespaces, which is what is being tested.
            outcome(unsafe { libc::unshare(libc::CLONE_NEWUSER) }.into())
        }
        What::Mount => {
            let (src, target, fs) = (c"casemate-selftest", c"/", c"tmpfs");
            let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            // SAFETY: C string literals and no data; a mount that succeeds
            // is undone at once below.
            let rc = unsafe {
                libc::mount(
                    src.as_ptr(),
                    target.as_ptr(),
                    fs.as_ptr(),
                    flags,
                    std::ptr::null(),
                )
            };
            let r = outcome(rc.into());
            if rc == 0 {
                // SAFETY: detaching the tmpfs just stacked on /.
                unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
            }
            r
        }
        What::Rlimit => {
            let mut cur = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes one rlimit we own.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur) };
            let up = cur.rlim_max.saturating_add(1);
            let new = libc::rlimit {
                rlim_cur: up,
                rlim_max: up,
            };
            // The raw syscall, so the syscall number the filter sees is
            // known (glibc's setrlimit is prlimit64 too).
            // SAFETY: prlimit64 on this process (pid 0) reads `new` and
            // writes no old value (null).
            outcome(unsafe {
                libc::syscall(
                    libc::SYS_prlimit64,
                    0,
                    libc::RLIMIT_NOFILE,
                    &new as *const libc::rlimit,
                    std::ptr::null_mut::<libc::rlimit>(),
                )
            })
        }
        What::LoosenSeccomp => {
            // One instruction: return SECCOMP_RET_ALLOW for every syscall.
            let allow = [libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            }];
            let prog = libc::sock_fprog {
                len: 1,
                filter: allow.as_ptr().cast_mut(),
            };
            // SAFETY: `prog` points at `allow`, both alive for the call; the
            // kernel copies the program. no_new_privs is already set (the
            // jailer, or this thread's own filter, set it).
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0,
                    &prog as *const libc::sock_fprog,
                )
            };
            let loaded = outcome(rc);
            let _ = writeln!(
                std::io::stderr(),
                "casemate: selftest: allow-all filter load: {loaded}; now socket(AF_INET)"
            );
            // SAFETY: plain numbers; an fd it returns is closed below.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            if fd >= 0 {
                // SAFETY: the fd was just returned to us and nothing else owns it.
                unsafe { libc::close(fd) };
            }
            format!("socket(AF_INET) {}", outcome(fd.into()))
        }
    }
}

/// Run `spec` (already checked by the CLI) where it asks; returns when the
/// attempt returned (a trapped one ends the process instead).
pub fn run(spec: &str) {
    let Ok(a) = Attempt::parse(spec) else {
        return;
    };
    let report = move || {
        let r = attempt(a.what);
        let _ = writeln!(std::io::stderr(), "casemate: selftest: escape {spec}: {r}");
    };
    match a.place {
        Where::Main => report(),
        Where::Spawner => {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let spec = spec.to_string();
            let sent = casemate_devices::threads::on_spawner(move || {
                let r = attempt(a.what);
                let _ = writeln!(std::io::stderr(), "casemate: selftest: escape {spec}: {r}");
                let _ = tx.send(());
            });
            if !sent {
                let _ = writeln!(
                    std::io::stderr(),
                    "casemate: selftest: escape: no spawner thread (seccomp off)"
                );
                return;
            }
            // Wait so the line comes before the boot's output; a trapped
            // attempt ends the process while we wait.
            let _ = rx.recv();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_attempt_and_refuses_others() {
        assert_eq!(
            Attempt::parse("spawner:ptrace=42"),
            Ok(Attempt {
                place: Where::Spawner,
                what: What::Ptrace(42)
            })
        );
        assert_eq!(
            Attempt::parse("main:loosen-seccomp").map(|a| a.what),
            Ok(What::LoosenSeccomp)
        );
        for bad in [
            "main",
            "vcpu:mount",
            "main:ptrace=0",
            "main:ptrace=x",
            "main:chroot",
        ] {
            assert!(Attempt::parse(bad).is_err(), "{bad}");
        }
    }
}
