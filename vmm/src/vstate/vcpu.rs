//! vCPU creation, boot configuration and the run loop each vCPU thread
//! (`cm-vcpuN`) executes until the VM stops.
//!
//! The loop decodes exits and hands them to `exit::dispatch`. A write
//! that needs the platform changed (a device starting, a BAR moving)
//! comes back as `Outcome::Platform`: the vCPU sends it to the control
//! thread and waits for the reply, the only place a vCPU waits on another
//! thread. A reset, power-off or fatal exit is reported to the control
//! thread and ends the loop; the control thread stops the others with
//! `kick`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::exit::{dispatch, Buses, Exit, Outcome};
use super::kick;
use crate::control::CtlMsg;
use crate::threads::{spawn_with_role, Role};

/// Why a vCPU thread stopped, as reported to the control thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuStop {
    pub index: u32,
    pub outcome: Outcome,
    /// A register dump for fatal outcomes.
    pub regs: Option<String>,
}

fn decode(exit: VcpuExit<'_>) -> Exit<'_> {
    match exit {
        VcpuExit::IoIn(port, data) => Exit::PioRead { port, data },
        VcpuExit::IoOut(port, data) => Exit::PioWrite { port, data },
        VcpuExit::MmioRead(addr, data) => Exit::MmioRead { addr, data },
        VcpuExit::MmioWrite(addr, data) => Exit::MmioWrite { addr, data },
        VcpuExit::Hlt => Exit::Halt,
        VcpuExit::Shutdown => Exit::Shutdown,
        VcpuExit::SystemEvent(kind, _) => match kind {
            kvm_bindings::KVM_SYSTEM_EVENT_RESET => Exit::SystemReset,
            kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => Exit::SystemOff,
            k => Exit::Fatal(format!("unhandled KVM system event {k}")),
        },
        VcpuExit::IrqWindowOpen | VcpuExit::Intr => Exit::Ignore,
        VcpuExit::InternalError => Exit::Fatal("KVM internal error (emulation failure)".into()),
        VcpuExit::FailEntry(reason, cpu) => Exit::Fatal(format!(
            "KVM entry failed: hardware reason {reason:#x} on host CPU {cpu}"
        )),
        other => Exit::Fatal(format!("unhandled KVM exit {other:?}")),
    }
}

/// The general and control registers, one line each group.
pub fn dump_regs(vcpu: &VcpuFd) -> String {
    let (Ok(r), Ok(s)) = (vcpu.get_regs(), vcpu.get_sregs()) else {
        return "registers unavailable".into();
    };
    format!(
        "RIP={:016x} RSP={:016x} RFLAGS={:08x}\n\
         RAX={:016x} RBX={:016x} RCX={:016x} RDX={:016x}\n\
         RSI={:016x} RDI={:016x} RBP={:016x}\n\
         R8 ={:016x} R9 ={:016x} R10={:016x} R11={:016x}\n\
         R12={:016x} R13={:016x} R14={:016x} R15={:016x}\n\
         CS={:04x} DPL={} L={} SS={:04x} CR0={:08x} CR2={:016x} CR3={:016x} CR4={:08x} EFER={:x}\n\
         GDT={:016x}/{:x} IDT={:016x}/{:x} TR={:04x}",
        r.rip,
        r.rsp,
        r.rflags,
        r.rax,
        r.rbx,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        r.rbp,
        r.r8,
        r.r9,
        r.r10,
        r.r11,
        r.r12,
        r.r13,
        r.r14,
        r.r15,
        s.cs.selector,
        s.cs.dpl,
        s.cs.l,
        s.ss.selector,
        s.cr0,
        s.cr2,
        s.cr3,
        s.cr4,
        s.efer,
        s.gdt.base,
        s.gdt.limit,
        s.idt.base,
        s.idt.limit,
        s.tr.selector
    )
}

/// Hand KVM's queued writes to their devices, then the exit: devices see
/// accesses in guest order.
fn drain_then_dispatch(
    exit: super::exit::Exit<'_>,
    buses: &Buses,
    ring: &Option<Arc<super::coalesced::CoalescedRing>>,
) -> Outcome {
    if let Some(r) = ring {
        r.drain(buses);
    }
    dispatch(exit, buses)
}

/// Everything a vCPU thread needs.
pub struct VcpuRunner {
    pub fd: VcpuFd,
    pub index: u32,
    pub buses: Arc<Buses>,
    pub stop: Arc<AtomicBool>,
    pub ctl: Sender<CtlMsg>,
    /// Queued port writes to hand to devices before any exit (IDE data).
    pub coalesced: Option<Arc<super::coalesced::CoalescedRing>>,
    /// The process's run state (`stop`/`cont`, `-S`).
    pub pause: Arc<super::pause::Pause>,
}

impl VcpuRunner {
    pub fn set_cpuid(&self, cpuid: &CpuId) -> Result<(), kvm_ioctls::Error> {
        self.fd.set_cpuid2(cpuid)
    }

    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        spawn_with_role(Role::Vcpu, format!("cm-vcpu{}", self.index), move || {
            self.run()
        })
    }

    fn run(mut self) {
        kick::publish(self.fd.get_kvm_run());
        self.pause.register(self.index);
        // Returns from KVM_RUN to this loop, logged at info level when
        // the vCPU ends: casemate-iobench reads it as exits per I/O. A
        // local counter: the loop's cost stays one add.
        let mut exits: u64 = 0;
        let outcome = loop {
            self.pause.park_if_paused(&self.stop);
            if self.stop.load(Ordering::Acquire) {
                break None;
            }
            let ran = self.fd.run();
            exits += 1;
            match ran {
                Ok(exit) => match drain_then_dispatch(decode(exit), &self.buses, &self.coalesced) {
                    Outcome::Continue => {}
                    Outcome::Platform(req) => {
                        let (done, wait) = mpsc::sync_channel(1);
                        if self.ctl.send(CtlMsg::Request { req, done }).is_err() {
                            break None;
                        }
                        // Nothing to learn from the reply but that the
                        // platform change is in place; a closed channel
                        // means the VM is stopping, seen at the loop top.
                        let _ = wait.recv();
                    }
                    other => break Some(other),
                },
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                }
                Err(e) => break Some(Outcome::Fatal(format!("KVM_RUN failed: {e}"))),
            }
        };
        self.pause.unregister(self.index);
        kick::publish(std::ptr::null_mut());
        log::info!("vcpu{} exits to the VMM: {exits}", self.index);
        if let Some(outcome) = outcome {
            let regs = matches!(outcome, Outcome::Fatal(_) | Outcome::TripleFault)
                .then(|| dump_regs(&self.fd));
            let _ = self.ctl.send(CtlMsg::Stopped(VcpuStop {
                index: self.index,
                outcome,
                regs,
            }));
        }
        let _ = self.ctl.send(CtlMsg::Exited(self.index));
    }
}
