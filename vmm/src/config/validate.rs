//! `VmConfig::validate()`: every problem in one report, host limits included.

use std::fmt;

use super::{
    AioConfig, CacheConfig, DetectZeroesConfig, DeviceConfig, DiscardConfig, Transport, VmConfig,
};
use crate::machine::{self, MachineModel};

/// Largest `-m` accepted regardless of host size: 1 TiB is past every
/// memory slot layout this VMM builds.
pub const MAX_MEMORY: u64 = 1 << 40;
/// The smallest RAM the x86 boot layout fits in (tables, boot page, kernel).
pub const MIN_MEMORY: u64 = 2 << 20;
/// xAPIC ids are 8 bits and 0xff is broadcast.
pub const MAX_APIC_ID: u32 = 254;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("-m {0}: guest RAM must be at least 2 MiB")]
    MemoryTooSmall(String),
    #[error("-m {asked}: more than this host's memory ({host})")]
    MemoryExceedsHost { asked: String, host: String },
    #[error("-smp: cpus must be at least 1")]
    NoCpus,
    #[error("-smp: Invalid CPU topology: product of the hierarchy must match maxcpus: sockets ({sockets}) * cores ({cores}) * threads ({threads}) != maxcpus ({cpus})")]
    Topology {
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
    #[error("machine {0} has no ACPI (acpi=on is not possible there)")]
    NoAcpi(&'static str),
    #[error("device {id}: {device} does not exist on machine {machine} (use {instead})")]
    DeviceTransport {
        id: String,
        device: String,
        machine: &'static str,
        instead: String,
    },
    #[error("device {id}: {why}")]
    Device { id: String, why: String },
    #[error("device id '{0}' is used twice")]
    DeviceIdTwice(String),
    #[error("drive {id}: format '{format}' is not supported (raw, qcow2)")]
    DriveFormat { id: String, format: String },
    #[error("drive {id}: num-queues must be 1 to 16")]
    DriveQueues { id: String },
    #[error("drive id '{0}' is used twice")]
    DriveIdTwice(String),
    #[error("drive {0}: setting detect-zeroes to unmap is not allowed without setting discard operation to unmap")]
    DetectZeroesUnmap(String),
    #[error("drive {0}: aio=native was specified, but it requires cache.direct=on (cache=none)")]
    AioNative(String),
    #[error("{count} devices: machine {machine} has room for at most {max} (disks and other devices together)")]
    TooManyDevices {
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
/// `max_vcpus` is KVM's and known only once /dev/kvm is open: `validate`
/// runs before that with `None`, and the builder checks it again.
#[derive(Debug, Clone, Copy)]
pub struct HostLimits {
    pub memory: u64,
    pub max_vcpus: Option<u32>,
}

/// A config that passed `validate`: the only kind the builder accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidConfig(VmConfig);

impl std::ops::Deref for ValidConfig {
    type Target = VmConfig;
    fn deref(&self) -> &VmConfig {
        &self.0
    }
}

impl VmConfig {
    /// Check everything at once; the answer is the config the builder
    /// takes, or every problem found.
    pub fn validate(self, host: &HostLimits) -> Result<ValidConfig, Problems> {
        let p = self.problems(host);
        if p.is_empty() {
            Ok(ValidConfig(self))
        } else {
            Err(Problems(p))
        }
    }

    fn problems(&self, host: &HostLimits) -> Vec<ConfigError> {
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
            // QEMU's rule (maxcpus is cpus here: no CPU hotplug).
            if u64::from(s.cpus) != slots {
                p.push(ConfigError::Topology {
                    cpus: s.cpus,
                    sockets: s.sockets,
                    cores: s.cores,
                    threads: s.threads,
                });
            } else if let Some(max) = host.max_vcpus.filter(|&m| s.cpus > m) {
                p.push(ConfigError::TooManyCpus { cpus: s.cpus, max });
            } else {
                let top = crate::arch::topology::Topology::new(s).apic_id(s.cpus - 1);
                if top > MAX_APIC_ID {
                    p.push(ConfigError::ApicIdsTooLarge(top));
                }
            }
        }
        let m = machine::model(self.machine);
        if self.acpi == Some(true) && !m.acpi_default && m.pci.is_none() {
            p.push(ConfigError::NoAcpi(m.name));
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
            for b in &d.backing {
                if let Some(f) = b.format.as_ref().filter(|f| *f != "raw" && *f != "qcow2") {
                    p.push(ConfigError::DriveFormat {
                        id: format!("{} (backing {})", d.id, b.file.display()),
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
            // Both as QEMU refuses them.
            if d.detect_zeroes == DetectZeroesConfig::Unmap && d.discard != DiscardConfig::Unmap {
                p.push(ConfigError::DetectZeroesUnmap(d.id.clone()));
            }
            if d.aio == Some(AioConfig::Native) && d.cache != CacheConfig::None {
                p.push(ConfigError::AioNative(d.id.clone()));
            }
            p.extend(transport_problem(m, &d.id, d.transport, |t| {
                t.blk_device().to_string()
            }));
        }
        if let Err(e) = super::ata::ide_slots(&self.drives, m) {
            p.push(e);
        }
        let mut dev_ids = std::collections::BTreeSet::new();
        for d in self.devices.iter().map(DeviceConfig::kind) {
            if !dev_ids.insert(d.id()) {
                p.push(ConfigError::DeviceIdTwice(d.id().to_string()));
            }
            if let Err(why) = d.check() {
                p.push(ConfigError::Device {
                    id: d.id().to_string(),
                    why,
                });
            }
            p.extend(transport_problem(m, d.id(), d.transport(), |t| {
                d.qemu_name(t).to_string()
            }));
        }
        // A vfio-user server maps guest RAM through the fds it is sent:
        // only shared, file-backed RAM shows it the guest's writes.
        let ram = self.ram_backend();
        let shareable = ram.share && ram.kind != super::BackendKind::Ram;
        for d in self.devices.iter().filter_map(DeviceConfig::assigned) {
            if !shareable {
                p.push(ConfigError::Device {
                    id: d.id.clone(),
                    why: format!(
                        "vfio-user-pci needs guest RAM the device process can map, and {}{} \
                         cannot be shared: use -object memory-backend-memfd,id=mem,size=... \
                         -machine memory-backend=mem (or memory-backend-file with share=on)",
                        ram.kind.qom_type(),
                        if ram.share { "" } else { " without share=on" }
                    ),
                });
            }
        }
        // IDE drives sit on the chipset's controller, not in a slot.
        let ata = self.drives.iter().filter(|d| d.is_ata(m)).count();
        let count = self.drives.len() - ata + self.devices.len();
        if count > m.device_limit() {
            p.push(ConfigError::TooManyDevices {
                count,
                machine: m.name,
                max: m.device_limit(),
            });
        }
        p
    }
}

/// A device asked on a transport the machine does not have.
fn transport_problem(
    m: &MachineModel,
    id: &str,
    asked: Option<Transport>,
    name: impl Fn(Transport) -> String,
) -> Option<ConfigError> {
    let native = m.virtio_transport();
    let t = asked.filter(|&t| !m.has_transport(t))?;
    Some(ConfigError::DeviceTransport {
        id: id.to_string(),
        device: name(t),
        machine: m.name,
        instead: name(native),
    })
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
        max_vcpus: Some(1024),
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
        let e = c.clone().validate(&HOST).unwrap_err();
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
        let t = c.clone().validate(&HOST).unwrap_err().to_string();
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
        assert!(c.clone().validate(&HOST).is_err());
        c.smp.sockets = 2;
        let t = c.clone().validate(&HOST).unwrap_err().to_string();
        assert!(
            t.contains("Invalid CPU topology"),
            "8 slots for 5 cpus: {t}"
        );
        c.smp.cpus = 8;
        c.clone().validate(&HOST).unwrap();
        c.smp.cpus = 400;
        c.smp.cores = 100;
        let t = c.clone().validate(&HOST).unwrap_err().to_string();
        assert!(t.contains("254"), "{t}");
    }
}
