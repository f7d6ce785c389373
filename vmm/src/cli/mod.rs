//! QEMU-syntax command line to `VmConfig`: the only place that knows flag names.
//!
//! Supported options parse into config; options QEMU users may bring that
//! Casemate does not support yet are rejected by name with the reason. Nothing
//! here touches the host: size limits that depend on the host are checked by
//! `VmConfig::validate`.

mod backing;
mod devices;
mod display;
mod drive;
mod gpu;
mod kv;
mod machine;
mod monitor;
mod net;
mod rng;
mod vfio;
mod vga;

use std::path::PathBuf;

use drive::Drives;

use crate::config::{
    BackendKind, FdSetConfig, LandlockMode, MachineKind, MemoryBackendConfig, RtcConfig,
    SandboxConfig, SeccompMode, SerialConfig, SmpConfig, Transport, VmConfig,
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
    #[error("{0}")]
    Several(Errors),
}

/// Every refusal of one command line, printed one per line.
#[derive(Debug, PartialEq, Eq)]
pub struct Errors(pub Vec<CliError>);

impl std::fmt::Display for Errors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// What the user asked the binary to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run {
        config: Box<VmConfig>,
        log: Option<String>,
        /// Options accepted without effect or mapped, for `--log info`.
        notes: Vec<String>,
    },
    RunConfigFile {
        path: PathBuf,
        log: Option<String>,
    },
    WriteProbe(PathBuf),
    /// Print this text and exit 0 (`-cpu help`, `-machine help`).
    Print(&'static str),
    /// Hidden (`--seccomp-selftest ROLE`): install ROLE's filter on this
    /// thread, make one syscall outside it, and die of it.
    SeccompSelftest(String),
    Help,
    Version,
}

pub const HELP: &str = "\
usage: casemate [options]
Boots a KVM microVM. With no -kernel it boots the embedded probe guest.

QEMU-compatible options:
  -machine|-M TYPE[,accel=kvm][,memory-backend=ID][,acpi=on|off][,usb=off]
                                machine type: microvm (default; virtio-mmio),
                                pc (i440FX + PIIX3) or q35 (PCIe + ICH9, ECAM);
                                guest RAM from the memory backend object ID;
                                or isapc (pc without PCI or ACPI);
                                acpi=off: no ACPI tables (microvm: virtio-mmio
                                devices announced on the kernel command line;
                                pc, q35: PCI interrupts in the MP table)
  -cpu host|max|kvm64|qemu64    CPUID template (default host); QEMU's named
                                models are refused naming the nearest one
  -smp [cpus=]N[,sockets=S][,cores=C][,threads=T][,maxcpus=N]
                                sockets x cores x threads must equal cpus
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
  -serial stdio|file:PATH|none|pty|chardev:ID
  -serial unix:PATH,server=on,wait=off | tcp:HOST:PORT,server=on,wait=off
                                where COM1 goes (default stdio); a socket's one client
                                or the pty is the console (output dropped while none reads)
  -nographic, -display none     no display (the default)
  -vga virtio|std|none          virtio-gpu on PCI (as -device virtio-gpu-pci) or
                                the standard VGA (as -device VGA)
  -device VGA|bochs-display[,vgamem_mb=N][,xres=W][,yres=H]
                                1234:1111 with a bochs dispi linear framebuffer
  -device virtio-gpu-pci|virtio-gpu-device[,xres=W][,yres=H][,max_hostmem=SIZE]
                                virtio-gpu 2D (default 1280x800, 256M cap)
  -vnc [HOST]:N, -display vnc=[HOST]:N
                                a VNC server (RFB 3.8, no authentication) on
                                HOST (default 127.0.0.1) port 5900+N
  -no-reboot                    a guest reset ends the VM with exit 0
  -rtc base=utc|localtime|YYYY-MM-DD[THH:MM:SS]
  -enable-kvm, -accel kvm       accepted (KVM is the only accelerator)
  -nodefaults                   no default serial port
  -name [guest=]NAME[,process=PNAME][,debug-threads=on]
                                the VM's name (query-name); process=: the
                                process name ps shows (threads are named
                                cm-vcpu0, cm-ctl, ... always)
  -qmp unix:PATH,server=on,wait=off | tcp:HOST:PORT,server=on,wait=off
                                a QMP server (several clients at once)
  -monitor stdio|unix:PATH,server=on,wait=off|tcp:HOST:PORT,server=on,wait=off
                                a human monitor (HMP)
  -chardev socket,id=ID,path=PATH|host=H,port=P,server=on,wait=off | pty,id=ID
  -mon chardev=ID[,mode=control|readline]
                                a monitor on a chardev (control: QMP)
  -S                            do not start the vCPUs until QMP/HMP 'cont'
  -daemonize                    detach once set up (stdio to /dev/null;
                                SIGHUP ignored)
  -pidfile PATH                 the pid, locked while the VM runs, removed
                                at exit
Console: with -serial stdio (the default) keys go to COM1; the terminal
is raw while the VM runs. Ctrl-A x quits, Ctrl-A h help, Ctrl-A c switches
to the monitor (HMP) and back, Ctrl-A Ctrl-A sends Ctrl-A.
  -sandbox on|off[,landlock=on|off|required]
                                confinement, on by default: a seccomp filter
                                per thread role (a forbidden syscall ends the
                                VM with a line naming the role and syscall)
                                and Landlock (no filesystem access after
                                start-up). off: neither. landlock=required:
                                refuse to run on a kernel without Landlock
Casemate options:
  --config FILE                 the VM as a JSON VmConfig instead of options
  --write-probe PATH            write the embedded probe guest ELF and exit
  --thp on|off                  transparent huge pages for guest RAM not on
                                hugetlb (default on, as QEMU)
  --log LEVEL                   error|warn|info|debug|trace on stderr (default warn)
  --seccomp trap|kill|log|off   what a forbidden syscall does: trap (default:
                                one line on stderr, exit 159), kill (SIGSYS,
                                no message), log (allowed, logged by the
                                kernel to the audit log/dmesg: development)
  -h, --help                    this text
  -V, --version                 version
  -drive file=F[,format=raw|qcow2][,if=virtio|ide|none][,id=ID][,readonly=on]
         [,media=disk|cdrom][,index=N|,bus=B,unit=U]
         [,cache=writeback|none|writethrough|unsafe][,snapshot=on]
         [,discard=ignore|unmap][,detect-zeroes=off|on|unmap]
         [,aio=threads|native|io_uring][,file.locking=on|off]
         [,backing.file.filename=F[,backing.driver=raw|qcow2]] (and
         backing.backing.… for each level down: the chain, not the header's)
  -device virtio-blk-device|virtio-blk-pci,drive=ID[,num-queues=N]
         [,iothread=ID]         the disk on virtio-mmio (microvm) or virtio-pci
                                (pc, q35); if=virtio picks the machine's own
                                a plain -drive is IDE on pc (PIIX3) and AHCI on
                                q35 (ICH9, six ports), as QEMU's default;
                                virtio on microvm
  -object iothread,id=ID[,poll-max-ns=N]
                                how long the disk's worker polls for the next
                                request before it sleeps (default 32768, as
                                QEMU; 0: never); each disk keeps its own thread
  -cdrom FILE                   an ATAPI CD-ROM: secondary master (pc), AHCI
                                port 2 (q35)
  -device ide-hd|ide-cd,drive=ID[,bus=ide.N][,unit=U]
                                an if=none drive as an IDE/AHCI disk or CD-ROM
  -snapshot                     all drives write to a temporary overlay
                                (kept across guest reboots, gone at exit)
  -object rng-random,id=ID[,filename=/dev/urandom] | rng-builtin,id=ID
  -device virtio-rng-pci|virtio-rng-device[,rng=ID][,max-bytes=N][,period=MS]
                                entropy device (virtio-rng), rate-limited to
                                max-bytes per period as QEMU
  -device vfio-user-pci,socket=PATH[,id=ID]   (pc, q35)
  -device '{\"driver\":\"vfio-user-pci\",\"socket\":{\"path\":\"PATH\",\"type\":\"unix\"}}'
                                a PCI function served over vfio-user by
                                another process; guest RAM must be shareable
                                (memory-backend-memfd, or -file with share=on)
  -device vfio-pci,host=BUS:DEV.FN|sysfsdev=PATH[,id=ID]
                                a host device bound to vfio-pci (pc, q35):
                                checked (VFIO present, driver, IOMMU group,
                                refused with the reason), then opened through
                                a VFIO container
  -add-fd fd=N,set=S[,opaque=STR]
                                an inherited fd; name it as /dev/fdset/S in
                                -drive file=, -kernel, -initrd, filename=
  -cpu help, -machine help       list the CPU models and machine types
Accepted without effect (a note under --log info): -net none, -nic none,
-vga none, -monitor none, -usb, -machine usb=off, -no-acpi on microvm,
unused -object memory-backend-*; versioned machine names (pc-q35-7.2) map
to q35/pc. SIGTERM, SIGINT and SIGHUP end the VM as a power-off (images
flushed, exit 0).
  -netdev tap,id=ID,ifname=NAME|fd=N|fds=A:B[,queues=N][,script=no,downscript=no][,vhost=off]
  -device virtio-net-pci|virtio-net-device,netdev=ID[,mac=52:54:00:12:34:56]
         [,host_mtu=68..65535][,mq=on[,vectors=2N+2]]
  -nic tap,ifname=NAME[,model=virtio|virtio-net-pci|virtio-net-device][,mac=]
  -net nic[,model=virtio][,macaddr=] -net tap,ifname=NAME
                                virtio-net over a tap (created or attached by
                                name, or inherited); MACs default to QEMU's
                                52:54:00:12:34:56 (+1 per NIC); no ifup scripts;
                                queues=N (a multi_queue tap) needs mq=on
  -netdev bridge,id=ID[,br=br0][,helper=/usr/lib/qemu/qemu-bridge-helper]
                                a tap on a bridge, made by QEMU's privileged
                                helper (ACL: /etc/qemu/bridge.conf); also
                                -nic bridge,br=..., -net bridge,br=...
  -netdev user,id=ID[,hostfwd=tcp|udp::HOSTPORT-:GUESTPORT]...
                                user-mode networking through passt (apt-get
                                install passt): guest 10.0.2.15/24, gateway
                                10.0.2.2 = the host's loopback; also -nic user
Not supported yet (rejected by name, all at once):
other -object and -device types, other -vga types, -bios, -boot, -hda,
-audiodev, -parallel, -global, -k, -uuid, a second -serial, ...
";

/// QEMU options Casemate does not support: name, whether it takes a
/// value (so that parsing goes on past it), and why.
const NOT_YET: &[(&str, bool, &str)] = &[
    ("hda", true, "use -drive file=...,if=ide or if=virtio"),
    ("hdb", true, "use -drive file=...,if=ide or if=virtio"),
    ("fda", true, "no floppy device"),
    (
        "bios",
        true,
        "Casemate boots kernels directly, without firmware",
    ),
    (
        "boot",
        true,
        "no firmware to choose a boot device: the kernel boots directly (-kernel)",
    ),
    ("audiodev", true, "no audio devices"),
    ("soundhw", true, "no audio devices"),
    ("parallel", true, "no parallel port"),
    (
        "global",
        true,
        "device properties are not settable globally; give them on -device",
    ),
    ("k", true, "no display, so no keyboard layout"),
    (
        "uuid",
        true,
        "no firmware tables (SMBIOS) to carry a system UUID",
    ),
    ("smbios", true, "no firmware tables (SMBIOS)"),
    ("numa", true, "one NUMA node only"),
    ("usbdevice", true, "no USB controller"),
    ("loadvm", true, "no snapshots of VM state"),
    ("incoming", true, "no migration"),
    ("gdb", true, "no gdb stub"),
    ("s", false, "no gdb stub"),
    ("icount", true, "KVM only: no instruction counting"),
    ("fsdev", true, "no 9p file sharing"),
    ("virtfs", true, "no 9p file sharing"),
    ("spice", true, "no display"),
    (
        "runas",
        true,
        "Casemate drops privileges through its jailer (casemate-jailer)",
    ),
    (
        "chroot",
        true,
        "Casemate changes root through its jailer (casemate-jailer)",
    ),
    ("no-hpet", false, "there is no HPET to remove"),
    ("no-shutdown", false, "a power-off always ends the VM"),
    ("full-screen", false, "no display"),
];

/// What `parse` gathers besides the config.
#[derive(Default)]
struct Pending {
    config_file: Option<PathBuf>,
    log: Option<String>,
    serial_count: usize,
    serial_set: bool,
    nodefaults: bool,
    memory_set: bool,
    no_acpi: bool,
    usb: bool,
    backends: Vec<MemoryBackendConfig>,
    backend_id: Option<String>,
    objects: devices::Objects,
    // Other -device options wait for every -object (QEMU creates objects
    // first, so a device may name one given after it).
    other_devices: Vec<(String, KeyVals, Transport, devices::DeviceParser)>,
    drives: Drives,
    notes: Vec<String>,
    monitors: monitor::Pending,
}

/// Parse `args` (without the program name). The whole line is read before
/// answering: every refusal is in the error, one per line.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, CliError> {
    let mut it = args.into_iter().peekable();
    let mut c = VmConfig::default();
    let mut first_vm_opt: Option<String> = None;
    let mut p = Pending::default();
    let mut errors = Vec::new();
    while let Some(raw) = it.next() {
        let Some(name) = raw.strip_prefix("--").or_else(|| raw.strip_prefix('-')) else {
            errors.push(CliError::Stray(raw));
            continue;
        };
        let name = name.to_string();
        let is_vm_opt = !matches!(name.as_str(), "log" | "config");
        if is_vm_opt && first_vm_opt.is_none() {
            first_vm_opt = Some(raw.clone());
        }
        match option(&raw, &name, &mut it, &mut c, &mut p) {
            Ok(Some(done)) => return Ok(done),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    let (config_file, log) = (p.config_file.take(), p.log.take());
    let notes = finish(&mut c, p, &mut errors);
    if let Some(path) = config_file {
        if let Some(opt) = first_vm_opt {
            errors.push(CliError::ConfigPlusOptions(opt));
        } else if errors.is_empty() {
            return Ok(Command::RunConfigFile { path, log });
        }
    }
    match errors.len() {
        0 => Ok(Command::Run {
            config: Box::new(c),
            log,
            notes,
        }),
        1 => Err(errors.remove(0)),
        _ => Err(CliError::Several(Errors(errors))),
    }
}

/// One option and its value. `Some` ends parsing with that command
/// (`--help`, `-cpu help`, ...).
fn option(
    raw: &str,
    name: &str,
    it: &mut std::iter::Peekable<impl Iterator<Item = String>>,
    c: &mut VmConfig,
    p: &mut Pending,
) -> Result<Option<Command>, CliError> {
    let mut val = || {
        it.next()
            .ok_or_else(|| CliError::MissingValue(raw.to_string()))
    };
    match name {
        "h" | "help" => return Ok(Some(Command::Help)),
        "V" | "version" => return Ok(Some(Command::Version)),
        "write-probe" => return Ok(Some(Command::WriteProbe(val()?.into()))),
        "seccomp-selftest" => return Ok(Some(Command::SeccompSelftest(val()?))),
        "sandbox" => c.sandbox = sandbox(raw, &val()?, c.sandbox.clone())?,
        "selftest-open" => c.sandbox.selftest_open = Some(val()?.into()),
        "selftest-escape" => {
            let v = val()?;
            crate::threads::escape::Attempt::parse(&v).map_err(|why| bad(raw, &v, why))?;
            c.sandbox.selftest_escape = Some(v);
        }
        "seccomp" => {
            let v = val()?;
            c.sandbox.seccomp = match v.as_str() {
                "trap" | "on" => SeccompMode::Trap,
                "kill" => SeccompMode::Kill,
                "log" => SeccompMode::Log,
                "off" => SeccompMode::Off,
                _ => return Err(bad(raw, &v, "seccomp is trap, kill, log or off")),
            };
        }
        "config" => p.config_file = Some(val()?.into()),
        "log" => p.log = Some(val()?),
        "M" | "machine" => {
            let v = val()?;
            if matches!(v.as_str(), "help" | "?") {
                return Ok(Some(Command::Print(machine::MACHINE_HELP)));
            }
            let m = machine::machine(raw, &v)?;
            c.machine = m.kind.unwrap_or(c.machine);
            c.acpi = m.acpi.or(c.acpi);
            p.backend_id = m.memory_backend.or(p.backend_id.take());
            p.notes.extend(m.notes);
        }
        "object" => {
            let v = val()?;
            if !p.objects.add(raw, KeyVals::parse(raw, &v, "qom-type")?)? {
                let b = object(raw, &v)?;
                let dup = p.backends.iter().any(|o| o.id == b.id) || p.objects.get(&b.id).is_some();
                if dup {
                    return Err(bad(
                        raw,
                        &b.id,
                        format!("Duplicate ID '{}' for object", b.id),
                    ));
                }
                p.backends.push(b);
            }
        }
        "add-fd" => c.fdsets.push(add_fd(raw, &val()?)?),
        "overcommit" => c.mem_lock = overcommit(raw, &val()?)?,
        "thp" => c.thp = on_off(raw, "thp", &val()?)?,
        "cpu" => {
            let v = val()?;
            if matches!(v.as_str(), "help" | "?") {
                return Ok(Some(Command::Print(machine::CPU_HELP)));
            }
            c.cpu = machine::cpu(raw, &v)?;
        }
        "smp" => c.smp = smp(raw, &val()?)?,
        "m" => {
            c.memory = memory(raw, &val()?)?;
            p.memory_set = true;
        }
        "kernel" => c.kernel = Some(val()?.into()),
        "initrd" => c.initrd = Some(val()?.into()),
        "append" => c.append = val()?,
        "serial" => {
            let v = val()?;
            p.serial_count += 1;
            let s = match v.strip_prefix("chardev:") {
                Some(_) if p.serial_count > 1 => {
                    return Err(bad(
                        raw,
                        &v,
                        "a second -serial would be COM2: Casemate has one serial port (COM1)",
                    ));
                }
                // Resolved once every -chardev is known.
                Some(id) => {
                    p.monitors.serial_chardev(raw, id)?;
                    SerialConfig::None
                }
                None => serial(raw, &v)?,
            };
            if p.serial_count > 1 {
                // QEMU makes it COM2; Casemate has COM1 only.
                if s != SerialConfig::None {
                    return Err(bad(
                        raw,
                        &v,
                        "a second -serial would be COM2: Casemate has one serial port (COM1)",
                    ));
                }
            } else {
                c.serial = s;
                p.serial_set = true;
            }
        }
        "nographic" | "enable-kvm" | "no-user-config" => {}
        "nodefaults" => p.nodefaults = true,
        "display" => c.display = display::display(raw, &val()?)?,
        "vnc" => c.display = display::vnc(raw, &val()?)?,
        "accel" => {
            let v = val()?;
            let kv = KeyVals::parse(raw, &v, "accel")?;
            if kv.get("accel") != Some("kvm") || kv.pairs.len() > 1 {
                return Err(bad(raw, &v, "only 'kvm' is supported"));
            }
        }
        "no-reboot" => c.no_reboot = true,
        "no-acpi" => p.no_acpi = true,
        "usb" => p.usb = true,
        "drive" => p.drives.drive(raw, &val()?)?,
        "cdrom" => p.drives.cdrom(raw, &val()?)?,
        "device" => {
            let mut v = val()?;
            if v.trim_start().starts_with('{') {
                v = vfio::json_to_keyvals(raw, &v)?;
            }
            let kv = KeyVals::parse(raw, &v, "driver")?;
            let driver = kv.get("driver").unwrap_or_default();
            match devices::DEVICES.iter().find(|(n, ..)| *n == driver) {
                Some(&(_, t, parse)) => p.other_devices.push((raw.to_string(), kv, t, parse)),
                None => p.drives.device(raw, &v)?,
            }
        }
        "netdev" | "net" | "nic" => match val()? {
            v if v == "none" && name != "netdev" => p
                .notes
                .push(format!("{raw} none: nothing to remove, accepted")),
            v => p.objects.net.option(raw, name, &v)?,
        },
        "snapshot" => p.drives.snapshot = true,
        "rtc" => c.rtc = rtc(raw, &val()?)?,
        "qmp" | "monitor" => {
            let v = val()?;
            if name == "monitor" && v == "none" {
                p.notes
                    .push(format!("{raw} none: nothing to remove, accepted"));
                return Ok(None);
            }
            let mode = if name == "qmp" {
                crate::config::MonitorMode::Control
            } else {
                crate::config::MonitorMode::Readline
            };
            let endpoint = monitor::endpoint(raw, &v)?;
            c.control
                .monitors
                .push(crate::config::MonitorConfig { endpoint, mode });
        }
        "chardev" => p.monitors.chardev(raw, &val()?)?,
        "mon" => p.monitors.mon(raw, &val()?)?,
        "S" => c.control.start_paused = true,
        "daemonize" => c.control.daemonize = true,
        "pidfile" => c.control.pidfile = Some(val()?.into()),
        "name" => {
            let v = val()?;
            // QEMU's `-name NAME` or `-name guest=NAME[,debug-threads=on]`.
            let kv = KeyVals::parse(raw, &v, "guest")?;
            kv.only(raw, &["guest", "debug-threads", "process"])?;
            c.control.name = kv.get("guest").map(str::to_string);
            c.control.process_name = kv.get("process").map(str::to_string);
            if let Some(d) = kv.get("debug-threads") {
                // Casemate's threads are always named.
                on_off(raw, "debug-threads", d)?;
            }
        }
        "vga" if it.peek().is_some_and(|v| v != "none") => {
            let v = it.next().unwrap_or_default();
            let (driver, t, parse) = display::vga(raw, &v)?;
            let kv = KeyVals::parse(raw, driver, "driver")?;
            p.other_devices.push((raw.to_string(), kv, t, parse));
        }
        "vga" if it.peek().is_some_and(|v| v == "none") => {
            it.next();
            p.notes
                .push(format!("{raw} none: nothing to remove, accepted"));
        }
        _ => {
            if let Some(&(_, takes_value, why)) = NOT_YET.iter().find(|(n, ..)| *n == name) {
                if takes_value {
                    it.next();
                }
                return Err(CliError::NotYet {
                    opt: raw.to_string(),
                    why,
                });
            }
            // Unknown: a following word that is not an option is taken as
            // its value, so that it is not reported again as stray.
            if it.peek().is_some_and(|v| !v.starts_with('-')) {
                it.next();
            }
            return Err(CliError::Unknown(raw.to_string()));
        }
    }
    Ok(None)
}

/// What needs the whole line: drives with their devices, devices with
/// their objects, the memory backend, machine-dependent switches. Returns
/// the notes for `--log info`.
fn finish(c: &mut VmConfig, mut p: Pending, errors: &mut Vec<CliError>) -> Vec<String> {
    match std::mem::take(&mut p.drives).finish(&p.objects) {
        Ok(d) => c.drives = d,
        Err(e) => errors.push(e),
    }
    for (opt, kv, t, parse) in &p.other_devices {
        match parse(opt, kv, *t, &p.objects) {
            Ok(d) => c.devices.push(d),
            Err(e) => errors.push(e),
        }
    }
    if let Err(e) = net::finish(&mut c.devices, &p.objects) {
        errors.push(e);
    }
    std::mem::take(&mut p.monitors).finish(&mut c.control, &mut c.serial, errors);
    if p.nodefaults && !p.serial_set {
        c.serial = SerialConfig::None;
    }
    if p.usb {
        // No -device asks for USB here: a USB device is refused by name.
        p.notes
            .push("-usb: no USB device is asked for, so no USB controller is needed".into());
    }
    if p.no_acpi {
        if c.machine == MachineKind::Microvm {
            p.notes.push(
                "-no-acpi: ignored on microvm, as QEMU does (use -machine microvm,acpi=off)".into(),
            );
        } else {
            c.acpi = Some(false);
        }
    }
    match pick_backend(std::mem::take(&mut p.backends), p.backend_id.take()) {
        Ok((b, unused)) => {
            c.memory_backend = b;
            for id in unused {
                p.notes.push(format!(
                    "-object {id}: memory backend not used (only -machine memory-backend=ID gives guest RAM)"
                ));
            }
        }
        Err(e) => errors.push(e),
    }
    if let (Some(b), false) = (&c.memory_backend, p.memory_set) {
        // As QEMU: without -m, RAM is the backend's size.
        c.memory = b.size;
    }
    p.notes
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

/// The `--seccomp MODE` among `args` (the self-test takes it from any
/// position); Trap when absent or unreadable.
pub fn seccomp_mode_of<I: IntoIterator<Item = String>>(args: I) -> SeccompMode {
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--seccomp" || a == "-seccomp" {
            return match it.next().as_deref() {
                Some("kill") => SeccompMode::Kill,
                Some("log") => SeccompMode::Log,
                _ => SeccompMode::Trap,
            };
        }
    }
    SeccompMode::Trap
}

/// `-sandbox on|off[,landlock=on|off|required]`. QEMU's other keys
/// (obsolete=, elevateprivileges=, spawn=, resourcecontrol=) name parts of
/// its own one filter; Casemate's per-role filters deny all of those
/// already, so `deny` is accepted and `allow` refused.
fn sandbox(opt: &str, v: &str, cur: SandboxConfig) -> Result<SandboxConfig, CliError> {
    let kv = KeyVals::parse(opt, v, "enable")?;
    kv.only(
        opt,
        &[
            "enable",
            "landlock",
            "obsolete",
            "elevateprivileges",
            "spawn",
            "resourcecontrol",
        ],
    )?;
    let mut s = match kv.get("enable") {
        Some("on") => SandboxConfig {
            seccomp: match cur.seccomp {
                SeccompMode::Off => SeccompMode::Trap,
                m => m,
            },
            landlock: match cur.landlock {
                LandlockMode::Off => LandlockMode::On,
                m => m,
            },
            selftest_open: cur.selftest_open.clone(),
            selftest_escape: cur.selftest_escape.clone(),
        },
        Some("off") => SandboxConfig {
            selftest_open: cur.selftest_open.clone(),
            selftest_escape: cur.selftest_escape.clone(),
            ..SandboxConfig::off()
        },
        None => cur.clone(),
        Some(x) => return Err(bad(opt, x, "the first value is on or off")),
    };
    for k in ["obsolete", "elevateprivileges", "spawn", "resourcecontrol"] {
        if let Some(x) = kv.get(k) {
            if x != "deny" {
                return Err(bad(
                    opt,
                    x,
                    format!("{k}: only deny (Casemate's filters always deny it)"),
                ));
            }
        }
    }
    match kv.get("landlock") {
        None => {}
        Some("on") => s.landlock = LandlockMode::On,
        Some("off") => s.landlock = LandlockMode::Off,
        Some("required") => s.landlock = LandlockMode::Required,
        Some(x) => return Err(bad(opt, x, "landlock is on, off or required")),
    }
    Ok(s)
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

    /// Set `k` to `v`, replacing any value it had.
    pub(crate) fn set(&mut self, k: &str, v: &str) {
        self.pairs.retain(|(key, _)| key != k);
        self.pairs.push((k.into(), v.into()));
    }

    /// Every value of a key that may repeat (`hostfwd=`), in order.
    pub(crate) fn get_all<'a>(&'a self, k: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(key, _)| key == k)
            .map(|(_, v)| v.as_str())
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

/// What `-smp` takes, QEMU's names (serde, as every `key=value` option).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SmpOpts {
    cpus: Option<u32>,
    sockets: Option<u32>,
    cores: Option<u32>,
    threads: Option<u32>,
    maxcpus: Option<u32>,
    dies: Option<u32>,
    clusters: Option<u32>,
}

fn smp(opt: &str, v: &str) -> Result<SmpConfig, CliError> {
    let kv = KeyVals::parse(opt, v, "cpus")?;
    let o: SmpOpts = kv::from_keyvals(opt, &kv, &[])?;
    for (k, n) in [("dies", o.dies), ("clusters", o.clusters)] {
        if n.is_some_and(|n| n != 1) {
            return Err(bad(opt, v, format!("{k} other than 1 is not supported")));
        }
    }
    let (cpus, sockets, cores, threads) = (o.cpus, o.sockets, o.cores, o.threads);
    let threads = threads.unwrap_or(1);
    // As QEMU 6.2+: fill cores before sockets, with whole divisions; a
    // topology that does not then multiply out to cpus is refused by
    // `VmConfig::validate`, for the CLI and --config alike.
    let n = cpus.unwrap_or(1);
    let (sockets, cores) = match (sockets, cores) {
        (Some(s), Some(c)) => (s, c),
        (None, None) => (1, (n / threads.max(1)).max(1)),
        (Some(s), None) => (s, (n / s.saturating_mul(threads).max(1)).max(1)),
        (None, Some(c)) => ((n / c.saturating_mul(threads).max(1)).max(1), c),
    };
    let cpus = cpus.unwrap_or(sockets.saturating_mul(cores).saturating_mul(threads));
    if let Some(m) = o.maxcpus {
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

pub use crate::config::size::parse_size;

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
    let mut kv = KeyVals::parse(opt, v, "qom-type")?;
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
    // The same type --config's JSON fills, through the same serde fields.
    kv.set("kind", kind_name(kind));
    if kind == BackendKind::Memfd && kv.get("share").is_none() {
        // QEMU: memfd memory is shared unless share=off; the others private.
        kv.set("share", "on");
    }
    kv::from_keyvals(opt, &kv, &["qom-type"])
}

fn kind_name(k: BackendKind) -> &'static str {
    match k {
        BackendKind::Ram => "ram",
        BackendKind::Memfd => "memfd",
        BackendKind::File => "file",
    }
}

/// The backend `-machine memory-backend=ID` names; every backend given must
/// be the one used (Casemate has nothing else, such as NUMA nodes, to put
/// memory in).
/// Returns it and the ids of the unused ones (QEMU accepts those; they
/// hold no memory here, as they would hold none in QEMU until something
/// used them).
fn pick_backend(
    mut backends: Vec<MemoryBackendConfig>,
    id: Option<String>,
) -> Result<(Option<MemoryBackendConfig>, Vec<String>), CliError> {
    let opt = "-machine memory-backend";
    let b = match id {
        None => None,
        Some(id) => {
            let pos = backends
                .iter()
                .position(|b| b.id == id)
                .ok_or_else(|| bad(opt, &id, "no -object memory-backend-* has this id"))?;
            Some(backends.swap_remove(pos))
        }
    };
    Ok((b, backends.into_iter().map(|b| b.id).collect()))
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
        "pty" => Ok(SerialConfig::Pty),
        _ if v.starts_with("unix:") || v.starts_with("tcp:") => {
            monitor::endpoint(opt, v).map(SerialConfig::Socket)
        }
        _ => match v.strip_prefix("file:") {
            Some(p) if !p.is_empty() => Ok(SerialConfig::File(p.into())),
            _ => Err(bad(
                opt,
                v,
                "expected stdio, file:PATH, none, pty, unix:PATH,server=on,wait=off, \
                 tcp:HOST:PORT,server=on,wait=off or chardev:ID",
            )),
        },
    }
}

/// What `-rtc` takes.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RtcOpts {
    base: Option<String>,
    clock: Option<String>,
    driftfix: Option<String>,
}

fn rtc(opt: &str, v: &str) -> Result<RtcConfig, CliError> {
    let kv = KeyVals::parse(opt, v, "base")?;
    let o: RtcOpts = kv::from_keyvals(opt, &kv, &[])?;
    if o.clock.as_deref().is_some_and(|c| c != "host") {
        return Err(bad(opt, v, "only clock=host is supported"));
    }
    if o.driftfix.as_deref().is_some_and(|c| c != "none") {
        return Err(bad(opt, v, "only driftfix=none is supported"));
    }
    match o.base.as_deref().unwrap_or("utc") {
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
mod tests;
