//! `Main`: the process's first thread once resources are open. It asks
//! the spawner for one control thread per boot, joins it, and at the end
//! drops the resources (guest RAM, disk images, the KVM fd) and exits.

use super::Rule;
use libc::*;

pub fn rules() -> Vec<Rule> {
    vec![
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
    ]
}
