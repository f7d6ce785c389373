//! Data transfers of AHCI READ and WRITE commands off the vCPU thread.
//!
//! A command runs on the vCPU thread that writes PxCI; without this, its
//! disk access does too, so the guest waits for the exit *and* the disk.
//! Here the vCPU thread checks the command and queues the transfer to one
//! helper thread (`cm-ahci-io`, started at the first transfer), which
//! moves the data and then completes the slot under the HBA's lock
//! (`Ahci::finish`): registers, result FIS, interrupt. The guest's next
//! register accesses overlap the disk access, as with QEMU's asynchronous
//! AHCI. Only transfers move: every other command, and every refusal, is
//! answered on the vCPU thread as before.
//!
//! A port reset or a cleared PxCMD.ST forgets its transfer (an epoch per
//! port); one already on the disk still finishes its copy, as a real
//! device's DMA would, but its completion is dropped. The thread holds the
//! HBA weakly and ends when the HBA (and with it the queue) goes away.
//! If the thread cannot start, transfers run inline.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use casemate_disk::DiskImage;
use vm_memory::GuestMemoryMmap;

use super::Ahci;
use crate::ata::exec::{self, DiskTransfer, Ended};
use crate::ata::sg::Sg;
use crate::threads::{spawn_with_role, Role};

/// One queued transfer and the slot it completes.
pub struct Job {
    pub port: usize,
    pub slot: u32,
    pub epoch: u64,
    pub disk: Arc<dyn DiskImage>,
    pub t: DiskTransfer,
    pub sg: Sg,
}

/// A finished transfer, for `Ahci::finish`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finished {
    pub port: usize,
    pub slot: u32,
    pub epoch: u64,
    pub end: Ended,
}

impl Job {
    pub fn run(&self, mem: &GuestMemoryMmap) -> Finished {
        Finished {
            port: self.port,
            slot: self.slot,
            epoch: self.epoch,
            end: exec::run_transfer(&*self.disk, &self.t, &self.sg, mem),
        }
    }
}

/// See the module doc.
pub struct Offload {
    tx: Sender<Job>,
    /// Until the thread starts.
    rx: Option<Receiver<Job>>,
    hba: Weak<Mutex<Ahci>>,
    mem: GuestMemoryMmap,
}

impl Offload {
    pub fn new(hba: Weak<Mutex<Ahci>>, mem: GuestMemoryMmap) -> Self {
        let (tx, rx) = channel();
        Self {
            tx,
            rx: Some(rx),
            hba,
            mem,
        }
    }

    /// Queue `job`; gives it back when there is no thread to run it.
    pub fn submit(&mut self, job: Job) -> Result<(), Job> {
        if let Some(rx) = self.rx.take() {
            let (hba, mem) = (self.hba.clone(), self.mem.clone());
            if let Err(e) = spawn_with_role(Role::IoHelper, "cm-ahci-io".into(), move || {
                serve(&rx, &hba, &mem)
            }) {
                log::warn!("ahci: no I/O thread ({e}); transfers run on the vCPU thread");
            }
        }
        self.tx.send(job).map_err(|e| e.0)
    }
}

fn serve(rx: &Receiver<Job>, hba: &Weak<Mutex<Ahci>>, mem: &GuestMemoryMmap) {
    while let Ok(job) = rx.recv() {
        let done = job.run(mem);
        drop(job);
        let Some(hba) = hba.upgrade() else {
            return;
        };
        hba.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .finish(done);
    }
}
