//! Emulated ATA storage: the register-level IDE controller QEMU gives
//! `pc` (PIIX3 IDE with bus-master DMA), for disks over the same
//! `casemate_disk::DiskImage` backends as virtio-blk and for ATAPI
//! CD-ROMs.
//!
//! ```text
//!  0x1f0-7/0x3f6 ─▶ ide::CommandPorts/ControlPort ─┐
//!  BAR4 (piix::PiixIde) ───────────────────────────┴─▶ channel::Channel
//!        ├─ regs (taskfile)   ├─ cmd (ATA command decoding)
//!        ├─ unit (disk/CD, IDENTIFY)   ├─ atapi (packet commands)
//!        ├─ bmdma (PRD tables in guest RAM)
//!        └─ direct (raw images: preadv/pwritev into guest RAM)
//! ```
//!
//! Written here rather than taken from a crate: no crate on crates.io
//! models an ATA/ATAPI device or an IDE controller for a VMM.
//! Every value the guest writes is checked: a range past the disk's end,
//! a bad count, a PRD table or region outside RAM, a command to an absent
//! unit end the command with an error status (or, for an absent unit, no
//! answer at all, as on a real cable); nothing panics and nothing is
//! written outside the request.

pub mod ahci;
pub mod atapi;
pub mod bmdma;
pub mod channel;
pub mod cmd;
pub mod direct;
pub mod exec;
pub mod ide;
pub mod piix;
pub mod regs;
pub mod sg;
pub mod unit;

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use channel::Channel;
pub use ide::SharedChannel;
pub use unit::{Media, Unit, UnitConfig};
