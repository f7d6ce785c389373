//! The VMM's peak RSS, measured soundly for jailed and unjailed runs alike.
//!
//! `ru_maxrss` (wait4, getrusage, /usr/bin/time) is not the VMM's peak: at
//! exec the kernel folds the *old* image's peak into it, so a VMM spawned
//! by a 14 MiB test harness (vfork shares the harness's memory up to the
//! exec) reports >= 14 MiB whatever it used itself; under the jailer it is
//! at least the jailer's. `VmHWM` in /proc/PID/status is the peak of the
//! current image only, but it is gone once the process has exited.
//!
//! So the run is traced: the driver's child calls PTRACE_TRACEME and every
//! process it forks is followed (PTRACE_O_TRACEFORK, so the jailer's pid
//! namespace child is too); each traced process stops at its exit
//! (PTRACE_O_TRACEEXIT) with its memory still mapped, and there `VmHWM`
//! is read for every process whose `/proc/PID/exe` has the VMM binary's
//! file name (a jailer that copies the binary into the jail runs a copy): the
//! VMM and its exit reaper (a fork of it, whose peak is at most the VMM's
//! RSS when it forked). The result is the largest: text and data pages
//! mapped, heap, thread stacks and the guest RAM the guest touched. It
//! does not count the jailer, page tables or KVM's kernel memory.
//! Threads are not traced (no PTRACE_O_TRACECLONE), so vCPU exits are
//! not slowed; these runs are still kept apart from the timed ones.

use std::os::unix::process::CommandExt;
use std::process::Stdio;

use anyhow::{bail, Context, Result};

use crate::timed::{self, Row};

fn ptrace(req: libc::c_uint, pid: libc::pid_t, data: usize) -> Result<()> {
    // SAFETY: requests that take no pointer (CONT, SETOPTIONS); `data` is
    // a signal number or an option mask.
    let r = unsafe { libc::ptrace(req, pid, 0usize, data) };
    if r == -1 {
        let e = std::io::Error::last_os_error();
        // The tracee may have been killed (SIGKILL) meanwhile.
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e).with_context(|| format!("ptrace {req} on {pid}"));
        }
    }
    Ok(())
}

/// `VmHWM` of `pid` in KiB.
fn vm_hwm(pid: libc::pid_t) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// One traced run of `row`; the peak `VmHWM` (KiB) of the VMM binary.
pub fn peak(row: &Row) -> Result<u64> {
    let vmm = &row.vmm;
    let (mut cmd, cleanup) = row.command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the hook runs in the forked child before exec and only makes
    // a system call (async-signal-safe).
    unsafe {
        cmd.pre_exec(|| {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0usize, 0usize) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let root = child.id() as libc::pid_t;
    // Reaped below with waitpid, not through `child`.
    drop(child);
    let mut status = 0;
    // SAFETY: waitpid writes the status of our own child.
    if unsafe { libc::waitpid(root, &mut status, libc::__WALL) } != root
        || !libc::WIFSTOPPED(status)
    {
        bail!("{}: the traced child did not stop at exec", row.name);
    }
    let opts = libc::PTRACE_O_TRACEFORK
        | libc::PTRACE_O_TRACEVFORK
        | libc::PTRACE_O_TRACEEXEC
        | libc::PTRACE_O_TRACEEXIT
        | libc::PTRACE_O_EXITKILL;
    ptrace(libc::PTRACE_SETOPTIONS, root, opts as usize)?;
    ptrace(libc::PTRACE_CONT, root, 0)?;
    let mut peak = None::<u64>;
    let mut root_status = None;
    loop {
        // SAFETY: as above, for any traced process or our child.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL) };
        if pid == -1 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ECHILD) {
                break;
            }
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e).context("waitpid");
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            if pid == root {
                root_status = Some(status);
            }
            continue;
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        let event = (status >> 16) & 0xff;
        let sig = libc::WSTOPSIG(status);
        let inject = if event == libc::PTRACE_EVENT_EXIT {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            if exe.as_deref().and_then(|e| e.file_name()) == vmm.file_name() {
                if let Some(kib) = vm_hwm(pid) {
                    peak = Some(peak.map_or(kib, |p| p.max(kib)));
                }
            }
            0
        } else if event != 0 || sig == libc::SIGTRAP || sig == libc::SIGSTOP {
            // fork/exec events, and the first stop of a newly followed child.
            0
        } else {
            // A real signal: deliver it.
            sig as usize
        };
        ptrace(libc::PTRACE_CONT, pid, inject)?;
    }
    if let Some(c) = cleanup {
        timed::must(c)?;
    }
    match root_status {
        Some(s) if libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0 => {}
        s => bail!("{}: traced run ended with status {s:?}", row.name),
    }
    peak.with_context(|| {
        format!(
            "{}: no process of {} was seen exiting",
            row.name,
            vmm.display()
        )
    })
}
