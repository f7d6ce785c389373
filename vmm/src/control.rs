//! The control thread's loop (`cm-ctl`), one per boot: it carries out
//! what vCPUs hand over (`PlatformRequest`s: device activation and reset,
//! BAR moves) and replies so the vCPU runs on, and it ends the boot when a
//! vCPU reports a stop: it raises the stop flag, kicks every vCPU out of
//! KVM_RUN, keeps answering requests until all of them have exited, and
//! returns the first stop. A termination signal (forwarded by the main
//! thread as `CtlMsg::Terminate`) ends the boot the same way, as a
//! power-off would. A monitor's `system_reset`, `quit` and power button
//! arrive as `CtlMsg::Host`. Only this thread starts and joins device
//! workers; vCPUs never do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;

use casemate_devices::virtio::WorkerHost;
use casemate_devices::PlatformRequest;

use crate::devmgr::DeviceManager;
use crate::signals::Termination;
use crate::vstate::kick;
use crate::vstate::pause::Pause;
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
    /// A monitor command (QMP, HMP).
    Host(HostAction),
}

/// What a monitor asks of the running boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostAction {
    /// `system_reset`: end this boot as a reset.
    Reset,
    /// `system_powerdown`: press the ACPI power button.
    PowerButton,
    /// `quit`: end the VM (images are flushed as on any end).
    Quit,
}

/// Why a boot ended.
#[derive(Debug)]
pub enum BootEnd {
    /// A vCPU stopped (power-off, reset, fault).
    Vcpu(VcpuStop),
    /// A termination signal.
    Signal(Termination),
    /// A monitor's `system_reset` or `quit`.
    Host(HostAction),
}

/// Serve `rx` until every vCPU in `vcpus` has exited; returns the first
/// stop reported or signal received (None if every vCPU ended without
/// one).
pub fn run(
    rx: &Receiver<CtlMsg>,
    devices: &DeviceManager,
    host: &dyn WorkerHost,
    stop: &AtomicBool,
    pause: &Pause,
    vcpus: Vec<JoinHandle<()>>,
) -> Option<BootEnd> {
    let end = |first: &mut Option<BootEnd>, why| {
        end_with(first, why, stop, &vcpus);
        // Paused vCPUs wake to see the stop flag.
        pause.wake();
    };
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
            CtlMsg::Stopped(s) => end(&mut first, BootEnd::Vcpu(s)),
            CtlMsg::Terminate(t) => end(&mut first, BootEnd::Signal(t)),
            CtlMsg::Host(HostAction::PowerButton) => {
                if !devices.press_power_button() {
                    log::info!(
                        "system_powerdown: the guest has no power button enabled; nothing happens"
                    );
                }
            }
            CtlMsg::Host(a) => end(&mut first, BootEnd::Host(a)),
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
