//! vCPU creation, boot configuration and the run loop each vCPU thread
//! (`cm-vcpuN`) executes until the VM stops.
//!
//! The loop decodes exits and hands them to `exit::dispatch`; a reset,
//! power-off or fatal exit is reported to the control thread over a channel
//! and ends the loop. The control thread stops the others with `kick`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::exit::{dispatch, Buses, Exit, Outcome};
use super::kick;

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

/// Everything a vCPU thread needs.
pub struct VcpuRunner {
    pub fd: VcpuFd,
    pub index: u32,
    pub buses: Arc<Buses>,
    pub stop: Arc<AtomicBool>,
    pub events: Sender<VcpuStop>,
}

impl VcpuRunner {
    pub fn set_cpuid(&self, cpuid: &CpuId) -> Result<(), kvm_ioctls::Error> {
        self.fd.set_cpuid2(cpuid)
    }

    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("cm-vcpu{}", self.index))
            .spawn(move || self.run())
    }

    fn run(mut self) {
        kick::publish(self.fd.get_kvm_run());
        let outcome = loop {
            if self.stop.load(Ordering::Acquire) {
                break None;
            }
            match self.fd.run() {
                Ok(exit) => match dispatch(decode(exit), &self.buses) {
                    Outcome::Continue => {}
                    other => break Some(other),
                },
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    self.fd.set_kvm_immediate_exit(0);
                }
                Err(e) => break Some(Outcome::Fatal(format!("KVM_RUN failed: {e}"))),
            }
        };
        kick::publish(std::ptr::null_mut());
        if let Some(outcome) = outcome {
            let regs = matches!(outcome, Outcome::Fatal(_) | Outcome::TripleFault)
                .then(|| dump_regs(&self.fd));
            // The control thread may already be gone if another vCPU won.
            let _ = self.events.send(VcpuStop {
                index: self.index,
                outcome,
                regs,
            });
        }
    }
}
