//! `Qmp` (`cm-qmp`): the monitors. It accepts clients on sockets bound at
//! start-up, reads and writes them without blocking, polls, and pauses
//! vCPUs by kicking them. It creates no socket (`socket`, `bind`,
//! `connect` stay forbidden) and opens no path.

use super::Rule;
use libc::*;

pub fn rules() -> Vec<Rule> {
    vec![
        Rule::any(
            SYS_poll,
            "one poll over the listeners, clients and the wake-up eventfd",
        ),
        Rule::arg(
            SYS_accept4,
            3,
            SOCK_CLOEXEC as u64,
            "a client connects to a monitor socket bound at start-up",
        ),
        Rule::ioctl(FIONBIO, "an accepted client is made non-blocking"),
        Rule::any(
            SYS_read,
            "client requests, stdin (-monitor stdio), the wake-up eventfd",
        ),
        Rule::any(
            SYS_recvfrom,
            "client requests (std reads sockets with recv)",
        ),
        Rule::any(SYS_sendto, "replies and events to clients"),
        Rule::any(SYS_tgkill, "stop: kicking vCPU threads out of KVM_RUN"),
        Rule::arg(
            SYS_fcntl,
            1,
            F_GETFD as u64,
            "std checks an fd before closing it",
        ),
    ]
}
