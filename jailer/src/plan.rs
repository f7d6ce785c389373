//! [`JailPlan`]: everything the jailer will do, computed as a pure function of
//! the parsed arguments and a [`HostInfo`]. Nothing here touches the system,
//! so every path, cgroup write, limit, device node and argument rewrite is
//! unit-tested; [`crate::steps`] then carries the plan out.

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::cli::{Args, Resource};
use crate::host::{under_mount, CgroupMount, CgroupVersion, HostInfo};

/// `RLIMIT_NOFILE` applied when `--resource-limit nofile=` is not given
/// (Firecracker's default): the VMM needs a few dozen fds, not thousands.
pub const DEFAULT_NOFILE: u64 = 2048;

/// First fd number handed to `casemate`; 0-2 stay stdio.
pub const FIRST_HANDED_FD: i32 = 3;

/// Everything the jailer will do for one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailPlan {
    pub id: String,
    /// The host binary, opened before `pivot_root` and exec'd from that fd
    /// (nothing is copied into the jail).
    pub exec_file: PathBuf,
    /// Its file name: the jail's per-binary directory and the VMM's argv\[0\].
    pub exec_name: String,
    /// `<base>/<exec-name>/<id>`: removed by cleanup.
    pub jail_dir: PathBuf,
    /// `<jail_dir>/root`: becomes `/` for the VMM.
    pub root: PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub netns: Option<PathBuf>,
    pub cgroups: CgroupPlan,
    pub rlimits: Vec<(Resource, u64)>,
    pub devices: Vec<DeviceNode>,
    /// Host files opened by the jailer and handed over as `-add-fd`.
    pub files: Vec<HandedFile>,
    /// Tap queues attached by the jailer and handed over as `-add-fd`.
    pub taps: Vec<HandedTap>,
    /// argv for the VMM: argv\[0\], the `-add-fd` options, then the casemate
    /// arguments with the handed-over paths replaced by `/dev/fdset/N`.
    pub argv: Vec<String>,
    pub daemonize: bool,
    pub new_pid_ns: bool,
    /// Mount a procfs at `/proc` in the jail. Only with `--new-pid-ns`: a
    /// procfs of the host's pid namespace would show every host process.
    pub mount_proc: bool,
    /// What `--cleanup` (or the pid-namespace parent) removes afterwards.
    pub cleanup: CleanupPlan,
}

/// Cgroup work, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupPlan {
    /// `None` when no `--cgroup` was given: then no cgroup is touched.
    pub version: Option<CgroupVersion>,
    pub steps: Vec<CgroupStep>,
    /// `cgroup.procs` of each VM cgroup; the VMM's pid is written to each.
    pub procs_files: Vec<PathBuf>,
    /// `cgroup.procs` of the jailer's own cgroups in the same hierarchies:
    /// a jailer that joined the VM cgroups and then failed returns there so
    /// the VM cgroups can be removed.
    pub origin_procs_files: Vec<PathBuf>,
}

/// One cgroup filesystem operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupStep {
    /// Create a directory. `exclusive` is set for the VM's own cgroup: an
    /// existing one (a stale VM with the same id) is refused, not reused.
    Mkdir { dir: PathBuf, exclusive: bool },
    /// v1 cpuset: a new cpuset has empty `cpuset.cpus`/`cpuset.mems` and no
    /// task can join it, so copy the parent's value while this one is empty.
    InheritIfEmpty { file: PathBuf },
    /// Write `value` to an existing cgroup file.
    Write { file: PathBuf, value: String },
}

/// A character device to recreate inside the jail with the host's
/// major/minor numbers, owned by the VMM's uid/gid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    pub host: PathBuf,
    /// Absolute path inside the jail (`/dev/kvm`).
    pub jail: PathBuf,
}

/// How a handed-over file is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// A host file the jailer opens and passes as `-add-fd fd=FD,set=SET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedFile {
    /// The host path, with QEMU's `,,` escaping undone.
    pub host: PathBuf,
    pub access: Access,
    /// The fd number the VMM will find it at.
    pub fd: i32,
    /// The fd set; the rewritten option names `/dev/fdset/SET`.
    pub set: u32,
    /// The option it came from (`kernel`, `initrd`, `drive`, `rng`, or
    /// `backing` for a drive's backing file, see plan/backing.rs): also
    /// the `opaque=` label, for humans reading `ps`.
    pub option: &'static str,
}

/// A tap the jailer attaches (TUNSETIFF, after joining `--netns`, before
/// dropping privileges) and passes as `-add-fd fd=FD,set=SET`; the netdev
/// option then names it `fd=FD` (or `fds=A:B:...` for a multiqueue tap,
/// one entry per queue), so the jail needs no `/dev/net/tun` and the VMM
/// no TUNSETIFF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedTap {
    /// The interface name; empty: the kernel picks one (a new tap).
    pub ifname: String,
    /// One queue of a multiqueue tap (IFF_MULTI_QUEUE).
    pub multi_queue: bool,
    /// Which queue of its netdev: queues after the first of a tap with no
    /// name join the one the kernel named for queue 0.
    pub queue: u16,
    /// The fd number the VMM will find it at.
    pub fd: i32,
    pub set: u32,
}

/// What to remove once the VM has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupPlan {
    /// Removed recursively; must exist unless nothing was ever created.
    pub jail_dir: PathBuf,
    /// `<base>/<exec-name>`: removed only if empty (other VMs may use it).
    pub exec_dir: PathBuf,
    /// The VM cgroups, in every mounted hierarchy: removed if present.
    pub cgroup_dirs: Vec<PathBuf>,
    /// The default parent cgroups (`<own>/<exec-name>`): removed if empty.
    pub cgroup_parents: Vec<PathBuf>,
}

/// Why no plan could be made. Every variant names the offending input.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("invalid --id {0:?}: use 1 to 64 characters from A-Z, a-z, 0-9 and -")]
    BadId(String),
    #[error("--exec-file {0} has no usable file name")]
    BadExecName(PathBuf),
    #[error("--chroot-base-dir {0} must be an absolute path")]
    RelativeBase(PathBuf),
    #[error("invalid --cgroup file {file:?}: {reason}")]
    BadCgroupFile { file: String, reason: &'static str },
    #[error("invalid value {value:?} for cgroup file {file}: it must be one line")]
    BadCgroupValue { file: String, value: String },
    #[error("cgroup file {file}: controller {controller} is not mounted as cgroup v1")]
    ControllerNotMounted { file: String, controller: String },
    #[error("--cgroup-version 2: no cgroup2 filesystem is mounted")]
    NoV2Mount,
    #[error("cannot find the jailer's own {hierarchy} cgroup in /proc/self/cgroup; give --parent-cgroup")]
    NoOwnCgroup { hierarchy: String },
    #[error("invalid --parent-cgroup {path:?}: {reason}")]
    BadParentCgroup { path: String, reason: &'static str },
    #[error("casemate argument {0} is not supported under the jailer: {1}")]
    UnsupportedArg(String, &'static str),
    #[error("casemate option {0} needs a value")]
    MissingArgValue(String),
    #[error("drive {}: its backing chain cannot be handed over: {why}", image.display())]
    BackingChain { image: PathBuf, why: String },
}

/// `^[A-Za-z0-9-]{1,64}$`: the id becomes a path and cgroup component, so
/// `/`, `.` and `..` must be impossible.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// QEMU options (without leading dashes) that take a value: the scan must
/// skip values so that `-append "-kernel x"` is not read as an option.
const VALUE_OPTIONS: &[&str] = &[
    "machine",
    "M",
    "cpu",
    "smp",
    "m",
    "kernel",
    "initrd",
    "append",
    "serial",
    "display",
    "drive",
    "netdev",
    "net",
    "nic",
    "object",
    "device",
    "vga",
    "monitor",
    "rtc",
    "add-fd",
    "accel",
    "boot",
    "name",
    "uuid",
    "chardev",
    "global",
    "bios",
    "L",
    "numa",
    "mem-path",
    "qmp",
    "mon",
    "pidfile",
    "D",
    "d",
    "k",
    "write-probe",
    "seccomp",
    "dtb",
    "fw_cfg",
    "blockdev",
    "incoming",
    "overcommit",
    "parallel",
    "sandbox",
    "trace",
    "usbdevice",
];

/// Splits a QEMU `key=value,...` list into its raw segments. `,,` is an
/// escaped comma inside a value and does not split.
pub fn split_opts(s: &str) -> Vec<&str> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b',' {
            if i + 1 < b.len() && b[i + 1] == b',' {
                i += 2;
                continue;
            }
            out.push(&s[start..i]);
            start = i + 1;
        }
        i += 1;
    }
    out.push(&s[start..]);
    out
}

/// Undoes QEMU's `,,` escaping.
pub fn unescape_opt(s: &str) -> String {
    s.replace(",,", ",")
}

/// `key=value` of one raw segment; a segment without `=` has no key.
fn seg_kv(seg: &str) -> (Option<&str>, &str) {
    match seg.split_once('=') {
        Some((k, v)) => (Some(k), v),
        None => (None, seg),
    }
}

/// The value of `key` in an option list (last one wins, as in QEMU).
fn opt_value(segs: &[&str], key: &str) -> Option<String> {
    segs.iter().rev().find_map(|s| match seg_kv(s) {
        (Some(k), v) if k == key => Some(unescape_opt(v)),
        _ => None,
    })
}

/// The implied first value (`tap` in `-netdev tap,id=n`) or the named key.
fn opt_type(segs: &[&str], key: &str) -> Option<String> {
    match segs.first().map(|s| seg_kv(s)) {
        Some((None, v)) if !v.is_empty() => Some(v.to_string()),
        _ => opt_value(segs, key),
    }
}

fn truthy(v: &str) -> bool {
    matches!(v, "on" | "yes" | "true" | "y")
}

/// Replaces the value of `key` in a raw option list with `new`, keeping every
/// other segment byte for byte.
fn replace_opt(s: &str, key: &str, new: &str) -> String {
    split_opts(s)
        .into_iter()
        .map(|seg| match seg_kv(seg) {
            (Some(k), _) if k == key => format!("{key}={new}"),
            _ => seg.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The casemate arguments with handed-over paths replaced, and what to hand over.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rewritten {
    pub args: Vec<String>,
    pub files: Vec<HandedFile>,
    pub taps: Vec<HandedTap>,
    /// A tap the jailer does not attach (one given as `fd=`): the VMM
    /// would need `/dev/net/tun`.
    pub tap: bool,
    pub vfio: bool,
}

/// Scans the casemate arguments: every `-kernel`, `-initrd`, `-drive
/// file=` and `-object rng-random,filename=` path is planned to be opened by
/// the jailer and replaced by `/dev/fdset/N` (a drive under `-snapshot` or
/// `snapshot=on` read-only: its overlay never writes it); every tap netdev
/// named by `ifname=` (or by nothing) is planned to be attached by the
/// jailer and replaced by `fd=`/`fds=`; VFIO use is noted for the device
/// nodes.
pub fn rewrite_args(args: &[String]) -> Result<Rewritten, PlanError> {
    let mut out = Rewritten::default();
    // Indices into `out.files` of drives, with their own snapshot= flag.
    let mut drives: Vec<(usize, bool)> = Vec::new();
    let mut global_snapshot = false;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let name = match arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) {
            Some(n) if !n.is_empty() && !arg.contains('=') => n,
            _ => {
                if arg == "--config" || arg.starts_with("--config=") {
                    return Err(PlanError::UnsupportedArg(
                        arg.clone(),
                        "a config file names host paths the jail cannot see; use QEMU options",
                    ));
                }
                out.args.push(arg.clone());
                continue;
            }
        };
        if name == "config" {
            return Err(PlanError::UnsupportedArg(
                arg.clone(),
                "a config file names host paths the jail cannot see; use QEMU options",
            ));
        }
        if name == "add-fd" {
            return Err(PlanError::UnsupportedArg(
                arg.clone(),
                "the jailer closes inherited fds and adds its own -add-fd; pass paths",
            ));
        }
        if !VALUE_OPTIONS.contains(&name) {
            global_snapshot |= name == "snapshot";
            out.args.push(arg.clone());
            continue;
        }
        let value = args
            .get(i)
            .ok_or_else(|| PlanError::MissingArgValue(arg.clone()))?;
        i += 1;
        let handed = out.files.len() + out.taps.len();
        let mut hand = |host: String, access, option| {
            let n = handed;
            out.files.push(HandedFile {
                host: PathBuf::from(host),
                access,
                fd: FIRST_HANDED_FD + n as i32,
                set: n as u32,
                option,
            });
            format!("/dev/fdset/{n}")
        };
        let is_fdset = |p: &str| p.starts_with("/dev/fdset/");
        let new_value = match name {
            "kernel" | "initrd" if !is_fdset(value) => {
                let option = if name == "kernel" { "kernel" } else { "initrd" };
                hand(value.clone(), Access::ReadOnly, option)
            }
            "drive" => {
                let segs = split_opts(value);
                match opt_value(&segs, "file") {
                    Some(path) if !path.is_empty() && !is_fdset(&path) => {
                        let ro = segs.iter().any(|s| match seg_kv(s) {
                            (Some("readonly" | "read-only"), v) => truthy(v),
                            (None, "readonly") => true,
                            _ => false,
                        });
                        let access = if ro {
                            Access::ReadOnly
                        } else {
                            Access::ReadWrite
                        };
                        let snapshot = opt_value(&segs, "snapshot").is_some_and(|v| truthy(&v));
                        let fdset = hand(path, access, "drive");
                        drives.push((out.files.len() - 1, snapshot));
                        replace_opt(value, "file", &fdset)
                    }
                    _ => value.clone(),
                }
            }
            "object" => {
                let segs = split_opts(value);
                let is_rng = opt_type(&segs, "qom-type").as_deref() == Some("rng-random");
                match opt_value(&segs, "filename") {
                    Some(path) if is_rng && !is_fdset(&path) => {
                        let fdset = hand(path, Access::ReadOnly, "rng");
                        replace_opt(value, "filename", &fdset)
                    }
                    _ => value.clone(),
                }
            }
            "netdev" | "nic" | "net" => {
                if opt_type(&split_opts(value), "type").as_deref() != Some("tap") {
                    value.clone()
                } else if let Some((rewritten, taps)) = hand_tap(value, handed) {
                    out.taps.extend(taps);
                    rewritten
                } else {
                    out.tap = true;
                    value.clone()
                }
            }
            "device" => {
                if opt_type(&split_opts(value), "driver").as_deref() == Some("vfio-pci") {
                    out.vfio = true;
                }
                value.clone()
            }
            _ => value.clone(),
        };
        out.args.push(arg.clone());
        out.args.push(new_value);
    }
    for (n, snapshot) in drives {
        if snapshot || global_snapshot {
            out.files[n].access = Access::ReadOnly;
        }
    }
    Ok(out)
}

/// Most queues a tap netdev takes (the VMM's limit).
const MAX_TAP_QUEUES: u32 = 127;

/// A tap netdev option the jailer can attach: by `ifname=` or by nothing
/// (the kernel names a new tap), not by `fd=`/`fds=` (the jailer closes
/// inherited fds). Returns the option with `ifname=` and `queues=`
/// replaced by `fd=N` or `fds=N:N+1:...` (fd numbers from `first`), and
/// the taps to attach; `None` leaves the option to the VMM (which then
/// reports a bad `queues=` itself).
fn hand_tap(value: &str, first: usize) -> Option<(String, Vec<HandedTap>)> {
    let segs = split_opts(value);
    if opt_value(&segs, "fd").is_some() || opt_value(&segs, "fds").is_some() {
        return None;
    }
    let queues = match opt_value(&segs, "queues") {
        None => 1,
        // Decimal or `0x` hex, as QEMU (and the VMM) read numbers.
        Some(q) => match q.strip_prefix("0x").or_else(|| q.strip_prefix("0X")) {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => q.parse::<u32>().ok(),
        }
        .filter(|q| (1..=MAX_TAP_QUEUES).contains(q))?,
    };
    let ifname = opt_value(&segs, "ifname").unwrap_or_default();
    let taps: Vec<HandedTap> = (0..queues as usize)
        .map(|q| HandedTap {
            ifname: ifname.clone(),
            multi_queue: queues > 1,
            queue: q as u16,
            fd: FIRST_HANDED_FD + (first + q) as i32,
            set: (first + q) as u32,
        })
        .collect();
    let fds = taps
        .iter()
        .map(|t| t.fd.to_string())
        .collect::<Vec<_>>()
        .join(":");
    let handle = if queues > 1 {
        format!("fds={fds}")
    } else {
        format!("fd={fds}")
    };
    let mut kept: Vec<String> = segs
        .iter()
        .filter(|s| !matches!(seg_kv(s), (Some("ifname" | "queues"), _)))
        .map(|s| s.to_string())
        .collect();
    kept.push(handle);
    Some((kept.join(","), taps))
}

/// Normalises a cgroup path given on the command line to `/a/b`; refuses
/// `..` and the hierarchy's root.
fn parent_cgroup(path: &str) -> Result<String, PlanError> {
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let bad = |reason| PlanError::BadParentCgroup {
        path: path.to_string(),
        reason,
    };
    if comps.iter().any(|c| *c == ".." || *c == ".") {
        return Err(bad("`.` and `..` are not allowed"));
    }
    if comps.is_empty() {
        return Err(bad("VM cgroups are never created at a hierarchy's root"));
    }
    Ok(format!("/{}", comps.join("/")))
}

/// Every directory from just below `mount` down to `cgroup` (inclusive).
fn chain(mount: &Path, cgroup: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut p = mount.to_path_buf();
    for comp in cgroup.split('/').filter(|c| !c.is_empty()) {
        p.push(comp);
        dirs.push(p.clone());
    }
    dirs
}

/// Checks a `--cgroup` file name and returns its controller.
fn cgroup_controller(file: &str) -> Result<&str, PlanError> {
    let bad = |reason| PlanError::BadCgroupFile {
        file: file.to_string(),
        reason,
    };
    let (controller, rest) = file
        .split_once('.')
        .ok_or(bad("expected CONTROLLER.NAME, e.g. pids.max"))?;
    let ok = |s: &str, upper: bool| {
        !s.is_empty()
            && s.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'_'
                    || b == b'.'
                    || (upper && b.is_ascii_uppercase())
            })
    };
    // Upper case only after the controller: hugetlb.2MB.limit_in_bytes.
    if !ok(controller, false) || !ok(rest, true) {
        return Err(bad(
            "only a-z, 0-9, _ and . are allowed (and A-Z after the controller)",
        ));
    }
    if controller == "cgroup" {
        return Err(bad("cgroup core files are managed by the jailer"));
    }
    Ok(controller)
}

/// Where the VM cgroup's parent lives in one hierarchy.
struct Parent {
    path: String,
    /// True when the jailer made it up (`<own>/<exec-name>`): cleanup then
    /// removes it once empty.
    default: bool,
}

fn parent_for(
    args: &Args,
    own: Option<&str>,
    hierarchy: &str,
    exec_name: &str,
) -> Result<Parent, PlanError> {
    match &args.parent_cgroup {
        Some(p) => Ok(Parent {
            path: parent_cgroup(p)?,
            default: false,
        }),
        None => {
            let own = own.ok_or_else(|| PlanError::NoOwnCgroup {
                hierarchy: hierarchy.to_string(),
            })?;
            Ok(Parent {
                path: format!("{}/{exec_name}", own.trim_end_matches('/')),
                default: true,
            })
        }
    }
}

fn plan_v1(args: &Args, host: &HostInfo, exec_name: &str) -> Result<CgroupPlan, PlanError> {
    // Group the files by hierarchy (mount, its controller as named on the
    // command line, the files), in command-line order.
    type Group<'a> = (&'a CgroupMount, &'a str, Vec<(&'a str, &'a str)>);
    let mut groups: Vec<Group> = Vec::new();
    for (file, value) in &args.cgroups {
        let controller = cgroup_controller(file)?;
        let mount = host
            .v1_mount(controller)
            .ok_or_else(|| PlanError::ControllerNotMounted {
                file: file.clone(),
                controller: controller.to_string(),
            })?;
        match groups
            .iter_mut()
            .find(|g| g.0.mount_point == mount.mount_point)
        {
            Some(g) => g.2.push((file, value)),
            None => groups.push((mount, controller, vec![(file, value)])),
        }
    }
    let mut plan = CgroupPlan {
        version: Some(CgroupVersion::V1),
        ..CgroupPlan::default()
    };
    for (mount, controller, files) in groups {
        let parent = parent_for(args, host.own_v1_cgroup(controller), controller, exec_name)?;
        let cpuset = mount.controllers.iter().any(|c| c == "cpuset");
        let vm = format!("{}/{}", parent.path, args.id);
        let dirs = chain(&mount.mount_point, &vm);
        for (n, dir) in dirs.iter().enumerate() {
            plan.steps.push(CgroupStep::Mkdir {
                dir: dir.clone(),
                exclusive: n + 1 == dirs.len(),
            });
            if cpuset {
                for f in ["cpuset.cpus", "cpuset.mems"] {
                    plan.steps
                        .push(CgroupStep::InheritIfEmpty { file: dir.join(f) });
                }
            }
        }
        let vm_dir = under_mount(&mount.mount_point, &vm);
        for (file, value) in files {
            plan.steps.push(CgroupStep::Write {
                file: vm_dir.join(file),
                value: value.to_string(),
            });
        }
        plan.procs_files.push(vm_dir.join("cgroup.procs"));
        if let Some(own) = host.own_v1_cgroup(controller) {
            plan.origin_procs_files
                .push(under_mount(&mount.mount_point, own).join("cgroup.procs"));
        }
    }
    Ok(plan)
}

fn plan_v2(args: &Args, host: &HostInfo, exec_name: &str) -> Result<CgroupPlan, PlanError> {
    let mut controllers: Vec<&str> = Vec::new();
    for (file, _) in &args.cgroups {
        let c = cgroup_controller(file)?;
        if !controllers.contains(&c) {
            controllers.push(c);
        }
    }
    let mount = host.v2_mount().ok_or(PlanError::NoV2Mount)?;
    let parent = parent_for(args, host.own_v2_cgroup(), "cgroup2", exec_name)?;
    let enable = controllers
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut plan = CgroupPlan {
        version: Some(CgroupVersion::V2),
        ..CgroupPlan::default()
    };
    // A controller is usable in a cgroup only if every ancestor enables it
    // in cgroup.subtree_control, from the root down to the VM's parent.
    plan.steps.push(CgroupStep::Write {
        file: mount.mount_point.join("cgroup.subtree_control"),
        value: enable.clone(),
    });
    for dir in chain(&mount.mount_point, &parent.path) {
        plan.steps.push(CgroupStep::Mkdir {
            dir: dir.clone(),
            exclusive: false,
        });
        plan.steps.push(CgroupStep::Write {
            file: dir.join("cgroup.subtree_control"),
            value: enable.clone(),
        });
    }
    let vm_dir = under_mount(&mount.mount_point, &format!("{}/{}", parent.path, args.id));
    plan.steps.push(CgroupStep::Mkdir {
        dir: vm_dir.clone(),
        exclusive: true,
    });
    for (file, value) in &args.cgroups {
        plan.steps.push(CgroupStep::Write {
            file: vm_dir.join(file),
            value: value.clone(),
        });
    }
    plan.procs_files.push(vm_dir.join("cgroup.procs"));
    if let Some(own) = host.own_v2_cgroup() {
        plan.origin_procs_files
            .push(under_mount(&mount.mount_point, own).join("cgroup.procs"));
    }
    Ok(plan)
}

/// The exec file's name, checked.
fn exec_name(exec_file: &Path) -> Result<String, PlanError> {
    exec_file
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map(str::to_string)
        .ok_or_else(|| PlanError::BadExecName(exec_file.to_path_buf()))
}

/// The cleanup plan for an id; needs only what `--cleanup` is given.
/// The VM cgroup is looked for in every mounted hierarchy, whichever
/// controllers the jail used, so cleanup needs no record of the jail run.
pub fn cleanup_plan(args: &Args, host: &HostInfo) -> Result<CleanupPlan, PlanError> {
    if !valid_id(&args.id) {
        return Err(PlanError::BadId(args.id.clone()));
    }
    if !args.chroot_base_dir.is_absolute() {
        return Err(PlanError::RelativeBase(args.chroot_base_dir.clone()));
    }
    let name = exec_name(&args.exec_file)?;
    let exec_dir = args.chroot_base_dir.join(&name);
    let mut cgroup_dirs = Vec::new();
    let mut cgroup_parents = Vec::new();
    for mount in &host.mounts {
        let own = match mount.version {
            CgroupVersion::V2 => host.own_v2_cgroup(),
            CgroupVersion::V1 => match mount.controllers.first() {
                Some(c) => host.own_v1_cgroup(c),
                // A named hierarchy (name=systemd): the jailer never uses it.
                None => continue,
            },
        };
        let parent = match parent_for(args, own, "", &name) {
            Ok(p) => p,
            // No own cgroup in this hierarchy: nothing can have been made there.
            Err(PlanError::NoOwnCgroup { .. }) => continue,
            Err(e) => return Err(e),
        };
        cgroup_dirs.push(under_mount(
            &mount.mount_point,
            &format!("{}/{}", parent.path, args.id),
        ));
        if parent.default {
            cgroup_parents.push(under_mount(&mount.mount_point, &parent.path));
        }
    }
    Ok(CleanupPlan {
        jail_dir: exec_dir.join(&args.id),
        exec_dir,
        cgroup_dirs,
        cgroup_parents,
    })
}

impl JailPlan {
    /// The highest fd number handed to the VMM (2 when none is): the
    /// jailer keeps every fd of its own above it.
    pub fn last_handed_fd(&self) -> i32 {
        let files = self.files.iter().map(|f| f.fd);
        files
            .chain(self.taps.iter().map(|t| t.fd))
            .max()
            .unwrap_or(FIRST_HANDED_FD - 1)
    }

    /// Computes the plan. `args.mode` must be `Jail` (uid and gid present).
    pub fn new(args: &Args, host: &HostInfo) -> Result<JailPlan, PlanError> {
        let cleanup = cleanup_plan(args, host)?;
        let exec_name = exec_name(&args.exec_file)?;
        let root = cleanup.jail_dir.join("root");

        let cgroups = if args.cgroups.is_empty() {
            CgroupPlan::default()
        } else {
            for (file, value) in &args.cgroups {
                if value.contains('\n') || value.contains('\0') {
                    return Err(PlanError::BadCgroupValue {
                        file: file.clone(),
                        value: value.clone(),
                    });
                }
            }
            match args
                .cgroup_version
                .unwrap_or_else(|| host.default_cgroup_version())
            {
                CgroupVersion::V1 => plan_v1(args, host, &exec_name)?,
                CgroupVersion::V2 => plan_v2(args, host, &exec_name)?,
            }
        };

        let mut rlimits = args.resource_limits.clone();
        if !rlimits.iter().any(|(r, _)| *r == Resource::NoFile) {
            rlimits.insert(0, (Resource::NoFile, DEFAULT_NOFILE));
        }

        let rewritten = rewrite_args(&args.casemate_args)?;
        let dev = |p: &str| DeviceNode {
            host: PathBuf::from(p),
            jail: PathBuf::from(p),
        };
        let mut devices = vec![dev("/dev/kvm"), dev("/dev/urandom")];
        if rewritten.tap {
            devices.push(dev("/dev/net/tun"));
        }
        if rewritten.vfio {
            let mut vfio: Vec<PathBuf> = host.vfio_nodes.clone();
            if !vfio.iter().any(|p| p == Path::new("/dev/vfio/vfio")) {
                vfio.insert(0, PathBuf::from("/dev/vfio/vfio"));
            }
            devices.extend(vfio.into_iter().map(|p| DeviceNode {
                host: p.clone(),
                jail: p,
            }));
        }

        let mut argv = vec![exec_name.clone()];
        for f in &rewritten.files {
            argv.push("-add-fd".into());
            argv.push(format!("fd={},set={},opaque={}", f.fd, f.set, f.option));
        }
        for t in &rewritten.taps {
            argv.push("-add-fd".into());
            argv.push(format!("fd={},set={},opaque=tap", t.fd, t.set));
        }
        argv.extend(rewritten.args);

        Ok(JailPlan {
            id: args.id.clone(),
            exec_file: args.exec_file.clone(),
            exec_name,
            jail_dir: cleanup.jail_dir.clone(),
            root,
            uid: args.uid.unwrap_or(u32::MAX),
            gid: args.gid.unwrap_or(u32::MAX),
            netns: args.netns.clone(),
            cgroups,
            rlimits,
            devices,
            files: rewritten.files,
            taps: rewritten.taps,
            argv,
            daemonize: args.daemonize,
            new_pid_ns: args.new_pid_ns,
            mount_proc: args.new_pid_ns,
            cleanup,
        })
    }
}

mod backing;

#[cfg(test)]
mod tests;
