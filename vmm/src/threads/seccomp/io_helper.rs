//! `IoHelper` (`cm-<device>-ioN`): the block pool's threads when io_uring
//! is not used: vectored and plain reads and writes, flushes and
//! allocations on the open image, then an eventfd to the worker.

use super::Rule;
use libc::*;

pub fn rules() -> Vec<Rule> {
    vec![
        Rule::any(SYS_preadv, "guest reads"),
        Rule::any(SYS_pwritev, "guest writes"),
        Rule::any(SYS_pread64, "guest reads; qcow2 metadata"),
        Rule::any(SYS_pwrite64, "guest writes; qcow2 metadata"),
        Rule::any(SYS_fdatasync, "guest flush requests"),
        Rule::any(SYS_fsync, "guest flush requests"),
        Rule::any(
            SYS_fallocate,
            "discard and write-zeroes requests; qcow2 cluster allocation",
        ),
        Rule::any(SYS_ftruncate, "a qcow2 image grows its file"),
        Rule::any(SYS_lseek, "a qcow2 image finds its file's end"),
    ]
}
