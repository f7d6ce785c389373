//! The jailer's two commands, jail and cleanup, as sequences of
//! [`crate::steps`]. This is the only module that forks and waits.
//!
//! # How a VM's jail and cgroups get removed
//!
//! * Without `--new-pid-ns` the jailer execs the VMM itself, so nobody is
//!   left to clean up: whoever started the jailer waits for that process
//!   (the pid it started *is* the VMM, or with `--daemonize` its child) and
//!   then runs `casemate-jailer --cleanup --id ID --exec-file PATH
//!   [--chroot-base-dir DIR] [--parent-cgroup PATH]` with the same values.
//!   Cleanup removes the VM cgroup from every mounted hierarchy (rmdir,
//!   retried while the kernel still counts exiting tasks), the default
//!   parent cgroup and `<base>/<exec-name>` if they became empty, and the
//!   jail directory `<base>/<exec-name>/<id>` recursively. It is idempotent.
//!   The jail's mounts lived in the VMM's private mount namespace and died
//!   with it, so on the host the jail is a plain directory tree.
//! * With `--new-pid-ns` the jailer forks: the child becomes pid 1 of a new
//!   pid namespace and execs the VMM; the parent stays outside the jail and
//!   outside the VM cgroups, waits for the child, runs the same cleanup and
//!   exits with the child's status (128+N when killed by signal N).
//!   SIGTERM, SIGINT, SIGHUP and SIGQUIT sent to the parent are forwarded
//!   to the VM. If the parent itself is killed (SIGKILL), the VM runs on
//!   and `--cleanup` is needed after it ends.
//!
//! If jailing fails before exec, what this run created (its cgroup
//! directories and jail directory) is removed at once; nothing that
//! existed before (another VM's jail or cgroup) is touched.

use std::fs::File;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use thiserror::Error;

use crate::cli::Args;
use crate::host::{HostError, HostInfo};
use crate::plan::{cleanup_plan, JailPlan, PlanError};
use crate::steps::{self, StepError};

/// Why jailing or cleanup failed.
#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Step(#[from] StepError),
    /// Past `pivot_root` the host's paths are out of reach, so the jail and
    /// cgroups cannot be rolled back by this process.
    #[error(
        "jailing failed after pivot_root; the jail and cgroups are left in place (run --cleanup)"
    )]
    AfterPivot(#[source] StepError),
}

/// Removes what this run created after a failure before exec; errors are
/// ignored because the original failure is the one to report.
fn roll_back(plan: &JailPlan, cgroup_dirs: &[std::path::PathBuf], made_jail: bool) {
    // A cgroup with a task in it cannot be removed: if this process joined
    // the VM cgroups, go back to where it came from first.
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let _ = steps::join_cgroups(&plan.cgroups.origin_procs_files, me);
    steps::unmount_root(&plan.root);
    for dir in cgroup_dirs.iter().rev() {
        let _ = std::fs::remove_dir(dir);
    }
    if made_jail {
        let _ = std::fs::remove_dir_all(&plan.jail_dir);
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), StepError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we pass.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if r == -1 {
        return Err(StepError::Sys {
            step: "create a pipe".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: both fds were just created and are owned only here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The VM's pid (in the jailer's pid namespace) for the signal forwarder;
/// 0 until the child exists.
static VM_PID: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = VM_PID.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe; the pid is our own child.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Signals that stop a supervisor are passed on to the VM instead, so the
/// supervisor lives on to wait and clean up. The VM is pid 1 of its
/// namespace: the kernel delivers these only if the VMM handles them.
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

fn forward_signals() -> Result<(), StepError> {
    for sig in FORWARDED {
        // SAFETY: a zeroed sigaction is valid; we set handler, mask, flags.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = forward_signal as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        // SAFETY: sigemptyset and sigaction only read and write `sa`; the
        // handler is async-signal-safe.
        let r = unsafe {
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if r == -1 {
            return Err(StepError::Sys {
                step: format!("forward signal {sig} to the VM (sigaction)"),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// Exit status of a waited-for child, shell style.
fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

/// Jails and execs the VMM. Without `--new-pid-ns` it returns only on
/// failure; with it, it returns the VM's exit status after cleanup.
pub fn jail(args: &Args) -> Result<i32, RunError> {
    let host = HostInfo::read()?;
    let mut plan = JailPlan::new(args, &host)?;
    plan.hand_backing_chains(crate::chain::backing_chain)?;
    steps::validate(&plan.exec_file, &plan.jail_dir)?;
    steps::close_inherited_fds()?;
    steps::clear_environment();
    let dev_null = if plan.daemonize {
        Some(steps::open_dev_null(plan.last_handed_fd())?)
    } else {
        None
    };
    if let (Some(null), true) = (&dev_null, plan.new_pid_ns) {
        // The supervising parent detaches too, before it forks the VM.
        steps::daemonize(null)?;
    }

    let mut cgroup_dirs = Vec::new();
    let mut made_jail = false;
    let mut prepare = || -> Result<(Vec<OwnedFd>, OwnedFd), StepError> {
        let mut fds = steps::open_handed_files(&plan.files)?;
        if let Some(ns) = &plan.netns {
            steps::join_netns(ns)?;
        }
        // In the VM's network namespace, where its taps live.
        fds.extend(steps::attach_handed_taps(&plan.taps)?);
        // After every handed fd is in place, so it cannot take one of
        // their numbers.
        let exec_fd = steps::open_exec(&plan.exec_file, plan.uid, plan.gid)?;
        steps::create_jail_dirs(&plan.jail_dir, &plan.root, plan.uid, plan.gid)?;
        made_jail = true;
        // Made from the host side, before any namespace: a failure here
        // still rolls back cleanly.
        steps::make_device_nodes(&plan.root, &plan.devices, plan.uid, plan.gid)?;
        steps::apply_cgroup_steps(&plan.cgroups.steps, &mut cgroup_dirs)?;
        Ok((fds, exec_fd))
    };
    let (fds, exec_fd) = match prepare() {
        Ok(fds) => fds,
        Err(e) => {
            roll_back(&plan, &cgroup_dirs, made_jail);
            return Err(e.into());
        }
    };

    if !plan.new_pid_ns {
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        let failure = match steps::join_cgroups(&plan.cgroups.procs_files, me) {
            Ok(()) => steps::jail_and_exec(&plan, &exec_fd, dev_null.as_ref()),
            Err(error) => steps::JailFailure {
                error,
                after_pivot: false,
            },
        };
        // Still here: jailing failed.
        drop(fds);
        if failure.after_pivot {
            return Err(RunError::AfterPivot(failure.error));
        }
        roll_back(&plan, &cgroup_dirs, made_jail);
        return Err(failure.error.into());
    }

    let fail = |e: StepError| {
        roll_back(&plan, &cgroup_dirs, made_jail);
        RunError::from(e)
    };
    steps::unshare_pid_ns().map_err(fail)?;
    let (go_r, go_w) = pipe().map_err(fail)?;
    // Installed before the fork so no signal finds the default action (and
    // kills the supervisor) in between; exec resets them in the child.
    forward_signals().map_err(fail)?;
    // SAFETY: the jailer is single-threaded; the child only runs the jail
    // steps and execs or exits.
    let pid = unsafe { libc::fork() };
    if pid == -1 {
        return Err(fail(StepError::Sys {
            step: "fork into the new pid namespace".into(),
            source: std::io::Error::last_os_error(),
        }));
    }
    if pid == 0 {
        drop(go_w);
        // Wait until the parent has put this process into the VM cgroups,
        // so everything the VMM does is accounted there.
        if !steps::wait_for_go(go_r) {
            // SAFETY: leave without running the parent's destructors.
            unsafe { libc::_exit(1) };
        }
        // The parent cleans up whatever happens here, once this child exits.
        let failure = steps::jail_and_exec(&plan, &exec_fd, dev_null.as_ref());
        eprintln!(
            "casemate-jailer: {}",
            crate::error_line(&RunError::Step(failure.error))
        );
        // SAFETY: as above.
        unsafe { libc::_exit(1) };
    }
    VM_PID.store(pid, Ordering::Relaxed);
    // The child holds the handed fds now; the parent needs none of them.
    drop(fds);
    drop(exec_fd);
    drop(go_r);
    if let Err(e) = steps::join_cgroups(&plan.cgroups.procs_files, pid) {
        // SAFETY: kill and waitpid on our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        return Err(fail(e));
    }
    let _ = File::from(go_w).write_all(b"g");
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child, writing into `status`.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r == -1 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(fail(StepError::Sys {
                step: "wait for the VM process".into(),
                source: std::io::Error::last_os_error(),
            }));
        }
    }
    steps::cleanup(&plan.cleanup)?;
    Ok(exit_code(status))
}

/// `--cleanup`: removes the jail directory and cgroups of an ended VM.
pub fn cleanup(args: &Args) -> Result<Vec<std::path::PathBuf>, RunError> {
    let host = HostInfo::read()?;
    let plan = cleanup_plan(args, &host)?;
    Ok(steps::cleanup(&plan)?)
}
