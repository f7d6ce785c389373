//! The control thread's loop (`cm-ctl`), one per boot: it carries out
//! what vCPUs hand over (`PlatformRequest`s: device activation and reset,
//! BAR moves) and replies so the vCPU runs on, and it ends the boot when a
//! vCPU reports a stop: it raises the stop flag, kicks every vCPU out of
//! KVM_RUN, keeps answering requests until all of them have exited, and
//! returns the first stop. A termination signal (forwarded by the main
//! thread as `CtlMsg::Terminate`) ends the boot the same way, as a
//! power-off would. Only this thread starts and joins device workers;
//! vCPUs never do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;

use casemate_devices::virtio::WorkerHost;
use casemate_devices::PlatformRequest;

use crate::devmgr::DeviceManager;
use crate::signals::Termination;
use crate::vstate::kick;
use crate::vstate::vcpu::VcpuStop;

/// What vCPU threads tell the control thread.
#[derive(Debug)]
pub enum CtlMsg {
    /// Do `req`, then reply on `done`; the vCPU waits for the reply.
    Request {
        req: PlatformRequest,
        done: SyncSender<()>,
    },
    /// A vCPU left its loop for this reason (power-off, reset, fault).
    Stopped(VcpuStop),
    /// A vCPU thread is about to end.
    Exited(u32),
    /// SIGTERM, SIGINT or SIGHUP: end the VM (from the main thread).
    Terminate(Termination),
}

/// Why a boot ended.
#[derive(Debug)]
pub enum BootEnd {
    /// A vCPU stopped (power-off, reset, fault).
    Vcpu(VcpuStop),
    /// A termination signal.
    Signal(Termination),
}

/// Serve `rx` until every vCPU in `vcpus` has exited; returns the first
/// stop reported or signal received (None if every vCPU ended without
/// one).
pub fn run(
    rx: &Receiver<CtlMsg>,
    devices: &DeviceManager,
    host: &dyn WorkerHost,
    stop: &AtomicBool,
    vcpus: Vec<JoinHandle<()>>,
) -> Option<BootEnd> {
    let mut first = None;
    let mut exited = 0;
    while exited < vcpus.len() {
        let Ok(msg) = rx.recv() else {
            break;
        };
        match msg {
            CtlMsg::Request { req, done } => {
                // Once stopping, nothing new is started: the reply alone
                // lets the vCPU reach its stop check.
                if !stop.load(Ordering::Acquire) {
                    devices.handle(req, host);
                }
                let _ = done.send(());
            }
            CtlMsg::Stopped(s) => end_with(&mut first, BootEnd::Vcpu(s), stop, &vcpus),
            CtlMsg::Terminate(t) => end_with(&mut first, BootEnd::Signal(t), stop, &vcpus),
            CtlMsg::Exited(_) => exited += 1,
        }
    }
    for h in vcpus {
        // A panicking vCPU thread aborts the process (panic = abort).
        let _ = h.join();
    }
    first
}

/// The first reason to end wins: raise the stop flag and kick every vCPU
/// out of KVM_RUN.
fn end_with(
    first: &mut Option<BootEnd>,
    why: BootEnd,
    stop: &AtomicBool,
    vcpus: &[JoinHandle<()>],
) {
    if first.is_none() {
        *first = Some(why);
        stop.store(true, Ordering::Release);
        vcpus.iter().for_each(kick::kick);
    }
}
