//! Pins each benchmark VM's vCPU thread to one host CPU, the same CPU for
//! Casemate and QEMU. On this project's 2-CPU host a vCPU spinning on
//! CPU 1 runs the probe's QD1 loops about 30% slower than on CPU 0
//! (measured by moving the thread with taskset: 7073 and 6589 IOPS on
//! CPU 0, 5187 and 5428 on CPU 1), and the scheduler picks per process.
//! Unpinned, every run drew its CPU at random and the virtio-pci QD1
//! ratios swung between 0.77 and 1.41 from one benchmark to the next.
//! Only the vCPU thread is pinned; the VMM's I/O threads run anywhere.
//!
//! The thread is found by name once the VMM started it: Casemate's
//! `cm-vcpu0`, QEMU's `CPU 0/KVM` (QEMU names its threads with
//! `-name ...,debug-threads=on`). The VMM runs under `timeout`, so its pid
//! is the wrapper's child.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// vCPU thread names, Casemate's and QEMU's.
const NAMES: [&str; 2] = ["cm-vcpu0", "CPU 0/KVM"];

/// How long the VMM may take to start its vCPU.
const LIMIT: Duration = Duration::from_secs(10);

/// Pin the vCPU of the VMM under wrapper process `wrapper` to `cpu`, from
/// a thread; it answers whether it did.
pub fn spawn(wrapper: u32, cpu: usize) -> JoinHandle<bool> {
    std::thread::spawn(move || {
        let end = Instant::now() + LIMIT;
        while Instant::now() < end {
            let Ok(kids) =
                std::fs::read_to_string(format!("/proc/{wrapper}/task/{wrapper}/children"))
            else {
                // The wrapper ended: nothing to pin.
                return false;
            };
            for vmm in kids.split_whitespace() {
                if let Some(tid) = vcpu_thread(vmm) {
                    return pin(tid, cpu);
                }
            }
            // The VMM is still setting up: look again shortly. This is a
            // benchmark driver's wait for another process, not a test.
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    })
}

fn vcpu_thread(pid: &str) -> Option<libc::pid_t> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        NAMES
            .contains(&comm.trim_end())
            .then(|| t.file_name().to_str()?.parse().ok())
            .flatten()
    })
}

fn pin(tid: libc::pid_t, cpu: usize) -> bool {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit of `set`; `cpu` is below
    // CPU_SETSIZE (checked by the caller against the host's CPUs).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: sched_setaffinity reads `set` for thread `tid`.
    unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_thread_of_a_wrapped_process_is_found_and_pinned() {
        // `timeout` running a shell whose subshell thread is not named as
        // a vCPU: nothing is pinned, and the pinner ends with the wrapper.
        let mut c = std::process::Command::new("timeout")
            .args(["5", "sleep", "0.2"])
            .spawn()
            .unwrap();
        let h = spawn(c.id(), 0);
        c.wait().unwrap();
        assert!(!h.join().unwrap());
        // This thread, renamed as Casemate names its vCPU, is found.
        let me = std::process::id().to_string();
        assert_eq!(vcpu_thread(&me), None);
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::Builder::new()
            .name("cm-vcpu0".into())
            .spawn(move || {
                // Named before its body runs.
                tx.send(()).unwrap();
                std::thread::park();
            })
            .unwrap();
        rx.recv().unwrap();
        let found = vcpu_thread(&me);
        assert!(found.is_some());
        assert!(pin(found.unwrap(), 0));
        t.thread().unpark();
        t.join().unwrap();
    }
}
