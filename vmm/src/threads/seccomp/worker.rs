//! `Worker(kind)` (`cm-<device>N`): a device's epoll loop over its queue
//! eventfds. Every kind shares the loop's calls; the kinds add what their
//! backend does: `blk` submits to io_uring or hands requests to the pool
//! and does synchronous flushes and discards, `rng` reads its source and
//! runs a timerfd, `intx` re-raises level interrupts on resample, `net`
//! moves frames between its tap and guest memory, `vga` reads its framebuffer's dirty log on a timer, `gpu` copies pixels
//! between guest memory and the display surface (heap memory only).

use super::Rule;
use libc::*;

fn common() -> Vec<Rule> {
    vec![
        Rule::any(SYS_epoll_wait, "the worker's event loop"),
        Rule::any(SYS_epoll_pwait, "the worker's event loop"),
        Rule::any(SYS_epoll_ctl, "adding and removing the loop's fds"),
        Rule::any(
            SYS_read,
            "draining eventfds (queue notifications, stop, resample)",
        ),
        Rule::arg(
            SYS_fcntl,
            1,
            F_GETFD as u64,
            "std checks an fd before closing it",
        ),
    ]
}

pub fn rules(kind: &str) -> Vec<Rule> {
    let mut r = common();
    match kind {
        "blk" => r.extend([
            Rule::any(SYS_io_uring_enter, "submitting and reaping block I/O"),
            Rule::any(
                SYS_preadv,
                "synchronous reads (no io_uring, qcow2 metadata)",
            ),
            Rule::any(
                SYS_pwritev,
                "synchronous writes (no io_uring, qcow2 metadata)",
            ),
            Rule::any(
                SYS_pread64,
                "synchronous reads (no io_uring, qcow2 metadata)",
            ),
            Rule::any(
                SYS_pwrite64,
                "synchronous writes (no io_uring, qcow2 metadata)",
            ),
            Rule::any(SYS_fdatasync, "guest flush requests"),
            Rule::any(SYS_fsync, "guest flush requests"),
            Rule::any(
                SYS_fallocate,
                "discard and write-zeroes requests; qcow2 cluster allocation",
            ),
            Rule::any(SYS_ftruncate, "a qcow2 image grows its file"),
            Rule::any(SYS_lseek, "a qcow2 image finds its file's end"),
            Rule::arg(
                SYS_statx,
                2,
                AT_EMPTY_PATH as u64,
                "an image's size (fd only, no path)",
            ),
            Rule::any(SYS_fstat, "an image's size"),
        ]),
        "rng" => r.extend([
            Rule::any(SYS_pread64, "reading the rng-random source file"),
            Rule::arg(SYS_getrandom, 2, 0, "rng-builtin: the kernel's entropy"),
            Rule::any(SYS_timerfd_settime, "the rate limit's period timer"),
            Rule::any(SYS_timerfd_gettime, "the rate limit's period timer"),
        ]),
        "net" => r.extend([
            Rule::any(
                SYS_readv,
                "a frame from the tap straight into guest buffers",
            ),
            Rule::any(
                SYS_writev,
                "a guest frame straight from guest memory to the tap",
            ),
            Rule::arg(
                SYS_recvfrom,
                3,
                libc::MSG_DONTWAIT as u64,
                "passt: the next piece of a length-prefixed frame, never blocking",
            ),
            Rule::ioctl(
                libc::TUNSETQUEUE,
                "multiqueue: attaching and detaching tap queues as the guest enables pairs",
            ),
            Rule::any(
                SYS_poll,
                "passt closed its socket: a short wait on its pidfd for it to have exited",
            ),
            Rule::arg(
                SYS_waitid,
                0,
                libc::P_PIDFD as u64,
                "reaping an ended passt through its pidfd, and no other child",
            ),
        ]),
        "gpu" => r.push(Rule::any(
            SYS_mremap,
            "glibc's realloc grows a large request buffer (ATTACH_BACKING lists)",
        )),
        "vga" => r.extend([
            Rule::any(SYS_timerfd_settime, "the refresh timer"),
            Rule::any(SYS_mremap, "glibc's realloc grows the row buffer"),
            Rule::ioctl(
                super::kvm::KVM_GET_DIRTY_LOG,
                "the framebuffer slot's dirty pages",
            ),
        ]),
        _ => {}
    }
    r
}
