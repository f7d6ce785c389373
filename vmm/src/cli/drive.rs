//! `-drive` and `-device virtio-blk-*`: the drive's options (file, format,
//! cache, discard, detect-zeroes, aio, locking) and the device that carries
//! it, paired by id as QEMU does.

use casemate_devices::virtio::poll::DEFAULT_POLL_MAX;

use super::devices::Objects;
use super::{bad, CliError, KeyVals};
use crate::config::{
    AioConfig, CacheConfig, DetectZeroesConfig, DiscardConfig, DriveAttach, DriveConfig,
    DriveInterface, Transport,
};

/// The most queues a virtio-blk device takes (`VmConfig::validate`
/// checks the same limit for --config).
const MAX_QUEUES: u64 = 16;

/// The `poll-max-ns` of `-object iothread,id=ID`. Casemate gives every
/// virtio-blk device its own worker thread, so devices naming one iothread
/// share its polling setting, not a thread (see `virtio::poll`).
fn iothread_poll_max(objects: &Objects, id: &str) -> Result<u64, CliError> {
    match objects.get(id) {
        Some(("iothread", kv)) => match kv.get("poll-max-ns") {
            None => Ok(DEFAULT_POLL_MAX.as_nanos() as u64),
            Some(n) => n.parse::<u64>().map_err(|_| {
                bad(
                    "-object",
                    n,
                    "poll-max-ns must be a whole number of nanoseconds",
                )
            }),
        },
        Some((t, _)) => Err(bad(
            "-device",
            id,
            format!("iothread= names a {t} object, not an iothread"),
        )),
        None => Err(bad("-device", id, "iothread= names no -object iothread")),
    }
}

/// `-drive` and `-device virtio-blk-*` pair up by id, as in QEMU:
/// `if=virtio` drives get their device implicitly, `if=none` drives need one.
#[derive(Default)]
pub(super) struct Drives {
    drives: Vec<(DriveConfig, bool)>,
    /// `-device virtio-blk-*`: drive id, queues, transport, iothread id.
    devices: Vec<(String, u16, Transport, Option<String>)>,
    /// `-device ide-hd|ide-cd`: drive id, CD-ROM, bus and unit.
    ide: Vec<(String, bool, Option<u32>, Option<u32>)>,
    pub(super) snapshot: bool,
}

impl Drives {
    pub(super) fn drive(&mut self, opt: &str, v: &str) -> Result<(), CliError> {
        let kv = KeyVals::parse(opt, v, "file")?;
        let fixed = [
            "file",
            "format",
            "if",
            "readonly",
            "cache",
            "id",
            "snapshot",
            "media",
            "aio",
            "discard",
            "detect-zeroes",
            "file.locking",
            "index",
            "bus",
            "unit",
        ];
        let backing_keys = super::backing::keys(&kv);
        kv.only(opt, &[&fixed[..], &backing_keys].concat())?;
        let backing = super::backing::chain(opt, &kv)?;
        let file = kv
            .get("file")
            .filter(|f| !f.is_empty())
            .ok_or_else(|| bad(opt, v, "file= is required"))?;
        let on_off = |k: &str| -> Result<bool, CliError> {
            match kv.get(k) {
                None | Some("off") => Ok(false),
                Some("on") => Ok(true),
                Some(x) => Err(bad(opt, x, format!("{k} takes on or off"))),
            }
        };
        let (implicit, interface) = match kv.get("if") {
            None => (true, None),
            Some("virtio") => (true, Some(DriveInterface::Virtio)),
            Some("ide") => (true, Some(DriveInterface::Ide)),
            Some("none") => (false, Some(DriveInterface::None)),
            Some(i) => return Err(bad(opt, i, "if is virtio, ide or none")),
        };
        let cdrom = match kv.get("media") {
            None | Some("disk") => false,
            Some("cdrom") => true,
            Some(m) => return Err(bad(opt, m, "media is disk or cdrom")),
        };
        let number = |k: &str| -> Result<Option<u32>, CliError> {
            kv.get(k)
                .map(|n| {
                    n.parse::<u32>()
                        .map_err(|_| bad(opt, n, format!("{k} must be a whole number")))
                })
                .transpose()
        };
        let attach = DriveAttach {
            interface,
            cdrom,
            index: number("index")?,
            bus: number("bus")?,
            unit: number("unit")?,
        };
        let cache = match kv.get("cache").unwrap_or("writeback") {
            "writeback" => CacheConfig::Writeback,
            "none" | "directsync" => CacheConfig::None,
            "writethrough" => CacheConfig::Writethrough,
            "unsafe" => CacheConfig::Unsafe,
            x => {
                return Err(bad(
                    opt,
                    x,
                    "cache is writeback, none, writethrough or unsafe",
                ))
            }
        };
        let id = kv
            .get("id")
            .map_or_else(|| format!("drive{}", self.drives.len()), str::to_string);
        if self.drives.iter().any(|(d, _)| d.id == id) {
            // QEMU's words.
            return Err(bad(opt, &id, format!("Duplicate ID '{id}' for drive")));
        }
        let discard = match kv.get("discard").unwrap_or("ignore") {
            "ignore" | "off" => DiscardConfig::Ignore,
            "unmap" | "on" => DiscardConfig::Unmap,
            x => return Err(bad(opt, x, "discard is ignore or unmap")),
        };
        let detect_zeroes = match kv.get("detect-zeroes").unwrap_or("off") {
            "off" => DetectZeroesConfig::Off,
            "on" => DetectZeroesConfig::On,
            "unmap" => DetectZeroesConfig::Unmap,
            x => return Err(bad(opt, x, "detect-zeroes is off, on or unmap")),
        };
        let aio = match kv.get("aio") {
            None => None,
            Some("threads") => Some(AioConfig::Threads),
            Some("native") => Some(AioConfig::Native),
            Some("io_uring") => Some(AioConfig::IoUring),
            Some(x) => return Err(bad(opt, x, "aio is threads, native or io_uring")),
        };
        let d = DriveConfig {
            id,
            file: file.into(),
            format: kv.get("format").map(str::to_string),
            read_only: on_off("readonly")? || cdrom,
            cache,
            snapshot: on_off("snapshot")?,
            num_queues: 1,
            transport: None,
            locking: match kv.get("file.locking") {
                None | Some("on" | "auto") => true,
                Some("off") => false,
                Some(x) => return Err(bad(opt, x, "file.locking is on, off or auto")),
            },
            discard,
            detect_zeroes,
            aio,
            attach,
            backing,
            poll_max_ns: None,
        };
        self.drives.push((d, implicit));
        Ok(())
    }

    /// `-cdrom FILE`: QEMU's `-drive file=FILE,index=2,media=cdrom`.
    pub(super) fn cdrom(&mut self, opt: &str, file: &str) -> Result<(), CliError> {
        if file.contains(',') {
            return Err(bad(
                opt,
                file,
                "use -drive file=...,media=cdrom for a name with commas",
            ));
        }
        self.drive(opt, &format!("file={file},index=2,media=cdrom"))
    }

    pub(super) fn device(&mut self, opt: &str, v: &str) -> Result<(), CliError> {
        let kv = KeyVals::parse(opt, v, "driver")?;
        if let cd @ ("ide-hd" | "ide-cd") = kv.get("driver").unwrap_or_default() {
            return self.ide_device(opt, v, &kv, cd == "ide-cd");
        }
        let transport = match kv.get("driver").unwrap_or_default() {
            "virtio-blk-device" => Transport::Mmio,
            "virtio-blk-pci" => Transport::Pci,
            d => return Err(CliError::NotYet {
                opt: format!("{opt} {d}"),
                why:
                    "the block devices are virtio-blk-pci (pc, q35) and virtio-blk-device (microvm)",
            }),
        };
        kv.only(
            opt,
            &["driver", "drive", "num-queues", "id", "serial", "iothread"],
        )?;
        let drive = kv
            .get("drive")
            .ok_or_else(|| bad(opt, v, "drive= is required"))?
            .to_string();
        let queues = match kv.get("num-queues") {
            Some(n) => match n.parse::<u64>() {
                Ok(q @ 1..=MAX_QUEUES) => q as u16,
                Ok(_) => return Err(bad(opt, n, format!("num-queues must be 1 to {MAX_QUEUES}"))),
                Err(_) => return Err(bad(opt, n, "num-queues must be a whole number")),
            },
            None => 1,
        };
        let iothread = kv.get("iothread").map(str::to_string);
        self.devices.push((drive, queues, transport, iothread));
        Ok(())
    }

    /// `-device ide-hd|ide-cd,drive=ID[,bus=ide.N][,unit=U]`: QEMU's names
    /// for a disk or CD-ROM on the machine's IDE (pc) or AHCI (q35) bus.
    fn ide_device(&mut self, opt: &str, v: &str, kv: &KeyVals, cd: bool) -> Result<(), CliError> {
        kv.only(opt, &["driver", "drive", "bus", "unit", "id", "serial"])?;
        let drive = kv
            .get("drive")
            .ok_or_else(|| bad(opt, v, "drive= is required"))?
            .to_string();
        let bus = match kv.get("bus") {
            None => None,
            Some(b) => Some(
                b.strip_prefix("ide.")
                    .and_then(|n| n.parse::<u32>().ok())
                    .ok_or_else(|| bad(opt, b, "bus is ide.N"))?,
            ),
        };
        let unit = match kv.get("unit") {
            None => None,
            Some(u) => Some(
                u.parse::<u32>()
                    .map_err(|_| bad(opt, u, "unit must be a whole number"))?,
            ),
        };
        self.ide.push((drive, cd, bus, unit));
        Ok(())
    }

    /// Pair drives with their devices; a device's `iothread=` names an
    /// `-object iothread` in `objects`.
    pub(super) fn finish(mut self, objects: &Objects) -> Result<Vec<DriveConfig>, CliError> {
        for (drive, cd, bus, unit) in &self.ide {
            let Some((d, implicit)) = self.drives.iter_mut().find(|(d, _)| &d.id == drive) else {
                return Err(bad("-device", drive, "no -drive has this id"));
            };
            if *implicit {
                return Err(bad(
                    "-device",
                    drive,
                    "this drive is already used by a device",
                ));
            }
            d.attach.interface = Some(DriveInterface::Ide);
            d.attach.cdrom |= *cd;
            d.read_only |= *cd;
            d.attach.bus = *bus;
            d.attach.unit = *unit;
            *implicit = true;
        }
        for (drive, queues, transport, iothread) in &self.devices {
            let poll_max_ns = match iothread {
                None => None,
                Some(id) => Some(iothread_poll_max(objects, id)?),
            };
            let Some((d, implicit)) = self.drives.iter_mut().find(|(d, _)| &d.id == drive) else {
                return Err(bad("-device", drive, "no -drive has this id"));
            };
            if d.transport.is_some() {
                return Err(bad(
                    "-device",
                    drive,
                    "this drive is already used by a device",
                ));
            }
            d.num_queues = *queues;
            d.transport = Some(*transport);
            d.poll_max_ns = poll_max_ns;
            *implicit = true;
        }
        let mut out = Vec::new();
        for (mut d, used) in self.drives {
            if !used {
                return Err(bad(
                    "-drive",
                    &d.id,
                    "if=none drive is not used by any -device",
                ));
            }
            d.snapshot |= self.snapshot;
            out.push(d);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{parse, Command};
    use crate::config::{AioConfig, DetectZeroesConfig, DiscardConfig, DriveConfig};

    fn drives(args: &[&str]) -> Result<Vec<DriveConfig>, String> {
        match parse(args.iter().map(|s| s.to_string())) {
            Ok(Command::Run { config, .. }) => Ok(config.drives),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn discard_detect_zeroes_and_aio_are_honoured_or_refused_by_name() {
        let d = &drives(&["-drive", "file=/a"]).unwrap()[0];
        assert_eq!(
            (d.discard, d.detect_zeroes, d.aio),
            (DiscardConfig::Ignore, DetectZeroesConfig::Off, None),
            "QEMU's defaults"
        );
        let d = &drives(&[
            "-drive",
            "file=/a,discard=unmap,detect-zeroes=unmap,aio=io_uring",
        ])
        .unwrap()[0];
        assert_eq!(
            (d.discard, d.detect_zeroes, d.aio),
            (
                DiscardConfig::Unmap,
                DetectZeroesConfig::Unmap,
                Some(AioConfig::IoUring)
            )
        );
        let d = &drives(&["-drive", "file=/a,aio=threads,detect-zeroes=on"]).unwrap()[0];
        assert_eq!(d.aio, Some(AioConfig::Threads));
        for (v, name) in [
            ("aio=bogus", "bogus"),
            ("discard=sometimes", "sometimes"),
            ("detect-zeroes=maybe", "maybe"),
        ] {
            let e = drives(&["-drive", &format!("file=/a,{v}")]).unwrap_err();
            assert!(e.contains(name) && e.contains("-drive"), "{e}");
        }
    }

    #[test]
    fn duplicate_drive_ids_and_queue_limits_speak_as_qemu() {
        let e = drives(&["-drive", "file=/a,id=d", "-drive", "file=/b,id=d"]).unwrap_err();
        assert!(e.contains("Duplicate ID 'd' for drive"), "{e}");
        let e = drives(&[
            "-drive",
            "file=/a,if=none,id=d",
            "-device",
            "virtio-blk-pci,drive=d,num-queues=100000",
        ])
        .unwrap_err();
        assert!(e.contains("num-queues must be 1 to 16"), "{e}");
    }
}
