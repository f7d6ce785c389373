//! Guest RAM backend description (`-object memory-backend-*`, `-overcommit`,
//! `--thp`): plain data plus the checks `VmConfig::validate` runs on it.
//! Host facts (hugepage pools, hugetlbfs mounts) are checked when the memory
//! is built (`crate::memory`), not here: validation does no I/O.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::validate::{human_size, ConfigError};

/// Which QEMU memory backend object this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// `memory-backend-ram`: anonymous memory.
    Ram,
    /// `memory-backend-memfd`: an anonymous file (memfd), optionally on hugetlb.
    Memfd,
    /// `memory-backend-file`: a file at `mem_path` (hugetlbfs or not).
    File,
}

impl BackendKind {
    pub fn qom_type(self) -> &'static str {
        match self {
            Self::Ram => "memory-backend-ram",
            Self::Memfd => "memory-backend-memfd",
            Self::File => "memory-backend-file",
        }
    }
}

/// One memory backend object, as QEMU documents its properties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryBackendConfig {
    pub id: String,
    pub kind: BackendKind,
    /// Bytes (or a size string such as `1G`); must equal `VmConfig::memory`.
    #[serde(with = "super::size::bytes")]
    pub size: u64,
    /// Populate every page before the guest runs.
    #[serde(default)]
    pub prealloc: bool,
    /// Threads that populate; None: one per host CPU available to us.
    #[serde(default)]
    pub prealloc_threads: Option<u32>,
    /// MAP_SHARED instead of MAP_PRIVATE (QEMU's default is off, except
    /// memfd where it is on).
    #[serde(default)]
    pub share: bool,
    /// memfd only: MFD_HUGETLB.
    #[serde(default)]
    pub hugetlb: bool,
    /// memfd with hugetlb: page size in bytes (2 MiB or 1 GiB); None: the
    /// kernel's default hugepage size.
    #[serde(default, with = "super::size::opt_bytes")]
    pub hugetlbsize: Option<u64>,
    /// file only: the file, or a directory in which a temporary file is made.
    #[serde(default)]
    pub mem_path: Option<PathBuf>,
    /// KSM (MADV_MERGEABLE); QEMU's default is on.
    #[serde(default = "yes")]
    pub merge: bool,
    /// Include guest RAM in core dumps; off sets MADV_DONTDUMP.
    #[serde(default = "yes")]
    pub dump: bool,
}

fn yes() -> bool {
    true
}

pub const HUGE_2M: u64 = 2 << 20;
pub const HUGE_1G: u64 = 1 << 30;

impl MemoryBackendConfig {
    /// What Casemate uses when no backend is named: QEMU's implicit RAM.
    pub fn implicit(size: u64) -> Self {
        Self {
            id: "ram".into(),
            kind: BackendKind::Ram,
            size,
            prealloc: false,
            prealloc_threads: None,
            share: false,
            hugetlb: false,
            hugetlbsize: None,
            mem_path: None,
            merge: true,
            dump: true,
        }
    }

    /// Problems in this backend given the VM's `-m` size.
    pub fn problems(&self, memory: u64) -> Vec<ConfigError> {
        let mut p = Vec::new();
        let id = self.id.clone();
        let bad = |why: String| ConfigError::Backend {
            id: id.clone(),
            why,
        };
        if self.id.is_empty() {
            p.push(bad("the backend needs an id".into()));
        }
        if self.size != memory {
            p.push(ConfigError::BackendSizeMismatch {
                id: self.id.clone(),
                backend: human_size(self.size),
                memory: human_size(memory),
            });
        }
        if self.prealloc_threads == Some(0) {
            p.push(bad("prealloc-threads must be at least 1".into()));
        }
        if self.hugetlb && self.kind != BackendKind::Memfd {
            p.push(bad(format!(
                "hugetlb=on is a memory-backend-memfd property ({} uses hugetlbfs through mem-path)",
                self.kind.qom_type()
            )));
        }
        if let Some(hs) = self.hugetlbsize {
            if !self.hugetlb {
                p.push(bad("hugetlbsize needs hugetlb=on".into()));
            } else if hs != HUGE_2M && hs != HUGE_1G {
                p.push(bad(format!(
                    "hugetlbsize={} is not a x86 hugepage size (2M or 1G)",
                    human_size(hs)
                )));
            }
        }
        if self.hugetlb {
            let page = self.hugetlbsize.unwrap_or(HUGE_2M);
            if !self.size.is_multiple_of(page) {
                p.push(bad(format!(
                    "size={} is not a multiple of the {} hugepage size",
                    human_size(self.size),
                    human_size(page)
                )));
            }
        }
        match (self.kind, &self.mem_path) {
            (BackendKind::File, None) => p.push(bad("memory-backend-file needs mem-path".into())),
            (BackendKind::Ram | BackendKind::Memfd, Some(_)) => p.push(bad(format!(
                "mem-path is a memory-backend-file property, not {}",
                self.kind.qom_type()
            ))),
            _ => {}
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd(size: u64) -> MemoryBackendConfig {
        MemoryBackendConfig {
            kind: BackendKind::Memfd,
            id: "m0".into(),
            ..MemoryBackendConfig::implicit(size)
        }
    }

    #[test]
    fn size_mismatch_names_both_values() {
        let p = memfd(2 << 30).problems(1 << 30);
        assert_eq!(p.len(), 1);
        let t = p[0].to_string();
        assert!(
            t.contains("2 GiB") && t.contains("1 GiB") && t.contains("m0"),
            "{t}"
        );
    }

    #[test]
    fn bad_combinations_are_reported_together() {
        let c = MemoryBackendConfig {
            kind: BackendKind::Ram,
            hugetlb: true,
            hugetlbsize: Some(4 << 20),
            prealloc_threads: Some(0),
            mem_path: Some("/x".into()),
            ..memfd(1 << 30)
        };
        let p = c.problems(1 << 30);
        assert_eq!(p.len(), 4, "{p:?}");
        let mut f = MemoryBackendConfig {
            kind: BackendKind::File,
            ..memfd(1 << 30)
        };
        assert_eq!(f.problems(1 << 30).len(), 1, "file needs mem-path");
        f.mem_path = Some("/dev/hugepages".into());
        assert!(f.problems(1 << 30).is_empty());
    }

    #[test]
    fn hugetlb_size_must_divide_ram() {
        let c = MemoryBackendConfig {
            hugetlb: true,
            hugetlbsize: Some(HUGE_1G),
            ..memfd(3 << 29)
        };
        let t = c.problems(3 << 29)[0].to_string();
        assert!(t.contains("1.5 GiB") && t.contains("1 GiB hugepage"), "{t}");
    }

    #[test]
    fn json_defaults_follow_qemu() {
        let c: MemoryBackendConfig =
            serde_json::from_str(r#"{"id":"m0","kind":"memfd","size":1024}"#).unwrap();
        assert!(c.merge && c.dump && !c.prealloc && !c.share);
    }
}
