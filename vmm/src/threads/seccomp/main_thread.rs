//! `Main`: the process's first thread once resources are open. It asks
//! the spawner for one control thread per boot, waits for it or for a
//! termination signal (signalfd), joins it, flushes every image, drops the
//! resources, forks the exit reaper (vstate::reaper, which runs under this
//! same filter) and exits.

use super::Rule;
use libc::*;

pub fn rules() -> Vec<Rule> {
    vec![
        Rule::ioctl(
            TCSETS,
            "the terminal's settings are restored at exit (the console ran it raw)",
        ),
        Rule::ioctl(TCGETS, "glibc's tcsetattr reads the settings back"),
        Rule::ioctl(
            FIONREAD,
            "at exit, the pty console waits for its client to read the last output",
        ),
        Rule::arg(
            SYS_madvise,
            2,
            MADV_REMOVE as u64,
            "dropping guest RAM backed by a shared file or memfd",
        ),
        Rule::any(
            SYS_fdatasync,
            "a disk image flushes its metadata when it is dropped at exit",
        ),
        Rule::any(
            SYS_fsync,
            "a disk image flushes its metadata when it is dropped at exit",
        ),
        Rule::any(
            SYS_pwrite64,
            "a qcow2 image writes back its cached tables when dropped",
        ),
        Rule::any(SYS_pread64, "a qcow2 image reads a table while flushing"),
        Rule::arg(
            SYS_fcntl,
            1,
            F_OFD_SETLK as u64,
            "image locks are released when an image is dropped",
        ),
        Rule::arg(
            SYS_fcntl,
            1,
            F_GETFD as u64,
            "std checks an fd before closing it",
        ),
        Rule::any(
            SYS_poll,
            "waiting for the boot to end or a termination signal; the reaper waits on the VMM's pidfd",
        ),
        Rule::any(
            SYS_read,
            "the signalfd's siginfo, the boot-ended eventfd, the reaper's ready byte",
        ),
        Rule::arg(
            SYS_clone,
            0,
            (CLONE_CHILD_CLEARTID | CLONE_CHILD_SETTID | SIGCHLD) as u64,
            "fork(2) of the exit reaper that takes over the VM's teardown",
        ),
        Rule::arg(
            SYS_eventfd2,
            1,
            EFD_CLOEXEC as u64,
            "the eventfd the control thread writes when its boot ends",
        ),
        Rule::arg(
            SYS_fcntl,
            1,
            F_DUPFD_CLOEXEC as u64,
            "the control thread's copy of that eventfd",
        ),
        Rule::any(
            SYS_set_robust_list,
            "glibc's fork child registers its robust futex list (the exit reaper)",
        ),
        Rule::any(SYS_pidfd_open, "the exit reaper waits for this process to end"),
        Rule::any(SYS_pipe2, "the exit reaper says when it holds nothing but the VM"),
        Rule::any(SYS_close_range, "the exit reaper closes everything but the VM fd"),
    ]
}
