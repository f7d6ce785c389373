//! Getting a vCPU thread out of `KVM_RUN` from another thread.
//!
//! Each vCPU thread publishes its `kvm_run` page in a thread-local; the kick
//! signal's handler sets `immediate_exit` there, so a kick that lands just
//! before the thread re-enters `KVM_RUN` is not lost (KVM returns EINTR at
//! once). The handler does nothing else: async-signal-safe by construction.

use std::cell::Cell;
use std::os::unix::thread::JoinHandleExt;
use std::thread::JoinHandle;

use kvm_bindings::kvm_run;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

thread_local! {
    static RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal used for kicks.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let p = RUN.with(|r| r.get());
    if !p.is_null() {
        // SAFETY: `p` was published by this thread from its live VcpuFd's
        // kvm_run mapping and is cleared before that fd is dropped.
        unsafe { std::ptr::addr_of_mut!((*p).immediate_exit).write_volatile(1) };
    }
}

/// Install the handler once per process.
pub fn install() -> Result<(), vmm_sys_util::errno::Error> {
    register_signal_handler(kick_signal(), on_kick)
}

/// Publish this thread's kvm_run page (null to withdraw it).
pub fn publish(run: *mut kvm_run) {
    RUN.with(|r| r.set(run));
}

/// Send the kick to a vCPU thread.
pub fn kick<T>(h: &JoinHandle<T>) {
    // SAFETY: pthread_kill on a thread we have not joined yet; its handler
    // only writes the thread's own kvm_run page.
    let rc = unsafe { libc::pthread_kill(h.as_pthread_t(), kick_signal()) };
    if rc != 0 && rc != libc::ESRCH {
        log::warn!("kicking a vCPU thread failed: errno {rc}");
    }
}

/// Send the kick to a vCPU thread known by its pthread id; the caller
/// guarantees the thread has not ended (see `pause`).
pub fn kick_pthread(t: libc::pthread_t) {
    // SAFETY: the thread is alive (registered under the caller's lock);
    // its handler only writes the thread's own kvm_run page.
    let rc = unsafe { libc::pthread_kill(t, kick_signal()) };
    if rc != 0 && rc != libc::ESRCH {
        log::warn!("kicking a vCPU thread failed: errno {rc}");
    }
}
