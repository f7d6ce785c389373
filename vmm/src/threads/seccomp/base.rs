//! The base list: what every thread may do once its filter is in place
//! (locks and channels, its own exit, memory for the allocator, logging).
//! Role files add to it; nothing here opens, creates or reaches anything
//! outside the process.

use super::Rule;
use libc::*;

pub fn rules() -> Vec<Rule> {
    vec![
        Rule::any(SYS_futex, "std locks, condvars, channels and thread joins"),
        Rule::any(
            SYS_write,
            "log lines to stderr; eventfd signals (irqfds, wake-ups) on fds already open",
        ),
        Rule::any(
            SYS_close,
            "dropping fds this thread owns (eventfds, duplicated files)",
        ),
        Rule::any(SYS_exit, "the thread ends"),
        Rule::any(
            SYS_exit_group,
            "the process ends: a clean power-off, or the SIGSYS handler",
        ),
        Rule::any(
            SYS_rt_sigreturn,
            "returning from the vCPU kick signal handler",
        ),
        Rule::any(
            SYS_rt_sigprocmask,
            "glibc blocks signals around thread exit",
        ),
        Rule::any(
            SYS_sigaltstack,
            "std removes the thread's alternate signal stack at exit",
        ),
        Rule::any(
            SYS_restart_syscall,
            "a wait interrupted by the kick signal resumes",
        ),
        Rule::any(
            SYS_sched_yield,
            "spin loops in std and crossbeam-style waits",
        ),
        Rule::any(
            SYS_clock_gettime,
            "time, when the vDSO falls back to the syscall",
        ),
        Rule::any(SYS_gettid, "std and glibc thread ids"),
        Rule::any(SYS_getpid, "glibc and the log's process id"),
        Rule::arg(
            SYS_getrandom,
            2,
            GRND_INSECURE as u64,
            "std seeds each thread's HashMap keys",
        ),
        Rule::arg(
            SYS_getrandom,
            2,
            GRND_NONBLOCK as u64,
            "std seeds each thread's HashMap keys",
        ),
        Rule::any(SYS_brk, "malloc grows the heap"),
        Rule::no_exec(
            SYS_mmap,
            "malloc arenas and large allocations (never executable)",
        ),
        Rule::no_exec(
            SYS_mprotect,
            "malloc arenas grow in place (never executable)",
        ),
        Rule::any(
            SYS_munmap,
            "freeing large allocations; the thread's stack at exit",
        ),
        Rule::arg(
            SYS_madvise,
            2,
            MADV_DONTNEED as u64,
            "glibc frees a finished thread's stack and trims arenas",
        ),
    ]
}
