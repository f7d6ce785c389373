//! How a drive attaches when it is not virtio-blk: `if=ide`, a plain
//! `-drive` on a machine whose default interface is IDE (pc, as QEMU's),
//! `media=cdrom`/`-cdrom`, and `index=`/`bus=`/`unit=`; and the IDE slot
//! each such drive takes, checked against the machine's controllers.
//! On q35 the buses are the AHCI ports (one unit each), as QEMU's.
//! Owns placement rules only; the device models are
//! `casemate_devices::ata`, their wiring `devmgr::ata`.

use serde::{Deserialize, Serialize};

use super::{ConfigError, DriveConfig};
use crate::machine::MachineModel;

/// `-drive if=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriveInterface {
    Virtio,
    Ide,
    /// Carried by a `-device` naming the drive.
    None,
}

/// See the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriveAttach {
    /// None: the machine's default interface.
    pub interface: Option<DriveInterface>,
    /// An ATAPI CD-ROM (read-only, 2048-byte blocks).
    pub cdrom: bool,
    /// `index=` (bus * units per bus + unit).
    pub index: Option<u32>,
    pub bus: Option<u32>,
    pub unit: Option<u32>,
}

/// An IDE drive's place: `drive` indexes `VmConfig::drives`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdeSlot {
    pub drive: usize,
    pub bus: u8,
    pub unit: u8,
}

impl DriveConfig {
    /// Whether the drive goes on the machine's IDE (or, later, AHCI)
    /// controller rather than virtio-blk.
    pub fn is_ata(&self, m: &MachineModel) -> bool {
        self.transport.is_none()
            && match self.attach.interface {
                Some(i) => i == DriveInterface::Ide,
                None => self.attach.cdrom || m.default_ide,
            }
    }
}

fn problem(d: &DriveConfig, why: impl Into<String>) -> ConfigError {
    ConfigError::Device {
        id: d.id.clone(),
        why: why.into(),
    }
}

/// The IDE slot of every ATA drive, in drive order: an explicit
/// `index=` or `bus=`/`unit=` first, the rest in the first free slot, as
/// QEMU assigns them.
pub fn ide_slots(drives: &[DriveConfig], m: &MachineModel) -> Result<Vec<IdeSlot>, ConfigError> {
    let buses = u32::from(m.ide_buses);
    let units = u32::from(m.ide_units).max(1);
    let mut taken: Vec<Option<usize>> = vec![None; (buses * units) as usize];
    let mut out = Vec::new();
    let mut later = Vec::new();
    for (i, d) in drives.iter().enumerate() {
        if !d.is_ata(m) {
            if d.attach.cdrom {
                return Err(problem(d, "media=cdrom needs if=ide"));
            }
            continue;
        }
        if buses == 0 {
            return Err(problem(
                d,
                format!(
                    "machine {} has no IDE controller{} (use if=virtio)",
                    m.name, m.ide_missing
                ),
            ));
        }
        let a = d.attach;
        let at = match (a.index, a.bus, a.unit) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(problem(d, "index= cannot be combined with bus= or unit="))
            }
            (Some(ix), None, None) => Some(ix),
            (None, None, None) => None,
            (None, b, u) => {
                let u = u.unwrap_or(0);
                if u >= units {
                    return Err(problem(
                        d,
                        format!("unit={u}: a bus of machine {} has {units} unit(s)", m.name),
                    ));
                }
                Some(b.unwrap_or(0).saturating_mul(units).saturating_add(u))
            }
        };
        match at {
            Some(ix) => {
                let slot = taken.get_mut(ix as usize).ok_or_else(|| {
                    problem(
                        d,
                        format!(
                            "IDE slot {ix} does not exist (machine {} has {} buses of {} unit(s))",
                            m.name, buses, units
                        ),
                    )
                })?;
                if let Some(o) = slot {
                    return Err(problem(
                        d,
                        format!("IDE slot {ix} is already taken by drive {}", drives[*o].id),
                    ));
                }
                *slot = Some(i);
                out.push(IdeSlot {
                    drive: i,
                    bus: (ix / units) as u8,
                    unit: (ix % units) as u8,
                });
            }
            None => later.push(i),
        }
    }
    for i in later {
        let Some(ix) = taken.iter().position(Option::is_none) else {
            return Err(problem(
                &drives[i],
                format!(
                    "no free IDE slot (machine {} has {})",
                    m.name,
                    buses * units
                ),
            ));
        };
        taken[ix] = Some(i);
        out.push(IdeSlot {
            drive: i,
            bus: (ix / units as usize) as u8,
            unit: (ix % units as usize) as u8,
        });
    }
    out.sort_by_key(|s| s.drive);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{parse, Command};
    use crate::config::MachineKind;
    use crate::machine::model;

    fn drives(args: &[&str]) -> Vec<DriveConfig> {
        match parse(args.iter().map(|s| s.to_string())) {
            Ok(Command::Run { config, .. }) => config.drives,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn slots(m: MachineKind, args: &[&str]) -> Result<Vec<(u8, u8)>, String> {
        ide_slots(&drives(args), model(m))
            .map(|v| v.iter().map(|s| (s.bus, s.unit)).collect())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn plain_drives_are_ide_on_pc_and_virtio_elsewhere() {
        let d = drives(&["-drive", "file=/a"]);
        assert!(d[0].is_ata(model(MachineKind::Pc)));
        assert!(!d[0].is_ata(model(MachineKind::Microvm)));
        assert!(d[0].is_ata(model(MachineKind::Q35)), "AHCI on q35");
        let d = drives(&["-drive", "file=/a,if=virtio"]);
        assert!(!d[0].is_ata(model(MachineKind::Pc)));
    }

    #[test]
    fn slots_follow_qemu_index_bus_unit_and_cdrom_is_secondary_master() {
        assert_eq!(
            slots(
                MachineKind::Pc,
                &[
                    "-drive",
                    "file=/a",
                    "-cdrom",
                    "/c",
                    "-drive",
                    "file=/b,if=ide"
                ]
            ),
            Ok(vec![(0, 0), (1, 0), (0, 1)])
        );
        assert_eq!(
            slots(MachineKind::Pc, &["-drive", "file=/a,if=ide,bus=1,unit=1"]),
            Ok(vec![(1, 1)])
        );
        let d = drives(&["-cdrom", "/c"]);
        assert!(d[0].read_only && d[0].attach.cdrom);
        for (args, want) in [
            (
                &["-drive", "file=/a,index=4"][..],
                "IDE slot 4 does not exist",
            ),
            (&["-drive", "file=/a,unit=2"][..], "has 2 unit(s)"),
            (
                &[
                    "-drive",
                    "file=/a,index=1",
                    "-drive",
                    "file=/b,bus=0,unit=1",
                ][..],
                "already taken",
            ),
            (
                &["-drive", "file=/a,if=virtio,media=cdrom"][..],
                "needs if=ide",
            ),
        ] {
            let e = slots(MachineKind::Pc, args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
        let e = slots(MachineKind::Microvm, &["-drive", "file=/a,if=ide"]).unwrap_err();
        assert!(e.contains("machine microvm has no IDE controller"), "{e}");
        // q35: six AHCI ports of one unit; -cdrom's index 2 is port 2.
        assert_eq!(
            slots(MachineKind::Q35, &["-drive", "file=/a", "-cdrom", "/c"]),
            Ok(vec![(0, 0), (2, 0)])
        );
        let e = slots(MachineKind::Q35, &["-drive", "file=/a,bus=0,unit=1"]).unwrap_err();
        assert!(e.contains("1 unit(s)"), "{e}");
        // QEMU's -device ide-hd/ide-cd on an if=none drive.
        assert_eq!(
            slots(
                MachineKind::Q35,
                &[
                    "-drive",
                    "file=/a,if=none,id=d0",
                    "-device",
                    "ide-hd,drive=d0,bus=ide.4",
                    "-drive",
                    "file=/c,if=none,id=c0,media=cdrom",
                    "-device",
                    "ide-cd,drive=c0,bus=ide.1",
                ]
            ),
            Ok(vec![(4, 0), (1, 0)])
        );
        let five: Vec<&str> = ["-drive", "file=/a"].repeat(5);
        assert!(slots(MachineKind::Pc, &five)
            .unwrap_err()
            .contains("no free IDE slot"));
    }
}
