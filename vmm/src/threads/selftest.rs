//! `casemate --seccomp-selftest ROLE` (hidden; for the tests): build the
//! filters exactly as a VM run does, install ROLE's on this thread, show
//! that an allowed syscall still works, then make one syscall outside the
//! role's list. The SIGSYS handler must end the process (status
//! `seccomp::EXIT_CODE`, one line naming the role and syscall); with
//! `--seccomp kill` the kernel kills it with SIGSYS. Returning at all
//! means the filter let the call through: exit status 1.

use std::io::Write;

use crate::config::SeccompMode;

use super::seccomp::{self, kvm, Filters, ROLES};
use super::Role;

/// The forbidden call for `role`: something another role may do (so an
/// allow-all filter, or one role's list leaking into another's, fails).
fn forbidden(role: Role) -> (i64, [u64; 3], &'static str) {
    let passwd = c"/etc/passwd".as_ptr() as u64;
    let openat = (
        libc::SYS_openat,
        [libc::AT_FDCWD as u64, passwd, libc::O_RDONLY as u64],
        "openat(/etc/passwd)",
    );
    let ioctl = |req: u64, what| (libc::SYS_ioctl, [u64::MAX, req, 0], what);
    match role {
        Role::Main | Role::Prealloc | Role::Collapse | Role::Vnc => openat,
        Role::Spawner => (
            libc::SYS_socket,
            [libc::AF_INET as u64, libc::SOCK_STREAM as u64, 0],
            "socket(AF_INET)",
        ),
        Role::Ctl | Role::IoHelper | Role::Qmp => ioctl(kvm::KVM_RUN, "ioctl(KVM_RUN)"),
        Role::Vcpu => ioctl(kvm::KVM_CREATE_VM, "ioctl(KVM_CREATE_VM)"),
        Role::Worker(_) => ioctl(kvm::KVM_CREATE_VCPU, "ioctl(KVM_CREATE_VCPU)"),
    }
}

/// Run the self-test; returns the exit status only if the filter failed.
pub fn run(role_name: &str, mode: SeccompMode) -> Result<i32, String> {
    let Some(&role) = ROLES.iter().find(|r| r.name() == role_name) else {
        let names: Vec<_> = ROLES.iter().map(|r| r.name()).collect();
        return Err(format!(
            "--seccomp-selftest: unknown role '{role_name}' (roles: {})",
            names.join(", ")
        ));
    };
    let mode = if mode == SeccompMode::Off {
        SeccompMode::Trap
    } else {
        mode
    };
    let filters = Filters::build(mode)
        .map_err(|e| e.to_string())?
        .ok_or("no filters")?;
    seccomp::install_handler().map_err(|e| e.to_string())?;
    filters.apply(role).map_err(|e| e.to_string())?;
    let (nr, a, what) = forbidden(role);
    // Allowed under every role: the line itself is a write(2), and getpid.
    // SAFETY: getpid has no arguments and cannot fail.
    let pid = unsafe { libc::getpid() };
    let _ = writeln!(
        std::io::stderr(),
        "selftest: pid {pid} role {} confined; now {what} (syscall {nr})",
        role.name()
    );
    // SAFETY: the call is made to be refused by the filter; its arguments
    // are a C string literal and plain numbers (fd -1 for ioctls), so it
    // touches nothing even if it did run.
    let rc = unsafe { libc::syscall(nr, a[0], a[1], a[2]) };
    let _ = writeln!(
        std::io::stderr(),
        "selftest: FAILED: role {} allowed {what} (returned {rc})",
        role.name()
    );
    Ok(1)
}
