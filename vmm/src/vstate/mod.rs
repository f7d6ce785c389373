//! Thin KVM wrappers: the VM (memory slots, irqchip, PIT, irqfds), GSI
//! routing for MSI, INTx lines, ioeventfd registration, the vCPU threads
//! and their run loop, and the exit decoding and dispatch.

pub mod coalesced;
pub mod exit;
pub mod fbslot;
pub mod gsi;
pub mod intx;
pub mod ioevents;
pub mod kick;
pub mod pause;
pub mod platform;
pub mod reaper;
pub mod vcpu;
pub mod vfio;
pub mod vm;
