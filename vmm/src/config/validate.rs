//! `VmConfig::validate()`: every problem in one report, host limits included.

use std::fmt;

use super::{MachineKind, VmConfig};

/// Largest `-m` accepted regardless of host size: 1 TiB is past every
/// memory slot layout this VMM builds.
pub const MAX_MEMORY: u64 = 1 << 40;
/// The smallest RAM the x86 boot layout fits in (tables, boot page, kernel).
pub const MIN_MEMORY: u64 = 2 << 20;
/// xAPIC ids are 8 bits and 0xff is broadcast.
pub const MAX_APIC_ID: u32 = 254;
/// virtio-mmio slots on microvm (one free IOAPIC pin each).
pub const MAX_DRIVES: usize = 16;
/// PCI slots on bus 0 left after the host bridge and the ISA/LPC bridge.
pub const MAX_PCI_DRIVES: usize = 29;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("-m {0}: guest RAM must be at least 2 MiB")]
    MemoryTooSmall(String),
    #[error("-m {asked}: more than this host's memory ({host})")]
    MemoryExceedsHost { asked: String, host: String },
    #[error("-smp: cpus must be at least 1")]
    NoCpus,
    #[error("-smp: {cpus} cpus do not fit sockets={sockets} x cores={cores} x threads={threads}")]
    TopologyTooSmall {
        cpus: u32,
        sockets: u32,
        cores: u32,
        threads: u32,
    },
    #[error("-smp: sockets, cores and threads must each be at least 1")]
    ZeroTopology,
    #[error("-smp: {cpus} cpus exceed this host's KVM limit of {max}")]
    TooManyCpus { cpus: u32, max: u32 },
    #[error("-smp: the topology needs APIC ids up to {0}, past the xAPIC limit of 254")]
    ApicIdsTooLarge(u32),
    #[error("memory backend '{id}': size={backend} does not match -m {memory}")]
    BackendSizeMismatch {
        id: String,
        backend: String,
        memory: String,
    },
    #[error("memory backend '{id}': {why}")]
    Backend { id: String, why: String },
    #[error("-machine {0},acpi=off: {0} needs its ACPI tables (PCI interrupt routing, power-off); only microvm runs without")]
    AcpiRequired(&'static str),
    #[error("drive {id}: {device} does not exist on -machine {machine} (use {instead})")]
    DriveTransport {
        id: String,
        device: &'static str,
        machine: &'static str,
        instead: &'static str,
    },
    #[error("drive {id}: format '{format}' is not supported (raw, qcow2)")]
    DriveFormat { id: String, format: String },
    #[error("drive {id}: num-queues must be 1 to 16")]
    DriveQueues { id: String },
    #[error("drive id '{0}' is used twice")]
    DriveIdTwice(String),
    #[error("{count} drives: -machine {machine} has room for at most {max}")]
    TooManyDrives {
        count: usize,
        machine: &'static str,
        max: usize,
    },
}

/// All problems found, printed one per line.
#[derive(Debug)]
pub struct Problems(pub Vec<ConfigError>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Host facts validation depends on, passed in so tests can vary them.
#[derive(Debug, Clone, Copy)]
pub struct HostLimits {
    pub memory: u64,
    pub max_vcpus: u32,
}

impl VmConfig {
    pub fn validate(&self, host: &HostLimits) -> Result<(), Problems> {
        let mut p = Vec::new();
        if self.memory < MIN_MEMORY {
            p.push(ConfigError::MemoryTooSmall(human_size(self.memory)));
        } else if self.memory > host.memory.min(MAX_MEMORY) {
            p.push(ConfigError::MemoryExceedsHost {
                asked: human_size(self.memory),
                host: human_size(host.memory),
            });
        }
        if let Some(b) = &self.memory_backend {
            p.extend(b.problems(self.memory));
        }
        let s = &self.smp;
        if s.cpus == 0 {
            p.push(ConfigError::NoCpus);
        } else if s.sockets == 0 || s.cores == 0 || s.threads == 0 {
            p.push(ConfigError::ZeroTopology);
        } else {
            let slots = u64::from(s.sockets) * u64::from(s.cores) * u64::from(s.threads);
            if u64::from(s.cpus) > slots {
                p.push(ConfigError::TopologyTooSmall {
                    cpus: s.cpus,
                    sockets: s.sockets,
                    cores: s.cores,
                    threads: s.threads,
                });
            } else if s.cpus > host.max_vcpus {
                p.push(ConfigError::TooManyCpus {
                    cpus: s.cpus,
                    max: host.max_vcpus,
                });
            } else {
                let top = crate::arch::topology::Topology::new(s).apic_id(s.cpus - 1);
                if top > MAX_APIC_ID {
                    p.push(ConfigError::ApicIdsTooLarge(top));
                }
            }
        }
        if !self.acpi && self.machine != MachineKind::Microvm {
            p.push(ConfigError::AcpiRequired(self.machine.name()));
        }
        let mut ids = std::collections::BTreeSet::new();
        for d in &self.drives {
            if let Some(f) = &d.format {
                if f != "raw" && f != "qcow2" {
                    p.push(ConfigError::DriveFormat {
                        id: d.id.clone(),
                        format: f.clone(),
                    });
                }
            }
            if !(1..=16).contains(&d.num_queues) {
                p.push(ConfigError::DriveQueues { id: d.id.clone() });
            }
            if !ids.insert(d.id.as_str()) {
                p.push(ConfigError::DriveIdTwice(d.id.clone()));
            }
            let native = self.machine.virtio_transport();
            if let Some(t) = d.transport.filter(|&t| t != native) {
                p.push(ConfigError::DriveTransport {
                    id: d.id.clone(),
                    device: t.blk_device(),
                    machine: self.machine.name(),
                    instead: native.blk_device(),
                });
            }
        }
        let max = match self.machine {
            MachineKind::Microvm => MAX_DRIVES,
            MachineKind::Pc | MachineKind::Q35 => MAX_PCI_DRIVES,
        };
        if self.drives.len() > max {
            p.push(ConfigError::TooManyDrives {
                count: self.drives.len(),
                machine: self.machine.name(),
                max,
            });
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(Problems(p))
        }
    }
}

/// `1.5 GiB`-style rendering for messages.
pub fn human_size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 {
        format!("{v} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SmpConfig;

    const HOST: HostLimits = HostLimits {
        memory: 24 << 30,
        max_vcpus: 1024,
    };

    #[test]
    fn defaults_validate() {
        VmConfig::default().validate(&HOST).unwrap();
    }

    #[test]
    fn reports_every_problem_at_once() {
        let c = VmConfig {
            memory: 0,
            smp: SmpConfig {
                cpus: 0,
                ..Default::default()
            },
            ..Default::default()
        };
        let e = c.validate(&HOST).unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        let text = e.to_string();
        assert!(text.contains("at least 2 MiB"), "{text}");
        assert!(text.contains("cpus must be at least 1"), "{text}");
    }

    #[test]
    fn memory_beyond_host_names_both_sizes() {
        let c = VmConfig {
            memory: 1 << 40,
            ..Default::default()
        };
        let t = c.validate(&HOST).unwrap_err().to_string();
        assert!(t.contains("1 TiB") && t.contains("24 GiB"), "{t}");
    }

    #[test]
    fn topology_checks() {
        let mut c = VmConfig {
            smp: SmpConfig {
                cpus: 5,
                sockets: 1,
                cores: 2,
                threads: 2,
            },
            ..Default::default()
        };
        assert!(c.validate(&HOST).is_err());
        c.smp.sockets = 2;
        c.validate(&HOST).unwrap();
        c.smp.cpus = 300;
        c.smp.cores = 200;
        let t = c.validate(&HOST).unwrap_err().to_string();
        assert!(t.contains("254"), "{t}");
    }
}
