//! x86_64 platform pieces: the guest physical layout, CPU topology and CPUID,
//! boot-time registers, and the firmware tables (MP, ACPI) a guest reads.
//! Pure functions over guest memory and plain data; no KVM calls except
//! where a function takes a vCPU fd to program it.

pub mod acpi;
pub mod cpuid;
pub mod layout;
pub mod mptable;
pub mod regs;
pub mod topology;
