//! Thin KVM wrappers: the VM (memory slots, irqchip, PIT, irqfds), the vCPU
//! threads and their run loop, and the exit decoding and dispatch.

pub mod exit;
pub mod kick;
pub mod vcpu;
pub mod vm;
