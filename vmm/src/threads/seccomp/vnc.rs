//! `Vnc` (`cm-vnc`): the VNC server's poll loop. It accepts on the
//! listener opened at start-up and talks to the accepted sockets; it
//! creates, binds and connects nothing, and opens no files.

use super::Rule;
use libc::*;

pub fn rules() -> Vec<Rule> {
    vec![
        Rule::any(SYS_poll, "waiting on the listener, clients and the surface"),
        Rule::any(
            SYS_ppoll,
            "waiting on the listener, clients and the surface",
        ),
        Rule::any(SYS_accept4, "a new client on the listening socket"),
        Rule::any(SYS_accept, "a new client on the listening socket"),
        Rule::any(SYS_read, "client messages; draining the surface's eventfd"),
        Rule::any(SYS_recvfrom, "client messages"),
        Rule::any(SYS_sendto, "framebuffer updates to a client"),
        Rule::ioctl(FIONBIO, "an accepted client socket made non-blocking"),
        Rule::arg(
            SYS_setsockopt,
            1,
            IPPROTO_TCP as u64,
            "TCP_NODELAY on a client socket",
        ),
        Rule::arg(
            SYS_fcntl,
            1,
            F_GETFL as u64,
            "non-blocking mode of a client",
        ),
        Rule::arg(
            SYS_fcntl,
            1,
            F_SETFL as u64,
            "non-blocking mode of a client",
        ),
        Rule::arg(
            SYS_fcntl,
            1,
            F_GETFD as u64,
            "std checks an fd before closing it",
        ),
        Rule::any(
            SYS_mremap,
            "glibc's realloc grows a large update buffer (a full frame) in place",
        ),
    ]
}
