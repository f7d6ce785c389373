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
//!
//! The thread posts each result (`Posted`) before it takes the HBA's lock.
//! A vCPU that reads a busy port's PxIS, PxTFD or PxCI waits for that post
//! for up to `POLL_WAIT` and applies it: on this host an exit costs about
//! 115 us, so a polling driver that would otherwise come back once or
//! twice more (measured: 8.9 exits per 4 KiB write against 7.3 for QEMU)
//! gets its answer in the exit it is in. The wait is bounded, only on a
//! port with a transfer in flight, and spins (see `Posted::take`). It is
//! 300 us, longer than one exit: a 64 KiB read here often takes more than
//! 100 us, and a wait that gives up sends the polling guest round once
//! more, which costs an exit and the rest of the transfer anyway (with
//! 100 us, 5.7 exits per 64 KiB read against 5.0 per 4 KiB).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

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

/// How long a register read of a busy port waits for its transfer.
pub const POLL_WAIT: Duration = Duration::from_micros(300);

/// Results the thread has posted and no one has applied yet.
#[derive(Default)]
pub struct Posted {
    done: Mutex<Vec<Finished>>,
    /// How many `done` holds, for waiting without the lock.
    count: AtomicUsize,
}

impl Posted {
    fn post(&self, f: Finished) {
        let mut g = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        g.push(f);
        self.count.store(g.len(), Ordering::Release);
    }

    /// Everything posted, spinning up to `wait` for a first one. A spin,
    /// not a sleep: the vCPU thread waits on behalf of a guest that is
    /// polling anyway, and a thread that sleeps here lets its CPU go idle,
    /// which on this host makes the transfer's own wake-up slower (a 4 KiB
    /// read at QD1: 939 us per command with a condition variable, 638 us
    /// spinning; the helper's read itself 186 against 136 us).
    pub fn take(&self, wait: Duration) -> Vec<Finished> {
        let end = Instant::now() + wait;
        while self.count.load(Ordering::Acquire) == 0 && Instant::now() < end {
            std::hint::spin_loop();
        }
        let mut g = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        self.count.store(0, Ordering::Release);
        std::mem::take(&mut *g)
    }
}

/// See the module doc.
pub struct Offload {
    tx: Sender<Job>,
    /// Until the thread starts.
    rx: Option<Receiver<Job>>,
    hba: Weak<Mutex<Ahci>>,
    mem: GuestMemoryMmap,
    pub posted: Arc<Posted>,
}

impl Offload {
    pub fn new(hba: Weak<Mutex<Ahci>>, mem: GuestMemoryMmap) -> Self {
        let (tx, rx) = channel();
        Self {
            tx,
            rx: Some(rx),
            hba,
            mem,
            posted: Arc::default(),
        }
    }

    /// Queue `job`; gives it back when there is no thread to run it.
    pub fn submit(&mut self, job: Job) -> Result<(), Job> {
        if let Some(rx) = self.rx.take() {
            let (hba, mem, posted) = (self.hba.clone(), self.mem.clone(), self.posted.clone());
            if let Err(e) = spawn_with_role(Role::IoHelper, "cm-ahci-io".into(), move || {
                serve(&rx, &hba, &mem, &posted)
            }) {
                log::warn!("ahci: no I/O thread ({e}); transfers run on the vCPU thread");
            }
        }
        self.tx.send(job).map_err(|e| e.0)
    }
}

fn serve(rx: &Receiver<Job>, hba: &Weak<Mutex<Ahci>>, mem: &GuestMemoryMmap, posted: &Posted) {
    while let Ok(job) = rx.recv() {
        posted.post(job.run(mem));
        drop(job);
        let Some(hba) = hba.upgrade() else {
            return;
        };
        // A polling vCPU may have applied it already.
        hba.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .apply_posted(Duration::ZERO);
    }
}
