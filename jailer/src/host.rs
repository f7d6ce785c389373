//! The small description of the host that the plan depends on: cgroup mounts,
//! the jailer's own cgroups and the VFIO nodes present. Read once by
//! [`HostInfo::read`]; the parsers are pure so the plan can be tested with
//! made-up hosts.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Which cgroup hierarchy layout to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    pub version: CgroupVersion,
    pub mount_point: PathBuf,
    /// v1: the controllers bound to this hierarchy (named hierarchies such as
    /// `name=systemd` are left out). v2: empty (controllers are per cgroup).
    pub controllers: Vec<String>,
}

/// One line of `/proc/self/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfCgroup {
    /// 0 for the v2 hierarchy.
    pub hierarchy: u32,
    /// Empty for the v2 line.
    pub controllers: Vec<String>,
    /// Path inside the hierarchy, starting with `/`.
    pub path: String,
}

/// What the plan needs to know about the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    pub mounts: Vec<CgroupMount>,
    pub self_cgroups: Vec<SelfCgroup>,
    /// Entries of `/dev/vfio` (group nodes and `vfio`), if any.
    pub vfio_nodes: Vec<PathBuf>,
}

/// The host could not be described.
#[derive(Debug, Error)]
pub enum HostError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// v1 controllers the kernel knows; other mount options are flags or names.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// Undoes the octal escapes (`\040` for a space) of `/proc/mounts`.
fn unescape_mount_field(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl HostInfo {
    /// Reads `/proc/mounts`, `/proc/self/cgroup` and `/dev/vfio`.
    pub fn read() -> Result<Self, HostError> {
        let read = |p: &str| {
            fs::read_to_string(p).map_err(|source| HostError::Read {
                path: PathBuf::from(p),
                source,
            })
        };
        let mounts = Self::parse_mounts(&read("/proc/mounts")?);
        let self_cgroups = Self::parse_self_cgroup(&read("/proc/self/cgroup")?);
        let mut vfio_nodes: Vec<PathBuf> = match fs::read_dir("/dev/vfio") {
            Ok(dir) => dir.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        };
        vfio_nodes.sort();
        Ok(HostInfo {
            mounts,
            self_cgroups,
            vfio_nodes,
        })
    }

    /// Parses `/proc/mounts` into the cgroup hierarchies it lists.
    pub fn parse_mounts(text: &str) -> Vec<CgroupMount> {
        let mut out = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            let mount_point = PathBuf::from(unescape_mount_field(f[1]));
            match f[2] {
                "cgroup" => {
                    let controllers: Vec<String> = f[3]
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o))
                        .map(str::to_string)
                        .collect();
                    out.push(CgroupMount {
                        version: CgroupVersion::V1,
                        mount_point,
                        controllers,
                    });
                }
                "cgroup2" => out.push(CgroupMount {
                    version: CgroupVersion::V2,
                    mount_point,
                    controllers: Vec::new(),
                }),
                _ => {}
            }
        }
        out
    }

    /// Parses `/proc/self/cgroup` (`ID:CONTROLLERS:PATH` lines).
    pub fn parse_self_cgroup(text: &str) -> Vec<SelfCgroup> {
        text.lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, ':');
                let hierarchy = parts.next()?.parse().ok()?;
                let controllers = parts
                    .next()?
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect();
                let path = parts.next()?.to_string();
                Some(SelfCgroup {
                    hierarchy,
                    controllers,
                    path,
                })
            })
            .collect()
    }

    /// The version used when `--cgroup-version` is not given: v1 when any v1
    /// controller is mounted (this host: v1 controllers plus a v2 mount that
    /// holds only hugetlb), v2 otherwise.
    pub fn default_cgroup_version(&self) -> CgroupVersion {
        if self
            .mounts
            .iter()
            .any(|m| m.version == CgroupVersion::V1 && !m.controllers.is_empty())
        {
            CgroupVersion::V1
        } else {
            CgroupVersion::V2
        }
    }

    /// The v1 hierarchy holding `controller`.
    pub fn v1_mount(&self, controller: &str) -> Option<&CgroupMount> {
        self.mounts.iter().find(|m| {
            m.version == CgroupVersion::V1 && m.controllers.iter().any(|c| c == controller)
        })
    }

    /// The v2 hierarchy.
    pub fn v2_mount(&self) -> Option<&CgroupMount> {
        self.mounts.iter().find(|m| m.version == CgroupVersion::V2)
    }

    /// The jailer's own cgroup path in the v1 hierarchy of `controller`.
    pub fn own_v1_cgroup(&self, controller: &str) -> Option<&str> {
        self.self_cgroups
            .iter()
            .find(|c| c.hierarchy != 0 && c.controllers.iter().any(|x| x == controller))
            .map(|c| c.path.as_str())
    }

    /// The jailer's own cgroup path in the v2 hierarchy.
    pub fn own_v2_cgroup(&self) -> Option<&str> {
        self.self_cgroups
            .iter()
            .find(|c| c.hierarchy == 0)
            .map(|c| c.path.as_str())
    }
}

/// Joins a cgroup path (`/a/b`, possibly relative) under a mount point.
pub fn under_mount(mount: &Path, cgroup: &str) -> PathBuf {
    let mut p = mount.to_path_buf();
    for comp in cgroup.split('/').filter(|c| !c.is_empty()) {
        p.push(comp);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const THIS_HOST_MOUNTS: &str = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,relatime,memory 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
cgroup /sys/fs/cgroup/a\\040b cgroup rw,cpuacct,pids 0 0
";

    #[test]
    fn parses_mounts() {
        let m = HostInfo::parse_mounts(THIS_HOST_MOUNTS);
        assert_eq!(m.len(), 6);
        assert_eq!(m[0].controllers, ["cpu"]);
        assert_eq!(m[2].mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m[2].controllers, ["memory"]);
        assert!(
            m[3].controllers.is_empty(),
            "named hierarchy has no controller"
        );
        assert_eq!(m[4].version, CgroupVersion::V2);
        assert_eq!(m[5].mount_point, PathBuf::from("/sys/fs/cgroup/a b"));
        assert_eq!(m[5].controllers, ["cpuacct", "pids"]);
    }

    #[test]
    fn parses_self_cgroup_and_finds_own_paths() {
        let host = HostInfo {
            mounts: HostInfo::parse_mounts(THIS_HOST_MOUNTS),
            self_cgroups: HostInfo::parse_self_cgroup(
                "9:name=systemd:/\n4:memory:/process_api/5f\n3:cpuset:/\n1:cpu:/\n0::/user.slice\n",
            ),
            vfio_nodes: Vec::new(),
        };
        assert_eq!(host.own_v1_cgroup("memory"), Some("/process_api/5f"));
        assert_eq!(host.own_v1_cgroup("cpu"), Some("/"));
        assert_eq!(host.own_v1_cgroup("pids"), None);
        assert_eq!(host.own_v2_cgroup(), Some("/user.slice"));
        assert_eq!(host.default_cgroup_version(), CgroupVersion::V1);
        assert_eq!(
            host.v1_mount("pids").map(|m| m.mount_point.clone()),
            Some(PathBuf::from("/sys/fs/cgroup/a b"))
        );
    }

    #[test]
    fn default_version_is_v2_without_v1_controllers() {
        let host = HostInfo {
            mounts: HostInfo::parse_mounts(
                "cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\ncgroup /x cgroup rw,name=systemd 0 0\n",
            ),
            ..HostInfo::default()
        };
        assert_eq!(host.default_cgroup_version(), CgroupVersion::V2);
    }

    #[test]
    fn under_mount_ignores_slashes() {
        assert_eq!(
            under_mount(Path::new("/m"), "/a//b/"),
            PathBuf::from("/m/a/b")
        );
        assert_eq!(under_mount(Path::new("/m"), "/"), PathBuf::from("/m"));
    }
}
