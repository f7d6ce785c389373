//! Ending the process without waiting for KVM's VM teardown.
//!
//! Destroying a VM with an in-kernel irqchip waits for SRCU grace periods
//! (~15-25 ms on this host, tools/teardown/README.md), and the kernel does
//! it inside the exit of the last process holding the VM, before the
//! parent's waitpid returns. So the last boot's VM fd is parked here
//! instead of being closed, and at exit a forked reaper keeps it: the
//! reaper closes every other fd (images, console: nothing the VMM opened
//! stays locked or open), tells the VMM it has done so, waits on a pidfd
//! until the VMM has exited, then exits and pays the teardown where nobody
//! waits for it. Guest RAM is MADV_DONTFORK (memory::mapping), so the fork
//! copies no page tables of it. `CASEMATE_SYNC_TEARDOWN=1` skips all this.
//!
//! As pid 1 of a pid namespace (`casemate-jailer --new-pid-ns`) there is no
//! reaper either: when pid 1 exits the kernel kills and waits for every
//! other process in its namespace, so the teardown would still be paid in
//! the VMM's exit, after a fork for nothing.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;

static PARKED: Mutex<Option<Arc<VmFd>>> = Mutex::new(None);

/// Keep `vm` open until `finish` hands it to the reaper.
pub fn park(vm: Arc<VmFd>) {
    *PARKED.lock().unwrap_or_else(|p| p.into_inner()) = Some(vm);
}

/// Hand a parked VM to a reaper; call last, with no other thread left
/// that matters. Without a parked VM, or on any failure, the VM is simply
/// closed here (the teardown then costs its usual time).
pub fn finish() {
    let Some(vm) = PARKED.lock().unwrap_or_else(|p| p.into_inner()).take() else {
        return;
    };
    if std::env::var_os("CASEMATE_SYNC_TEARDOWN").is_some() {
        return;
    }
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } == 1 {
        return;
    }
    if let Err(e) = hand_off(vm.as_raw_fd()) {
        log::debug!("VM teardown stays in the VMM: {e}");
    }
}

fn hand_off(vmfd: RawFd) -> std::io::Result<()> {
    // SAFETY: pidfd_open(2) on our own pid with no flags returns a new fd
    // or -1; nothing else is touched.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) } as RawFd;
    if pidfd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut pipe = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two fds into the array it is given.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        let e = std::io::Error::last_os_error();
        // SAFETY: closing the pidfd we just opened.
        unsafe { libc::close(pidfd) };
        return Err(e);
    }
    // SAFETY: the child runs only async-signal-safe calls (close_range,
    // close, write, poll, _exit) before it exits, so forking a process
    // that had threads is sound.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        reaper(vmfd, pidfd, pipe[1]);
    }
    // SAFETY: closing our copies of fds this function opened.
    unsafe {
        libc::close(pipe[1]);
        libc::close(pidfd);
    }
    if pid > 0 {
        // Wait until the reaper holds nothing but the VM: the images'
        // locks must be free once this process is gone.
        let mut b = [0u8; 1];
        // SAFETY: reading one byte into a local buffer.
        unsafe { libc::read(pipe[0], b.as_mut_ptr().cast(), 1) };
    }
    // SAFETY: closing the read end this function opened.
    unsafe { libc::close(pipe[0]) };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The reaper's whole life (see the module doc). Never returns.
fn reaper(vmfd: RawFd, pidfd: RawFd, ready: RawFd) -> ! {
    let keep = [vmfd, pidfd, ready];
    let mut from: RawFd = 0;
    let mut sorted = keep;
    sorted.sort_unstable();
    let mut ok = true;
    for k in sorted {
        if k > from {
            // SAFETY: close_range(2) closes fds we own in [from, k - 1].
            ok &= unsafe { libc::syscall(libc::SYS_close_range, from as u32, (k - 1) as u32, 0) }
                == 0;
        }
        from = k + 1;
    }
    // SAFETY: as above, every fd above the last kept one.
    ok &= unsafe { libc::syscall(libc::SYS_close_range, from as u32, u32::MAX, 0) } == 0;
    if !ok {
        // No close_range (kernels before 5.9): this child would keep the
        // images' locks and the console's pipes. Leave without saying
        // ready; the VMM then reads EOF and does the teardown itself.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(1) }
    }
    // SAFETY: write, close, poll and _exit are async-signal-safe and only
    // use the fds kept above.
    unsafe {
        libc::write(ready, [1u8].as_ptr().cast(), 1);
        libc::close(ready);
        let mut p = libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        };
        while libc::poll(&mut p, 1, -1) < 0 && *libc::__errno_location() == libc::EINTR {}
        libc::_exit(0)
    }
}
