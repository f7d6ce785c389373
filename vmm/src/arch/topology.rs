//! vCPU index <-> APIC id under a sockets/cores/threads topology.
//!
//! APIC ids pack thread, core and socket into bit fields each as wide as the
//! next power of two, as real x86 parts (and QEMU) do; CPUID's topology
//! leaves describe the same widths, so the guest decodes the ids we assign.

use crate::config::SmpConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    pub sockets: u32,
    pub cores: u32,
    pub threads: u32,
}

fn bits_for(n: u32) -> u32 {
    n.max(1).next_power_of_two().trailing_zeros()
}

impl Topology {
    pub fn new(s: &SmpConfig) -> Self {
        Self {
            sockets: s.sockets.max(1),
            cores: s.cores.max(1),
            threads: s.threads.max(1),
        }
    }

    pub fn thread_bits(&self) -> u32 {
        bits_for(self.threads)
    }

    pub fn core_bits(&self) -> u32 {
        bits_for(self.cores)
    }

    /// APIC id of the vCPU with index `i` (0-based, BSP first).
    pub fn apic_id(&self, i: u32) -> u32 {
        let thread = i % self.threads;
        let core = (i / self.threads) % self.cores;
        let socket = i / (self.threads * self.cores);
        socket << (self.thread_bits() + self.core_bits()) | core << self.thread_bits() | thread
    }

    /// Logical processors per package.
    pub fn threads_per_package(&self) -> u32 {
        self.cores * self.threads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_pack_fields_with_power_of_two_widths() {
        let t = Topology::new(&SmpConfig {
            cpus: 12,
            sockets: 2,
            cores: 3,
            threads: 2,
        });
        assert_eq!((t.thread_bits(), t.core_bits()), (1, 2));
        let ids: Vec<u32> = (0..12).map(|i| t.apic_id(i)).collect();
        assert_eq!(ids, vec![0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]);
        let flat = Topology::new(&SmpConfig {
            cpus: 2,
            sockets: 1,
            cores: 2,
            threads: 1,
        });
        assert_eq!((flat.apic_id(0), flat.apic_id(1)), (0, 1));
    }
}
