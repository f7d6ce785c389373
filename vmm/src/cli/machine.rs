//! `-machine` and `-cpu`: machine types (QEMU's versioned names map to
//! the machine they version, with a note), `help` listings, and QEMU's
//! named CPU models refused with the nearest supported one.

use super::{bad, CliError, KeyVals};
use crate::config::{CpuModel, MachineKind};

/// What `-machine help` prints.
pub const MACHINE_HELP: &str = "\
Supported machines are:
microvm              microvm (i386) (default): virtio-mmio, no PCI
pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-*)
q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-*)
isapc                ISA-only PC
";

/// What `-cpu help` prints.
pub const CPU_HELP: &str = "\
Available CPUs:
x86 host                  KVM processor with all supported host features
x86 max                   same as host
x86 kvm64                 Common KVM processor
x86 qemu64                QEMU Virtual CPU version 2.5+
Named models of QEMU's table (Haswell, EPYC, ...) are not templates here:
use host, or kvm64/qemu64 for a baseline.
";

/// What `-machine` sets.
#[derive(Debug)]
pub(super) struct MachineOpts {
    /// None when no type was given (a later `-M acpi=off` keeps the type).
    pub kind: Option<MachineKind>,
    pub memory_backend: Option<String>,
    /// `acpi=on|off|auto` (auto: on); None when not given.
    pub acpi: Option<bool>,
    /// What was accepted without effect or renamed, for `--log info`.
    pub notes: Vec<String>,
}

/// A machine type name: ours, QEMU's aliases, and QEMU's versioned names
/// (`pc-q35-2.10`, `pc-i440fx-7.2`), which Casemate does not version: the
/// second value says the name was mapped.
pub(super) fn machine_kind(t: &str) -> Option<(MachineKind, bool)> {
    let versioned = |prefix: &str| {
        t.strip_prefix(prefix)
            .is_some_and(|v| !v.is_empty() && v.split('.').all(|p| p.parse::<u32>().is_ok()))
    };
    match t {
        "microvm" => Some((MachineKind::Microvm, false)),
        "pc" | "pc-i440fx" => Some((MachineKind::Pc, false)),
        "q35" | "pc-q35" => Some((MachineKind::Q35, false)),
        "isapc" => Some((MachineKind::Isapc, false)),
        _ if versioned("pc-i440fx-") => Some((MachineKind::Pc, true)),
        _ if versioned("pc-q35-") => Some((MachineKind::Q35, true)),
        _ => None,
    }
}

pub(super) fn machine(opt: &str, v: &str) -> Result<MachineOpts, CliError> {
    let kv = KeyVals::parse(opt, v, "type")?;
    kv.only(opt, &["type", "accel", "memory-backend", "acpi", "usb"])?;
    let mut notes = Vec::new();
    if let Some(a) = kv.get("accel") {
        if a != "kvm" {
            return Err(bad(opt, a, "only accel=kvm is supported"));
        }
    }
    match kv.get("usb") {
        None | Some("off" | "no" | "false") => {}
        Some(u) => {
            return Err(bad(
                opt,
                u,
                "usb=on: Casemate has no USB controller (usb=off is accepted)",
            ))
        }
    }
    let kind = match kv.get("type") {
        None => None,
        Some(t) => match machine_kind(t) {
            Some((k, mapped)) => {
                if mapped {
                    notes.push(format!(
                        "{opt} {t}: machine types are not versioned here; using {}",
                        crate::machine::model(k).name
                    ));
                }
                Some(k)
            }
            None => {
                return Err(bad(
                    opt,
                    t,
                    "machine types are microvm, pc, q35, isapc (see -machine help)",
                ))
            }
        },
    };
    let acpi = match kv.get("acpi") {
        None => None,
        Some("on" | "auto") => Some(true),
        Some("off") => Some(false),
        Some(a) => return Err(bad(opt, a, "acpi is on, off or auto")),
    };
    Ok(MachineOpts {
        kind,
        memory_backend: kv.get("memory-backend").map(str::to_string),
        acpi,
        notes,
    })
}

/// QEMU's named x86 CPU models (QEMU 7.2's `-cpu help`, versions and
/// aliases aside), with the supported model nearest to each: old
/// baselines are closest to kvm64/qemu64, recent ones to host.
const QEMU_MODELS: &[(&str, &str)] = &[
    ("486", "qemu64"),
    ("pentium", "qemu64"),
    ("pentium2", "qemu64"),
    ("pentium3", "qemu64"),
    ("coreduo", "qemu64"),
    ("core2duo", "kvm64"),
    ("n270", "qemu64"),
    ("athlon", "qemu64"),
    ("phenom", "qemu64"),
    ("qemu32", "qemu64"),
    ("kvm32", "kvm64"),
    ("Conroe", "kvm64"),
    ("Penryn", "kvm64"),
    ("Nehalem", "kvm64"),
    ("Westmere", "kvm64"),
    ("SandyBridge", "host"),
    ("IvyBridge", "host"),
    ("Haswell", "host"),
    ("Haswell-noTSX", "host"),
    ("Broadwell", "host"),
    ("Broadwell-noTSX", "host"),
    ("Skylake-Client", "host"),
    ("Skylake-Server", "host"),
    ("Cascadelake-Server", "host"),
    ("Cooperlake", "host"),
    ("Icelake-Server", "host"),
    ("SapphireRapids", "host"),
    ("Snowridge", "host"),
    ("Denverton", "host"),
    ("KnightsMill", "host"),
    ("Opteron_G1", "kvm64"),
    ("Opteron_G2", "kvm64"),
    ("Opteron_G3", "kvm64"),
    ("Opteron_G4", "host"),
    ("Opteron_G5", "host"),
    ("EPYC", "host"),
    ("EPYC-IBPB", "host"),
    ("EPYC-Rome", "host"),
    ("EPYC-Milan", "host"),
    ("Dhyana", "host"),
    ("base", "qemu64"),
];

pub(super) fn cpu(opt: &str, v: &str) -> Result<CpuModel, CliError> {
    let model = v.split(',').next().unwrap_or_default();
    let known = match model {
        "host" | "max" => Some(CpuModel::Host),
        "kvm64" => Some(CpuModel::Kvm64),
        "qemu64" => Some(CpuModel::Qemu64),
        _ => None,
    };
    if let Some(m) = known {
        if v.contains(',') {
            return Err(bad(opt, v, "CPU feature flags are not supported"));
        }
        return Ok(m);
    }
    // Versioned names (`Haswell-v4`) and aliases compare without case.
    let base = model.rsplit_once("-v").map_or(model, |(b, _)| b);
    match QEMU_MODELS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(base))
    {
        Some((n, near)) => Err(bad(
            opt,
            model,
            format!("QEMU's {n} model is not a CPUID template here; the nearest supported is -cpu {near}"),
        )),
        None => Err(bad(
            opt,
            model,
            "CPU models are host, max, kvm64, qemu64 (see -cpu help)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_machine_names_map_with_a_note() {
        assert_eq!(machine_kind("pc-q35-2.10"), Some((MachineKind::Q35, true)));
        assert_eq!(machine_kind("pc-i440fx-7.2"), Some((MachineKind::Pc, true)));
        assert_eq!(machine_kind("pc-q35-"), None);
        assert_eq!(machine_kind("pc-q35-x"), None);
        let m = machine("-M", "pc-q35-7.2").unwrap();
        assert_eq!(m.kind, Some(MachineKind::Q35));
        assert!(m.notes[0].contains("pc-q35-7.2"), "{:?}", m.notes);
        assert!(machine("-M", "usb=off").unwrap().kind.is_none());
        let e = machine("-M", "q35,usb=on").unwrap_err().to_string();
        assert!(e.contains("USB"), "{e}");
    }

    #[test]
    fn named_cpu_models_name_the_nearest_supported_one() {
        for (m, near) in [
            ("Haswell", "host"),
            ("Skylake-Server-v4", "host"),
            ("EPYC", "host"),
            ("Opteron_G1", "kvm64"),
        ] {
            let e = cpu("-cpu", m).unwrap_err().to_string();
            assert!(e.contains(&format!("-cpu {near}")) && e.contains(m), "{e}");
        }
        assert!(cpu("-cpu", "Nonesuch")
            .unwrap_err()
            .to_string()
            .contains("help"));
        assert_eq!(cpu("-cpu", "max"), Ok(CpuModel::Host));
    }
}
