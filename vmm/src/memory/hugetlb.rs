//! Hugepage pool checks: before any hugetlb memory is mapped, read the pool
//! for the page size from sysfs and fail with the numbers when it cannot hold
//! guest RAM. Takes the sysfs root as a parameter so tests use a temp dir.
//! Never picks small pages instead: that is the caller's error to report.

use std::path::{Path, PathBuf};

use super::MemoryError;
use crate::config::validate::human_size;

/// The default sysfs mount point.
pub const SYSFS: &str = "/sys";

/// Free pages of one size, as the kernel reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub total: u64,
    /// Free and not promised to an existing mapping.
    pub available: u64,
}

fn pool_dir(sysfs: &Path, page: u64) -> PathBuf {
    sysfs
        .join("kernel/mm/hugepages")
        .join(format!("hugepages-{}kB", page >> 10))
}

fn read_count(dir: &Path, name: &str) -> Result<u64, MemoryError> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).map_err(|source| MemoryError::HugePoolRead {
        path: path.clone(),
        source,
    })?;
    text.trim().parse().map_err(|_| MemoryError::HugePoolRead {
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not a number"),
    })
}

/// The pool of `page`-byte hugepages under `sysfs`.
pub fn pool(sysfs: &Path, page: u64) -> Result<Pool, MemoryError> {
    let dir = pool_dir(sysfs, page);
    if !dir.is_dir() {
        let why = if sysfs.join("kernel/mm/hugepages").is_dir() {
            "this kernel offers no hugepages of that size"
        } else {
            "this kernel has no hugetlb support"
        };
        return Err(MemoryError::NoHugePages {
            page: human_size(page),
            path: dir,
            why,
        });
    }
    let free = read_count(&dir, "free_hugepages")?;
    // Reserved pages are free but promised to mappings made earlier.
    let resv = read_count(&dir, "resv_hugepages")?;
    Ok(Pool {
        total: read_count(&dir, "nr_hugepages")?,
        available: free.saturating_sub(resv),
    })
}

/// Ok when the pool can back `size` bytes of `page`-byte pages right now.
pub fn check_pool(sysfs: &Path, page: u64, size: u64) -> Result<(), MemoryError> {
    let p = pool(sysfs, page)?;
    let needed = size.div_ceil(page);
    if p.available < needed {
        return Err(MemoryError::HugePoolTooSmall {
            page: human_size(page),
            size: human_size(size),
            needed,
            free: p.available,
            total: p.total,
            path: pool_dir(sysfs, page).join("nr_hugepages"),
        });
    }
    Ok(())
}

/// The kernel's default hugepage size (`Hugepagesize:` in /proc/meminfo),
/// 2 MiB when it cannot be read.
pub fn default_page_size() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Hugepagesize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(2 << 20, |kib| kib << 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(name: &str, page_kb: u64, nr: u64, free: u64, resv: u64) -> PathBuf {
        let root = std::env::temp_dir().join(format!("cm-sysfs-{}-{name}", std::process::id()));
        let dir = root.join(format!("kernel/mm/hugepages/hugepages-{page_kb}kB"));
        std::fs::create_dir_all(&dir).unwrap();
        for (f, v) in [
            ("nr_hugepages", nr),
            ("free_hugepages", free),
            ("resv_hugepages", resv),
        ] {
            std::fs::write(dir.join(f), format!("{v}\n")).unwrap();
        }
        root
    }

    #[test]
    fn enough_pages_pass() {
        let root = fake_sysfs("ok", 2048, 600, 520, 8);
        check_pool(&root, 2 << 20, 1 << 30).unwrap();
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn too_small_pool_says_needed_and_free() {
        let root = fake_sysfs("small", 2048, 100, 90, 10);
        let t = check_pool(&root, 2 << 20, 1 << 30).unwrap_err().to_string();
        assert!(
            t.contains("needs 512") && t.contains("80 are free") && t.contains("2 MiB"),
            "{t}"
        );
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn missing_size_or_support_is_named() {
        let root = fake_sysfs("nosize", 2048, 0, 0, 0);
        let t = check_pool(&root, 1 << 30, 1 << 30).unwrap_err().to_string();
        assert!(
            t.contains("no hugepages of that size") && t.contains("1 GiB"),
            "{t}"
        );
        let none = std::env::temp_dir().join("cm-sysfs-does-not-exist");
        let t = check_pool(&none, 2 << 20, 1 << 30).unwrap_err().to_string();
        assert!(t.contains("no hugetlb support"), "{t}");
        let _ = std::fs::remove_dir_all(root);
    }
}
