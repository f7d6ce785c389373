//! A temporary image path for the crate's unit tests, removed when dropped;
//! unique per process and per call, so tests running in parallel never
//! share a file.

use std::path::PathBuf;

pub struct Tmp(pub PathBuf);

impl Tmp {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Tmp(std::env::temp_dir().join(format!(
            "casemate-disk-test-{tag}-{}-{n}.img",
            std::process::id()
        )))
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
