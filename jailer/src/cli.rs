//! Command-line parsing for `casemate-jailer`: turns argv into [`Args`].
//!
//! Hand-parsed: the grammar is a dozen `--name VALUE` options and a `--`
//! separator, and a privileged binary is better off with fewer dependencies.
//! Both `--name VALUE` and `--name=VALUE` are accepted.

use std::path::PathBuf;

use thiserror::Error;

use crate::host::CgroupVersion;

/// Default directory under which jails are created (Firecracker's default).
pub const DEFAULT_CHROOT_BASE: &str = "/srv/jailer";

/// What the jailer was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Build a jail and exec `casemate` in it.
    Jail,
    /// Remove the jail directory and cgroups left by an earlier `Jail` run.
    Cleanup,
    /// Print usage.
    Help,
}

/// A resource the jailer can limit with `setrlimit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `RLIMIT_NOFILE`: open file descriptors.
    NoFile,
    /// `RLIMIT_FSIZE`: largest file the VMM may write, in bytes.
    FSize,
}

impl Resource {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Resource::NoFile => "nofile",
            Resource::FSize => "fsize",
        }
    }
}

/// Parsed command line. Validation that needs the host (paths, cgroups)
/// happens in [`crate::plan`] and [`crate::steps`], not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub mode: Mode,
    pub id: String,
    pub exec_file: PathBuf,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub chroot_base_dir: PathBuf,
    pub netns: Option<PathBuf>,
    pub cgroup_version: Option<CgroupVersion>,
    /// `--cgroup FILE=VALUE`, in command-line order.
    pub cgroups: Vec<(String, String)>,
    pub parent_cgroup: Option<String>,
    /// `--resource-limit NAME=N[,NAME=N]`, in command-line order.
    pub resource_limits: Vec<(Resource, u64)>,
    pub daemonize: bool,
    pub new_pid_ns: bool,
    /// Everything after `--`, passed to `casemate` (after rewriting paths).
    pub casemate_args: Vec<String>,
}

/// Why the command line was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("unknown option {0} (see --help)")]
    UnknownOption(String),
    #[error("option {0} needs a value")]
    MissingValue(String),
    #[error("option {0} is required")]
    MissingRequired(&'static str),
    #[error("option {0} given twice")]
    Duplicate(String),
    #[error("invalid value {value:?} for {option}: {reason}")]
    InvalidValue {
        option: String,
        value: String,
        reason: &'static str,
    },
    #[error("unexpected argument {0:?}: casemate arguments go after --")]
    Unexpected(String),
}

/// Usage text printed by `--help`.
pub const USAGE: &str = "\
usage: casemate-jailer --id ID --exec-file PATH --uid UID --gid GID
         [--chroot-base-dir DIR] [--netns PATH] [--cgroup-version 1|2]
         [--cgroup FILE=VALUE]... [--parent-cgroup PATH]
         [--resource-limit nofile=N,fsize=N]... [--daemonize] [--new-pid-ns]
         -- CASEMATE-ARGS...
       casemate-jailer --cleanup --id ID --exec-file PATH
         [--chroot-base-dir DIR] [--parent-cgroup PATH]

The jail root is <chroot-base-dir>/<exec-file name>/<id>/root
(chroot-base-dir defaults to /srv/jailer). The VM cgroup is
<parent-cgroup>/<id> in each hierarchy used, where parent-cgroup defaults to
<the jailer's own cgroup>/<exec-file name>. The cgroup version defaults to 1
when any cgroup v1 controller is mounted, else 2. Without --new-pid-ns the
jailer becomes the VM: run --cleanup with the same values after it ends.
With --new-pid-ns the jailer waits, cleans up and exits with the VM's status.
";

fn parse_u32(option: &str, value: &str) -> Result<u32, ParseError> {
    value.parse().map_err(|_| ParseError::InvalidValue {
        option: option.to_string(),
        value: value.to_string(),
        reason: "expected a decimal number",
    })
}

fn parse_cgroup(value: &str) -> Result<(String, String), ParseError> {
    let invalid = |reason| ParseError::InvalidValue {
        option: "--cgroup".into(),
        value: value.to_string(),
        reason,
    };
    let (file, val) = value
        .split_once('=')
        .ok_or(invalid("expected FILE=VALUE"))?;
    if file.is_empty() || val.is_empty() {
        return Err(invalid("expected FILE=VALUE"));
    }
    Ok((file.to_string(), val.to_string()))
}

fn parse_limits(value: &str, out: &mut Vec<(Resource, u64)>) -> Result<(), ParseError> {
    for item in value.split(',') {
        let invalid = |reason| ParseError::InvalidValue {
            option: "--resource-limit".into(),
            value: item.to_string(),
            reason,
        };
        let (name, n) = item.split_once('=').ok_or(invalid("expected NAME=N"))?;
        let resource = match name {
            "nofile" | "no-file" => Resource::NoFile,
            "fsize" => Resource::FSize,
            _ => return Err(invalid("resource must be nofile or fsize")),
        };
        let n: u64 = n
            .parse()
            .map_err(|_| invalid("expected a decimal number"))?;
        // A later value for the same resource replaces the earlier one.
        out.retain(|(r, _)| *r != resource);
        out.push((resource, n));
    }
    Ok(())
}

fn set_once<T>(slot: &mut Option<T>, option: &str, value: T) -> Result<(), ParseError> {
    if slot.is_some() {
        return Err(ParseError::Duplicate(option.to_string()));
    }
    *slot = Some(value);
    Ok(())
}

/// Parses the jailer's arguments (without argv\[0\]).
pub fn parse<I, S>(argv: I) -> Result<Args, ParseError>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut it = argv.into_iter().map(Into::into);
    let mut id = None;
    let mut exec_file = None;
    let mut uid = None;
    let mut gid = None;
    let mut base = None;
    let mut netns = None;
    let mut version = None;
    let mut cgroups = Vec::new();
    let mut parent = None;
    let mut limits = Vec::new();
    let mut daemonize = false;
    let mut new_pid_ns = false;
    let mut cleanup = false;
    let mut help = false;
    let mut casemate_args = Vec::new();

    while let Some(arg) = it.next() {
        if arg == "--" {
            casemate_args.extend(it.by_ref());
            break;
        }
        if !arg.starts_with("--") {
            return Err(ParseError::Unexpected(arg));
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let is_flag = matches!(
            name.as_str(),
            "--daemonize" | "--new-pid-ns" | "--cleanup" | "--help"
        );
        if is_flag {
            if inline.is_some() {
                return Err(ParseError::InvalidValue {
                    option: name,
                    value: inline.unwrap_or_default(),
                    reason: "this option takes no value",
                });
            }
            match name.as_str() {
                "--daemonize" => daemonize = true,
                "--new-pid-ns" => new_pid_ns = true,
                "--cleanup" => cleanup = true,
                _ => help = true,
            }
            continue;
        }
        let known = [
            "--id",
            "--exec-file",
            "--uid",
            "--gid",
            "--chroot-base-dir",
            "--netns",
            "--cgroup-version",
            "--cgroup",
            "--parent-cgroup",
            "--resource-limit",
        ];
        if !known.contains(&name.as_str()) {
            return Err(ParseError::UnknownOption(name));
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| ParseError::MissingValue(name.clone()))?,
        };
        match name.as_str() {
            "--id" => set_once(&mut id, &name, value)?,
            "--exec-file" => set_once(&mut exec_file, &name, PathBuf::from(value))?,
            "--uid" => set_once(&mut uid, &name, parse_u32(&name, &value)?)?,
            "--gid" => set_once(&mut gid, &name, parse_u32(&name, &value)?)?,
            "--chroot-base-dir" => set_once(&mut base, &name, PathBuf::from(value))?,
            "--netns" => set_once(&mut netns, &name, PathBuf::from(value))?,
            "--cgroup-version" => {
                let v = match value.as_str() {
                    "1" => CgroupVersion::V1,
                    "2" => CgroupVersion::V2,
                    _ => {
                        return Err(ParseError::InvalidValue {
                            option: name,
                            value,
                            reason: "expected 1 or 2",
                        })
                    }
                };
                set_once(&mut version, "--cgroup-version", v)?
            }
            "--cgroup" => cgroups.push(parse_cgroup(&value)?),
            "--parent-cgroup" => set_once(&mut parent, &name, value)?,
            _ => parse_limits(&value, &mut limits)?,
        }
    }

    let mode = if help {
        Mode::Help
    } else if cleanup {
        Mode::Cleanup
    } else {
        Mode::Jail
    };
    if mode == Mode::Help {
        return Ok(Args {
            mode,
            id: String::new(),
            exec_file: PathBuf::new(),
            uid: None,
            gid: None,
            chroot_base_dir: PathBuf::from(DEFAULT_CHROOT_BASE),
            netns: None,
            cgroup_version: None,
            cgroups: Vec::new(),
            parent_cgroup: None,
            resource_limits: Vec::new(),
            daemonize: false,
            new_pid_ns: false,
            casemate_args: Vec::new(),
        });
    }
    let id = id.ok_or(ParseError::MissingRequired("--id"))?;
    let exec_file = exec_file.ok_or(ParseError::MissingRequired("--exec-file"))?;
    if mode == Mode::Jail {
        uid.ok_or(ParseError::MissingRequired("--uid"))?;
        gid.ok_or(ParseError::MissingRequired("--gid"))?;
    }
    Ok(Args {
        mode,
        id,
        exec_file,
        uid,
        gid,
        chroot_base_dir: base.unwrap_or_else(|| PathBuf::from(DEFAULT_CHROOT_BASE)),
        netns,
        cgroup_version: version,
        cgroups,
        parent_cgroup: parent,
        resource_limits: limits,
        daemonize,
        new_pid_ns,
        casemate_args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<&'static str> {
        vec![
            "--id",
            "vm1",
            "--exec-file",
            "/usr/bin/casemate",
            "--uid",
            "123",
            "--gid=456",
        ]
    }

    #[test]
    fn parses_required_and_defaults() {
        let mut a = base();
        a.extend(["--", "-m", "128", "--", "-kernel"]);
        let args = parse(a).unwrap();
        assert_eq!(args.mode, Mode::Jail);
        assert_eq!(args.id, "vm1");
        assert_eq!(args.exec_file, PathBuf::from("/usr/bin/casemate"));
        assert_eq!((args.uid, args.gid), (Some(123), Some(456)));
        assert_eq!(args.chroot_base_dir, PathBuf::from("/srv/jailer"));
        assert_eq!(args.cgroup_version, None);
        // Everything after the first `--` belongs to casemate, even another `--`.
        assert_eq!(args.casemate_args, ["-m", "128", "--", "-kernel"]);
    }

    #[test]
    fn parses_every_option() {
        let mut a = base();
        a.extend([
            "--chroot-base-dir",
            "/j",
            "--netns=/var/run/netns/n",
            "--cgroup-version",
            "2",
            "--cgroup",
            "cpu.max=50000 100000",
            "--cgroup=pids.max=10",
            "--parent-cgroup",
            "vms",
            "--resource-limit",
            "nofile=64,fsize=1000",
            "--resource-limit",
            "no-file=65",
            "--daemonize",
            "--new-pid-ns",
        ]);
        let args = parse(a).unwrap();
        assert_eq!(args.chroot_base_dir, PathBuf::from("/j"));
        assert_eq!(args.netns, Some(PathBuf::from("/var/run/netns/n")));
        assert_eq!(args.cgroup_version, Some(CgroupVersion::V2));
        assert_eq!(
            args.cgroups,
            [
                ("cpu.max".to_string(), "50000 100000".to_string()),
                ("pids.max".to_string(), "10".to_string())
            ]
        );
        assert_eq!(args.parent_cgroup.as_deref(), Some("vms"));
        assert_eq!(
            args.resource_limits,
            [(Resource::FSize, 1000), (Resource::NoFile, 65)]
        );
        assert!(args.daemonize && args.new_pid_ns);
    }

    #[test]
    fn cleanup_needs_no_uid() {
        let args = parse(["--cleanup", "--id", "a", "--exec-file", "/x"]).unwrap();
        assert_eq!(args.mode, Mode::Cleanup);
        assert_eq!(args.uid, None);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            parse(["--id", "a", "--exec-file", "/x", "--uid", "1"]),
            Err(ParseError::MissingRequired("--gid"))
        );
        assert_eq!(
            parse(["--bogus"]),
            Err(ParseError::UnknownOption("--bogus".into()))
        );
        assert_eq!(
            parse(["--id"]),
            Err(ParseError::MissingValue("--id".into()))
        );
        assert_eq!(
            parse(["--id", "a", "--id", "b"]),
            Err(ParseError::Duplicate("--id".into()))
        );
        assert!(matches!(
            parse(["--uid", "-1"]),
            Err(ParseError::InvalidValue { .. })
        ));
        assert!(matches!(
            parse(["--cgroup", "pids.max"]),
            Err(ParseError::InvalidValue { .. })
        ));
        assert!(matches!(
            parse(["--resource-limit", "core=0"]),
            Err(ParseError::InvalidValue { .. })
        ));
        assert!(matches!(
            parse(["--cgroup-version", "3"]),
            Err(ParseError::InvalidValue { .. })
        ));
        assert_eq!(
            parse(["-kernel"]),
            Err(ParseError::Unexpected("-kernel".into()))
        );
        assert!(matches!(
            parse(["--daemonize=yes"]),
            Err(ParseError::InvalidValue { .. })
        ));
    }
}
