//! `casemate-jailer`: builds a jail for one `casemate` VM and execs it there.
//!
//! Order of work: [`cli::parse`] → [`plan::JailPlan::new`] (pure, from the
//! arguments and a [`host::HostInfo`]), plus the backing chains of qcow2
//! drives ([`chain`], read from the image headers) → [`run::jail`], which
//! applies the plan through the small functions in [`steps`]. See
//! jailer/README.md for what each step guarantees and what it does not.

pub mod chain;
pub mod cli;
pub mod host;
pub mod plan;
pub mod run;
pub mod steps;

use std::error::Error;

/// One line for an error and its whole `source` chain, plus a hint when the
/// root cause is a missing privilege (the step is named by the message).
pub fn error_line(err: &(dyn Error + 'static)) -> String {
    let mut line = err.to_string();
    let mut cur = err.source();
    let mut perm = false;
    while let Some(e) = cur {
        line.push_str(": ");
        line.push_str(&e.to_string());
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            perm |= matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES));
        }
        cur = e.source();
    }
    // SAFETY: geteuid has no preconditions.
    if perm && unsafe { libc::geteuid() } != 0 {
        line.push_str(" (this step needs root: run the jailer as root)");
    }
    line
}
