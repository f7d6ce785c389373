//! QEMU-syntax command line to `VmConfig`: the only place that knows flag names.
//!
//! Supported options parse into config; options QEMU users may bring that
//! Casemate does not support yet are rejected by name with the reason. Nothing
//! here touches the host: size limits that depend on the host are checked by
//! `VmConfig::validate`.

mod devices;
mod net;
mod rng;

use std::path::PathBuf;

use crate::config::{
    BackendKind, CacheConfig, CpuModel, DriveConfig, FdSetConfig, MachineKind, MemoryBackendConfig,
    RtcConfig, SerialConfig, SmpConfig, Transport, VmConfig,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    #[error("unknown option '{0}' (see casemate --help)")]
    Unknown(String),
    #[error("option '{0}' needs a value")]
    MissingValue(String),
    #[error("option '{opt}' is not supported yet: {why}")]
    NotYet { opt: String, why: &'static str },
    #[error("{opt}: invalid value '{value}': {why}")]
    BadValue {
        opt: String,
        value: String,
        why: String,
    },
    #[error("{opt}: unsupported property '{key}'")]
    BadKey { opt: String, key: String },
    #[error("unexpected argument '{0}'")]
    Stray(String),
    #[error("--config cannot be combined with VM options such as '{0}'")]
    ConfigPlusOptions(String),
}

/// What the user asked the binary to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run {
        config: Box<VmConfig>,
        log: Option<String>,
    },
    RunConfigFile {
        path: PathBuf,
        log: Option<String>,
    },
    WriteProbe(PathBuf),
    Help,
    Version,
}

pub const HELP: &str = "\
usage: casemate [options]
Boots a KVM microVM. With no -kernel it boots the embedded probe guest.

QEMU-compatible options:
  -machine|-M TYPE[,accel=kvm][,memory-backend=ID][,acpi=on|off]
                                machine type: microvm (default; virtio-mmio),
                                pc (i440FX + PIIX3) or q35 (PCIe + ICH9, ECAM);
                                guest RAM from the memory backend object ID;
                                or isapc (pc without PCI or ACPI);
                                acpi=off: no ACPI tables (microvm: virtio-mmio
                                devices announced on the kernel command line;
                                pc, q35: PCI interrupts in the MP table)
  -cpu host|kvm64|qemu64        CPUID template (default host)
  -smp [cpus=]N[,sockets=S][,cores=C][,threads=T][,maxcpus=N]
  -m [size=]SIZE                guest RAM; no suffix means MiB (default 128M)
  -object memory-backend-ram|memory-backend-memfd|memory-backend-file,id=ID,size=SIZE
          [,prealloc=on][,prealloc-threads=N][,share=on|off][,merge=on|off][,dump=on|off]
          [,hugetlb=on][,hugetlbsize=2M|1G] (memfd) [,mem-path=PATH] (file)
                                guest RAM backend; size must equal -m. A memfd
                                shows in /proc/PID/fd as /memfd:ID, for other
                                processes to map (share=on, the memfd default)
  -overcommit mem-lock=on|off   mlock guest RAM
  -kernel FILE                  ELF (64- or 32-bit, PVH or Linux 64-bit entry) or bzImage
  -initrd FILE                  initial ramdisk
  -append CMDLINE               kernel command line
  -serial stdio|file:PATH|none  where COM1 goes (default stdio)
  -nographic, -display none     no display (Casemate has none anyway)
  -no-reboot                    a guest reset ends the VM with exit 0
  -rtc base=utc|localtime|YYYY-MM-DD[THH:MM:SS]
  -enable-kvm, -accel kvm       accepted (KVM is the only accelerator)
  -nodefaults                   no default serial port
  -name NAME                    accepted; names nothing yet
Casemate options:
  --config FILE                 the VM as a JSON VmConfig instead of options
  --write-probe PATH            write the embedded probe guest ELF and exit
  --thp on|off                  transparent huge pages for guest RAM not on
                                hugetlb (default on, as QEMU)
  --log LEVEL                   error|warn|info|debug|trace on stderr (default warn)
  -h, --help                    this text
  -V, --version                 version
  -drive file=F[,format=raw|qcow2][,if=virtio|none][,id=ID][,readonly=on]
         [,cache=writeback|none|writethrough|unsafe][,snapshot=on]
  -device virtio-blk-device|virtio-blk-pci,drive=ID[,num-queues=N]
                                the disk on virtio-mmio (microvm) or virtio-pci
                                (pc, q35); if=virtio picks the machine's own
  -snapshot                     all drives write to a temporary overlay
                                (kept across guest reboots, gone at exit)
  -object rng-random,id=ID[,filename=/dev/urandom] | rng-builtin,id=ID
  -device virtio-rng-pci|virtio-rng-device[,rng=ID][,max-bytes=N][,period=MS]
                                entropy device (virtio-rng), rate-limited to
                                max-bytes per period as QEMU
  -add-fd fd=N,set=S[,opaque=STR]
                                an inherited fd; name it as /dev/fdset/S in
                                -drive file=, -kernel, -initrd, filename=
  -netdev tap,id=ID,ifname=NAME|fd=N[,script=no,downscript=no][,vhost=off]
  -device virtio-net-pci|virtio-net-device,netdev=ID[,mac=52:54:00:12:34:56]
  -nic tap,ifname=NAME[,model=virtio|virtio-net-pci|virtio-net-device][,mac=]
  -net nic[,model=virtio][,macaddr=] -net tap,ifname=NAME   -net none, -nic none
                                virtio-net over a tap (created or attached by
                                name, or inherited); MACs default to QEMU's
                                52:54:00:12:34:56 (+1 per NIC); no ifup scripts
Not supported yet (rejected by name): -netdev user|bridge, other -object and
-device types, -vga, -monitor, -S, -bios, -hda, -cdrom.
";

const NOT_YET: &[(&str, &str)] = &[
    ("hda", "use -drive file=...,if=virtio"),
    ("cdrom", "no CD-ROM device"),
    ("vga", "no display devices yet"),
    ("monitor", "no monitor yet"),
    ("qmp", "no monitor yet"),
    ("S", "no monitor to continue a paused VM from"),
    ("bios", "Casemate boots kernels directly, without firmware"),
];

/// Parse `args` (without the program name).
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, CliError> {
    let mut it = args.into_iter();
    let mut c = VmConfig::default();
    let mut log = None;
    let mut config_file = None;
    let mut first_vm_opt: Option<String> = None;
    let mut serial_set = false;
    let mut drives = Drives::default();
    let mut nodefaults = false;
    let mut memory_set = false;
    let mut backends: Vec<MemoryBackendConfig> = Vec::new();
    let mut backend_id: Option<String> = None;
    let mut objects = devices::Objects::default();
    // Other -device options wait for every -object (QEMU creates objects
    // first, so a device may name one given after it).
    let mut other_devices: Vec<(String, KeyVals, Transport, devices::DeviceParser)> = Vec::new();
    while let Some(raw) = it.next() {
        let Some(name) = raw.strip_prefix("--").or_else(|| raw.strip_prefix('-')) else {
            return Err(CliError::Stray(raw));
        };
        let val = |it: &mut dyn Iterator<Item = String>| {
            it.next().ok_or_else(|| CliError::MissingValue(raw.clone()))
        };
        let is_vm_opt = !matches!(name, "log" | "config");
        if is_vm_opt && first_vm_opt.is_none() {
            first_vm_opt = Some(raw.clone());
        }
        match name {
            "h" | "help" => return Ok(Command::Help),
            "V" | "version" => return Ok(Command::Version),
            "write-probe" => return Ok(Command::WriteProbe(val(&mut it)?.into())),
            "config" => config_file = Some(PathBuf::from(val(&mut it)?)),
            "log" => log = Some(val(&mut it)?),
            "M" | "machine" => {
                let m = machine(&raw, &val(&mut it)?)?;
                c.machine = m.kind;
                c.acpi = m.acpi.or(c.acpi);
                backend_id = m.memory_backend.or(backend_id);
            }
            "object" => {
                let v = val(&mut it)?;
                if !objects.add(&raw, KeyVals::parse(&raw, &v, "qom-type")?)? {
                    backends.push(object(&raw, &v)?);
                }
            }
            "add-fd" => c.fdsets.push(add_fd(&raw, &val(&mut it)?)?),
            "overcommit" => c.mem_lock = overcommit(&raw, &val(&mut it)?)?,
            "thp" => c.thp = on_off(&raw, "thp", &val(&mut it)?)?,
            "cpu" => c.cpu = cpu(&raw, &val(&mut it)?)?,
            "smp" => c.smp = smp(&raw, &val(&mut it)?)?,
            "m" => {
                c.memory = memory(&raw, &val(&mut it)?)?;
                memory_set = true;
            }
            "kernel" => c.kernel = Some(val(&mut it)?.into()),
            "initrd" => c.initrd = Some(val(&mut it)?.into()),
            "append" => c.append = val(&mut it)?,
            "serial" => {
                c.serial = serial(&raw, &val(&mut it)?)?;
                serial_set = true;
            }
            "nographic" | "enable-kvm" | "no-user-config" => {}
            "nodefaults" => nodefaults = true,
            "display" => {
                let v = val(&mut it)?;
                if v != "none" {
                    return Err(bad(&raw, &v, "only 'none': Casemate has no display"));
                }
            }
            "accel" => {
                let v = val(&mut it)?;
                let kv = KeyVals::parse(&raw, &v, "accel")?;
                if kv.get("accel") != Some("kvm") || kv.pairs.len() > 1 {
                    return Err(bad(&raw, &v, "only 'kvm' is supported"));
                }
            }
            "no-reboot" => c.no_reboot = true,
            "drive" => drives.drive(&raw, &val(&mut it)?)?,
            "device" => {
                let v = val(&mut it)?;
                let kv = KeyVals::parse(&raw, &v, "driver")?;
                let driver = kv.get("driver").unwrap_or_default();
                match devices::DEVICES.iter().find(|(n, ..)| *n == driver) {
                    Some(&(_, t, parse)) => other_devices.push((raw.clone(), kv, t, parse)),
                    None => drives.device(&raw, &v)?,
                }
            }
            "netdev" | "net" | "nic" => objects.net.option(&raw, name, &val(&mut it)?)?,
            "snapshot" => drives.snapshot = true,
            "rtc" => c.rtc = rtc(&raw, &val(&mut it)?)?,
            "name" => {
                val(&mut it)?;
            }
            _ => {
                if let Some((_, why)) = NOT_YET.iter().find(|(n, _)| *n == name) {
                    return Err(CliError::NotYet { opt: raw, why });
                }
                return Err(CliError::Unknown(raw));
            }
        }
    }
    c.drives = drives.finish()?;
    for (opt, kv, t, parse) in &other_devices {
        c.devices.push(parse(opt, kv, *t, &objects)?);
    }
    net::finish(&mut c.devices, &objects)?;
    if nodefaults && !serial_set {
        c.serial = SerialConfig::None;
    }
    c.memory_backend = pick_backend(backends, backend_id)?;
    if let (Some(b), false) = (&c.memory_backend, memory_set) {
        // As QEMU: without -m, RAM is the backend's size.
        c.memory = b.size;
    }
    if let Some(path) = config_file {
        if let Some(opt) = first_vm_opt {
            return Err(CliError::ConfigPlusOptions(opt));
        }
        return Ok(Command::RunConfigFile { path, log });
    }
    Ok(Command::Run {
        config: Box::new(c),
        log,
    })
}

/// `-add-fd fd=N,set=S[,opaque=STR]`.
fn add_fd(opt: &str, v: &str) -> Result<FdSetConfig, CliError> {
    let kv = KeyVals::parse(opt, v, "fd")?;
    kv.only(opt, &["fd", "set", "opaque"])?;
    let need = |k: &str| -> Result<u32, CliError> {
        let x = kv
            .get(k)
            .ok_or_else(|| bad(opt, v, format!("{k}= is required")))?;
        x.parse()
            .map_err(|_| bad(opt, x, format!("{k} must be a whole number")))
    };
    let fd = need("fd")?;
    if fd < 3 {
        return Err(bad(
            opt,
            v,
            "fd 0, 1 and 2 are the standard streams, not images",
        ));
    }
    Ok(FdSetConfig {
        fd: i32::try_from(fd).map_err(|_| bad(opt, v, "fd is too large"))?,
        set: need("set")?,
        opaque: kv.get("opaque").map(str::to_string),
    })
}

pub(crate) fn bad(opt: &str, value: &str, why: impl Into<String>) -> CliError {
    CliError::BadValue {
        opt: opt.into(),
        value: value.into(),
        why: why.into(),
    }
}

/// QEMU's `key=value,...` option strings, where the first item may omit its
/// key (`-smp 4,cores=2`) and `,,` stands for a literal comma.
pub(crate) struct KeyVals {
    pairs: Vec<(String, String)>,
}

impl KeyVals {
    pub(crate) fn parse(opt: &str, s: &str, implied: &str) -> Result<Self, CliError> {
        let mut items = Vec::new();
        let mut cur = String::new();
        let mut chars = s.chars().peekable();
        while let Some(ch) = chars.next() {
            if ch == ',' {
                if chars.peek() == Some(&',') {
                    chars.next();
                    cur.push(',');
                } else {
                    items.push(std::mem::take(&mut cur));
                }
            } else {
                cur.push(ch);
            }
        }
        items.push(cur);
        let mut pairs = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            match item.split_once('=') {
                Some((k, v)) => pairs.push((k.to_string(), v.to_string())),
                None if i == 0 && !item.is_empty() => pairs.push((implied.into(), item)),
                None => return Err(bad(opt, s, format!("'{item}' is not key=value"))),
            }
        }
        Ok(Self { pairs })
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn only(&self, opt: &str, allowed: &[&str]) -> Result<(), CliError> {
        match self
            .pairs
            .iter()
            .find(|(k, _)| !allowed.contains(&k.as_str()))
        {
            Some((k, _)) => Err(CliError::BadKey {
                opt: opt.into(),
                key: k.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// `-drive` and `-device virtio-blk-*` pair up by id, as in QEMU:
/// `if=virtio` drives get their device implicitly, `if=none` drives need one.
#[derive(Default)]
struct Drives {
    drives: Vec<(DriveConfig, bool)>,
    devices: Vec<(String, u16, Transport)>,
    snapshot: bool,
}

impl Drives {
    fn drive(&mut self, opt: &str, v: &str) -> Result<(), CliError> {
        let kv = KeyVals::parse(opt, v, "file")?;
        kv.only(
            opt,
            &[
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
                "file.locking",
            ],
        )?;
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
        let implicit = match kv.get("if").unwrap_or("virtio") {
            "virtio" => true,
            "none" => false,
            i => return Err(bad(opt, i, "only if=virtio and if=none are supported")),
        };
        if kv.get("media").is_some_and(|m| m != "disk") {
            return Err(bad(opt, v, "only media=disk is supported"));
        }
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
        let d = DriveConfig {
            id,
            file: file.into(),
            format: kv.get("format").map(str::to_string),
            read_only: on_off("readonly")?,
            cache,
            snapshot: on_off("snapshot")?,
            num_queues: 1,
            transport: None,
            locking: match kv.get("file.locking") {
                None | Some("on" | "auto") => true,
                Some("off") => false,
                Some(x) => return Err(bad(opt, x, "file.locking is on, off or auto")),
            },
        };
        self.drives.push((d, implicit));
        Ok(())
    }

    fn device(&mut self, opt: &str, v: &str) -> Result<(), CliError> {
        let kv = KeyVals::parse(opt, v, "driver")?;
        let transport = match kv.get("driver").unwrap_or_default() {
            "virtio-blk-device" => Transport::Mmio,
            "virtio-blk-pci" => Transport::Pci,
            d => return Err(CliError::NotYet {
                opt: format!("{opt} {d}"),
                why:
                    "the block devices are virtio-blk-pci (pc, q35) and virtio-blk-device (microvm)",
            }),
        };
        kv.only(opt, &["driver", "drive", "num-queues", "id", "serial"])?;
        let drive = kv
            .get("drive")
            .ok_or_else(|| bad(opt, v, "drive= is required"))?
            .to_string();
        let queues = match kv.get("num-queues") {
            Some(n) => n
                .parse()
                .map_err(|_| bad(opt, n, "num-queues must be a number"))?,
            None => 1,
        };
        self.devices.push((drive, queues, transport));
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<DriveConfig>, CliError> {
        for (drive, queues, transport) in &self.devices {
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

/// What `-machine` sets.
struct MachineOpts {
    kind: MachineKind,
    memory_backend: Option<String>,
    /// `acpi=on|off|auto` (auto: on); None when not given.
    acpi: Option<bool>,
}

fn machine(opt: &str, v: &str) -> Result<MachineOpts, CliError> {
    let kv = KeyVals::parse(opt, v, "type")?;
    kv.only(opt, &["type", "accel", "memory-backend", "acpi"])?;
    if let Some(a) = kv.get("accel") {
        if a != "kvm" {
            return Err(bad(opt, a, "only accel=kvm is supported"));
        }
    }
    let kind = match kv.get("type").unwrap_or("microvm") {
        "microvm" => MachineKind::Microvm,
        "pc" | "pc-i440fx" => MachineKind::Pc,
        "q35" | "pc-q35" => MachineKind::Q35,
        "isapc" => MachineKind::Isapc,
        t => return Err(bad(opt, t, "machine types are microvm, pc, q35, isapc")),
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
    })
}

fn cpu(opt: &str, v: &str) -> Result<CpuModel, CliError> {
    match v {
        "host" | "max" => Ok(CpuModel::Host),
        "kvm64" => Ok(CpuModel::Kvm64),
        "qemu64" => Ok(CpuModel::Qemu64),
        _ if v.contains(',') => Err(bad(opt, v, "CPU feature flags are not supported")),
        _ => Err(bad(opt, v, "CPU models are host, max, kvm64, qemu64")),
    }
}

fn number(opt: &str, key: &str, v: &str) -> Result<u32, CliError> {
    v.parse()
        .map_err(|_| bad(opt, v, format!("{key} must be a whole number")))
}

fn smp(opt: &str, v: &str) -> Result<SmpConfig, CliError> {
    let kv = KeyVals::parse(opt, v, "cpus")?;
    kv.only(
        opt,
        &[
            "cpus", "sockets", "cores", "threads", "maxcpus", "dies", "clusters",
        ],
    )?;
    let get = |k: &str| kv.get(k).map(|x| number(opt, k, x)).transpose();
    for k in ["dies", "clusters"] {
        if get(k)?.is_some_and(|n| n != 1) {
            return Err(bad(opt, v, format!("{k} other than 1 is not supported")));
        }
    }
    let (cpus, sockets, cores, threads) = (
        get("cpus")?,
        get("sockets")?,
        get("cores")?,
        get("threads")?,
    );
    let threads = threads.unwrap_or(1);
    let (sockets, cores) = match (sockets, cores) {
        (Some(s), Some(c)) => (s, c),
        // Like QEMU 6.2+: fill cores before sockets.
        (None, None) => (1, cpus.unwrap_or(1).div_ceil(threads.max(1))),
        (Some(s), None) => (s, cpus.unwrap_or(1).div_ceil((s * threads).max(1))),
        (None, Some(c)) => (cpus.unwrap_or(1).div_ceil((c * threads).max(1)), c),
    };
    let cpus = cpus.unwrap_or(sockets.saturating_mul(cores).saturating_mul(threads));
    if let Some(m) = get("maxcpus")? {
        if m != cpus {
            return Err(bad(
                opt,
                v,
                "maxcpus must equal cpus: CPU hotplug is not supported",
            ));
        }
    }
    Ok(SmpConfig {
        cpus,
        sockets,
        cores,
        threads,
    })
}

/// A QEMU size: plain numbers are MiB for `-m`; suffixes K, M, G, T (also
/// lower case, and with a trailing `B` or `iB`) are binary multiples.
pub fn parse_size(s: &str, default_shift: u32) -> Option<u64> {
    let s = s.trim();
    let digits_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(digits_end);
    let suffix = suffix.trim_end_matches("iB").trim_end_matches('B');
    let shift = match suffix {
        "" => default_shift,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        _ => return None,
    };
    if num.is_empty() {
        return None;
    }
    let value = if let Ok(n) = num.parse::<u64>() {
        n.checked_mul(1u64 << shift)?
    } else {
        let f: f64 = num.parse().ok()?;
        let bytes = f * (1u64 << shift) as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return None;
        }
        bytes as u64
    };
    Some(value)
}

fn memory(opt: &str, v: &str) -> Result<u64, CliError> {
    let kv = KeyVals::parse(opt, v, "size")?;
    for k in ["slots", "maxmem"] {
        if kv.get(k).is_some() {
            return Err(bad(
                opt,
                v,
                "memory hotplug (slots, maxmem) is not supported",
            ));
        }
    }
    kv.only(opt, &["size"])?;
    let size = kv.get("size").unwrap_or_default();
    parse_size(size, 20).ok_or_else(|| bad(opt, size, "expected a size such as 512M or 2G"))
}

/// QEMU booleans: on/off, yes/no, true/false.
fn on_off(opt: &str, key: &str, v: &str) -> Result<bool, CliError> {
    match v {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => Err(bad(opt, v, format!("{key} is on or off"))),
    }
}

/// `-object memory-backend-*,id=ID,size=SIZE,...`; other object types are
/// rejected by name.
fn object(opt: &str, v: &str) -> Result<MemoryBackendConfig, CliError> {
    let kv = KeyVals::parse(opt, v, "qom-type")?;
    let kind = match kv.get("qom-type").unwrap_or_default() {
        "memory-backend-ram" => BackendKind::Ram,
        "memory-backend-memfd" => BackendKind::Memfd,
        "memory-backend-file" => BackendKind::File,
        t => {
            return Err(CliError::NotYet {
                opt: format!("{opt} {t}"),
                why: "only memory-backend-ram, memory-backend-memfd and memory-backend-file objects are supported",
            })
        }
    };
    let mut keys = vec![
        "qom-type",
        "id",
        "size",
        "prealloc",
        "prealloc-threads",
        "share",
        "merge",
        "dump",
    ];
    match kind {
        BackendKind::Memfd => keys.extend(["hugetlb", "hugetlbsize"]),
        BackendKind::File => keys.push("mem-path"),
        BackendKind::Ram => {}
    }
    kv.only(opt, &keys)?;
    let flag = |k: &str, default: bool| kv.get(k).map_or(Ok(default), |x| on_off(opt, k, x));
    let size_of = |k: &str| {
        kv.get(k)
            .map(|x| parse_size(x, 0).ok_or_else(|| bad(opt, x, format!("{k} must be a size"))))
            .transpose()
    };
    Ok(MemoryBackendConfig {
        id: kv.get("id").unwrap_or_default().to_string(),
        kind,
        size: size_of("size")?.ok_or_else(|| bad(opt, v, "size= is required"))?,
        prealloc: flag("prealloc", false)?,
        prealloc_threads: kv
            .get("prealloc-threads")
            .map(|x| number(opt, "prealloc-threads", x))
            .transpose()?,
        // QEMU: memfd memory is shared unless share=off; the others private.
        share: flag("share", kind == BackendKind::Memfd)?,
        hugetlb: flag("hugetlb", false)?,
        hugetlbsize: size_of("hugetlbsize")?,
        mem_path: kv.get("mem-path").map(Into::into),
        merge: flag("merge", true)?,
        dump: flag("dump", true)?,
    })
}

/// The backend `-machine memory-backend=ID` names; every backend given must
/// be the one used (Casemate has nothing else, such as NUMA nodes, to put
/// memory in).
fn pick_backend(
    mut backends: Vec<MemoryBackendConfig>,
    id: Option<String>,
) -> Result<Option<MemoryBackendConfig>, CliError> {
    let opt = "-machine memory-backend";
    let Some(id) = id else {
        return match backends.first() {
            None => Ok(None),
            Some(b) => Err(bad(
                "-object",
                &b.id,
                "a memory backend is used only through -machine memory-backend=ID",
            )),
        };
    };
    let pos = backends
        .iter()
        .position(|b| b.id == id)
        .ok_or_else(|| bad(opt, &id, "no -object memory-backend-* has this id"))?;
    let b = backends.swap_remove(pos);
    if let Some(other) = backends.first() {
        return Err(bad(
            "-object",
            &other.id,
            "only the backend named by -machine memory-backend can be used",
        ));
    }
    Ok(Some(b))
}

/// `-overcommit mem-lock=on|off[,cpu-pm=off]`.
fn overcommit(opt: &str, v: &str) -> Result<bool, CliError> {
    let kv = KeyVals::parse(opt, v, "mem-lock")?;
    kv.only(opt, &["mem-lock", "cpu-pm"])?;
    if kv
        .get("cpu-pm")
        .is_some_and(|x| on_off(opt, "cpu-pm", x) != Ok(false))
    {
        return Err(bad(opt, v, "only cpu-pm=off is supported"));
    }
    kv.get("mem-lock")
        .map_or(Ok(false), |x| on_off(opt, "mem-lock", x))
}

fn serial(opt: &str, v: &str) -> Result<SerialConfig, CliError> {
    match v {
        "stdio" | "mon:stdio" => Ok(SerialConfig::Stdio),
        "none" | "null" => Ok(SerialConfig::None),
        _ => match v.strip_prefix("file:") {
            Some(p) if !p.is_empty() => Ok(SerialConfig::File(p.into())),
            _ => Err(bad(opt, v, "expected stdio, file:PATH or none")),
        },
    }
}

fn rtc(opt: &str, v: &str) -> Result<RtcConfig, CliError> {
    let kv = KeyVals::parse(opt, v, "base")?;
    kv.only(opt, &["base", "clock", "driftfix"])?;
    if kv.get("clock").is_some_and(|c| c != "host") {
        return Err(bad(opt, v, "only clock=host is supported"));
    }
    if kv.get("driftfix").is_some_and(|c| c != "none") {
        return Err(bad(opt, v, "only driftfix=none is supported"));
    }
    match kv.get("base").unwrap_or("utc") {
        "utc" => Ok(RtcConfig::Utc),
        "localtime" => Ok(RtcConfig::Localtime),
        d => datetime(d)
            .map(RtcConfig::At)
            .ok_or_else(|| bad(opt, d, "base is utc, localtime or YYYY-MM-DD[THH:MM:SS]")),
    }
}

fn datetime(s: &str) -> Option<i64> {
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00"));
    let nums =
        |x: &str, sep: char| -> Option<Vec<u32>> { x.split(sep).map(|p| p.parse().ok()).collect() };
    let (d, t) = (nums(date, '-')?, nums(time, ':')?);
    match (d.as_slice(), t.as_slice()) {
        ([y, mo, da], [h, mi, se]) => {
            casemate_devices::legacy::unix_from_civil(*y, *mo, *da, *h, *mi, *se)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<VmConfig, CliError> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Command::Run { config, .. } => Ok(*config),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn qemu_style_line() {
        let c = run(&[
            "-M",
            "microvm,accel=kvm",
            "-enable-kvm",
            "-cpu",
            "host",
            "-smp",
            "2",
            "-m",
            "1G",
            "-kernel",
            "/k",
            "-append",
            "console=ttyS0 a=b",
            "-nographic",
            "-no-reboot",
            "-serial",
            "file:/tmp/x",
        ])
        .unwrap();
        assert_eq!(c.memory, 1 << 30);
        assert_eq!(c.smp.cpus, 2);
        assert_eq!((c.smp.sockets, c.smp.cores, c.smp.threads), (1, 2, 1));
        assert_eq!(c.append, "console=ttyS0 a=b");
        assert!(c.no_reboot);
        assert_eq!(c.serial, SerialConfig::File("/tmp/x".into()));
        assert!(c.acpi_on(), "ACPI tables by default, as QEMU's microvm");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64", 20), Some(64 << 20));
        assert_eq!(parse_size("5G", 20), Some(5 << 30));
        assert_eq!(parse_size("1.5G", 20), Some(3 << 29));
        assert_eq!(parse_size("512MiB", 20), Some(512 << 20));
        assert_eq!(parse_size("1T", 20), Some(1 << 40));
        assert_eq!(parse_size("0", 20), Some(0));
        assert_eq!(parse_size("12Q", 20), None);
        assert_eq!(parse_size("G", 20), None);
        assert_eq!(parse_size("99999999999999999999T", 20), None);
        assert_eq!(run(&["-m", "size=256M"]).unwrap().memory, 256 << 20);
        assert!(matches!(
            run(&["-m", "1G,maxmem=4G"]),
            Err(CliError::BadValue { .. })
        ));
    }

    #[test]
    fn smp_topologies() {
        let s = run(&["-smp", "cpus=4,sockets=2,threads=2"]).unwrap().smp;
        assert_eq!((s.cpus, s.sockets, s.cores, s.threads), (4, 2, 1, 2));
        let s = run(&["-smp", "sockets=2,cores=2"]).unwrap().smp;
        assert_eq!(s.cpus, 4);
        assert!(run(&["-smp", "2,maxcpus=4"]).is_err());
        assert!(run(&["-smp", "two"]).is_err());
        assert_eq!(
            run(&["-smp", "0"]).unwrap().smp.cpus,
            0,
            "validate() rejects it"
        );
    }

    #[test]
    fn rejections_name_the_option() {
        let e = run(&["-frobnicate"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown option '-frobnicate' (see casemate --help)"
        );
        let e = run(&["-netdev", "user,id=n"]).unwrap_err();
        assert!(e.to_string().contains("not implemented yet"), "{e}");
        assert_eq!(
            run(&["-m"]).unwrap_err(),
            CliError::MissingValue("-m".into())
        );
        assert!(run(&["-M", "microvm,x-option-roms=off"]).is_err());
        assert!(run(&["-cpu", "host,+avx"]).is_err());
        assert!(run(&["-serial", "tcp:1"]).is_err());
        assert!(run(&["stray"]).is_err());
    }

    #[test]
    fn drives_pair_with_devices() {
        let c = run(&[
            "-drive",
            "file=/a.raw,format=raw,if=virtio,cache=none",
            "-snapshot",
        ])
        .unwrap();
        assert_eq!(c.drives.len(), 1);
        let d = &c.drives[0];
        assert_eq!(
            (d.cache, d.snapshot, d.read_only),
            (CacheConfig::None, true, false)
        );
        let c = run(&[
            "-drive",
            "file=/b.qcow2,if=none,id=d1,readonly=on",
            "-device",
            "virtio-blk-device,drive=d1,num-queues=4",
        ])
        .unwrap();
        assert_eq!((c.drives[0].num_queues, c.drives[0].read_only), (4, true));
        assert!(
            run(&["-drive", "file=/b,if=none,id=x"]).is_err(),
            "unused if=none drive"
        );
        assert!(run(&["-device", "virtio-blk-device,drive=nope"]).is_err());
        assert!(run(&["-drive", "file=/a,cache=sometimes"]).is_err());
        assert!(run(&["-drive", "if=virtio"]).is_err(), "no file");
        let c = run(&[
            "-M",
            "q35",
            "-drive",
            "file=/a,if=none,id=d",
            "-device",
            "virtio-blk-pci,drive=d",
        ])
        .unwrap();
        assert_eq!(c.drives[0].transport, Some(Transport::Pci));
        let e = run(&["-device", "virtio-net-pci"]).unwrap_err();
        assert!(e.to_string().contains("virtio-net-pci"), "{e}");
    }

    #[test]
    fn rng_devices_and_their_backends() {
        let c = run(&[
            "-device",
            "virtio-rng-pci,rng=r0,max-bytes=1024,period=500",
            "-object",
            "rng-random,id=r0,filename=/dev/random",
            "-M",
            "q35",
        ])
        .unwrap();
        let want = crate::config::RngConfig {
            id: "r0".into(),
            backend: crate::config::RngBackendConfig::Random {
                filename: "/dev/random".into(),
            },
            max_bytes: Some(1024),
            period_ms: 500,
            transport: Some(Transport::Pci),
        };
        assert_eq!(c.devices, vec![crate::config::DeviceConfig::Rng(want)]);
        let c = run(&["-device", "virtio-rng-device"]).unwrap();
        assert!(matches!(
            &c.devices[0],
            crate::config::DeviceConfig::Rng(r)
                if r.backend == crate::config::RngBackendConfig::Builtin
        ));
        let e = run(&["-device", "virtio-rng-pci,rng=nope"]).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let e = run(&["-object", "rng-random,id=a", "-object", "rng-builtin,id=a"]).unwrap_err();
        assert!(e.to_string().contains("Duplicate ID"), "{e}");
        let e = run(&["-device", "virtio-rng-pci,max-bytes=lots"]).unwrap_err();
        assert!(e.to_string().contains("max-bytes"), "{e}");
    }

    #[test]
    fn add_fd_sets() {
        let c = run(&[
            "-add-fd",
            "fd=5,set=2,opaque=disk",
            "-drive",
            "file=/dev/fdset/2",
        ])
        .unwrap();
        assert_eq!(
            c.fdsets,
            vec![crate::config::FdSetConfig {
                fd: 5,
                set: 2,
                opaque: Some("disk".into())
            }]
        );
        for bad in ["fd=1,set=0", "set=0", "fd=4", "fd=x,set=1"] {
            assert!(run(&["-add-fd", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn machine_acpi_switch() {
        assert!(!run(&["-M", "isapc"]).unwrap().acpi_on(), "isapc has none");
        assert!(!run(&["-M", "microvm,acpi=off"]).unwrap().acpi_on());
        assert!(run(&["-M", "microvm,acpi=auto"]).unwrap().acpi_on());
        // A later -machine without acpi= keeps the earlier choice.
        assert!(!run(&["-M", "acpi=off", "-M", "microvm"]).unwrap().acpi_on());
        let e = run(&["-M", "microvm,acpi=maybe"]).unwrap_err().to_string();
        assert!(e.contains("acpi") && e.contains("maybe"), "{e}");
    }

    #[test]
    fn memory_backends() {
        let c = run(&[
            "-m",
            "1G",
            "-object",
            "memory-backend-memfd,id=m0,size=1G,prealloc=on,prealloc-threads=2,hugetlb=on,hugetlbsize=2M,dump=off",
            "-machine",
            "microvm,memory-backend=m0",
            "-overcommit",
            "mem-lock=on",
            "--thp",
            "off",
        ])
        .unwrap();
        let b = c.memory_backend.unwrap();
        assert_eq!(
            (b.kind, b.size, b.id.as_str()),
            (BackendKind::Memfd, 1 << 30, "m0")
        );
        assert!(b.prealloc && b.share && b.hugetlb && !b.dump && b.merge);
        assert_eq!(
            (b.prealloc_threads, b.hugetlbsize),
            (Some(2), Some(2 << 20))
        );
        assert!(c.mem_lock && !c.thp);
        let c = run(&[
            "-object",
            "memory-backend-file,id=f,size=512M,mem-path=/dev/shm/x,share=on",
            "-M",
            "memory-backend=f",
        ])
        .unwrap();
        assert_eq!(c.memory, 512 << 20, "no -m: RAM is the backend's size");
        assert_eq!(
            c.memory_backend.unwrap().mem_path.unwrap().to_str(),
            Some("/dev/shm/x")
        );
        let ram = run(&[
            "-object",
            "memory-backend-ram,id=r,size=64M",
            "-M",
            "memory-backend=r",
        ]);
        assert!(!ram.unwrap().memory_backend.unwrap().share);
    }

    #[test]
    fn memory_backend_mistakes_are_named() {
        let e = run(&["-object", "secret,id=r"]).unwrap_err().to_string();
        assert!(
            e.contains("-object secret") && e.contains("memory-backend"),
            "{e}"
        );
        let e = run(&["-object", "memory-backend-ram,id=r,size=1G,hugetlb=on"]).unwrap_err();
        assert_eq!(
            e,
            CliError::BadKey {
                opt: "-object".into(),
                key: "hugetlb".into()
            }
        );
        assert!(
            run(&["-object", "memory-backend-ram,id=r"]).is_err(),
            "size needed"
        );
        assert!(
            run(&["-object", "memory-backend-ram,id=r,size=1G"]).is_err(),
            "unused"
        );
        assert!(run(&["-M", "memory-backend=zz"]).is_err(), "unknown id");
        assert!(run(&["-overcommit", "mem-lock=maybe"]).is_err());
        assert!(run(&["-object", "memory-backend-ram,id=r,size=1G,prealloc=2"]).is_err());
    }

    #[test]
    fn rtc_bases() {
        assert_eq!(
            run(&["-rtc", "base=localtime"]).unwrap().rtc,
            RtcConfig::Localtime
        );
        assert_eq!(
            run(&["-rtc", "base=2000-02-29T12:34:56"]).unwrap().rtc,
            RtcConfig::At(951_827_696)
        );
        assert!(run(&["-rtc", "base=2001-02-29"]).is_err());
    }

    #[test]
    fn config_file_excludes_vm_options() {
        let p = parse(["--config".into(), "/x.json".into()]).unwrap();
        assert!(matches!(p, Command::RunConfigFile { .. }));
        let e = parse(["--config".into(), "/x".into(), "-m".into(), "1G".into()]).unwrap_err();
        assert!(matches!(e, CliError::ConfigPlusOptions(_)));
    }

    #[test]
    fn nodefaults_drops_the_serial_unless_asked() {
        assert_eq!(run(&["-nodefaults"]).unwrap().serial, SerialConfig::None);
        assert_eq!(
            run(&["-nodefaults", "-serial", "stdio"]).unwrap().serial,
            SerialConfig::Stdio
        );
    }
}
