//! Handing a qcow2 drive's backing chain over with it: each backing file
//! the headers name is opened by the jailer (read-only) and passed as one
//! more `-add-fd`, and the drive option gains QEMU's
//! `backing.file.filename=/dev/fdset/N[,backing.driver=FMT]` (nested
//! `backing.backing.…` per level), which the VMM opens in place of the
//! names in the headers: a jailed VMM can open no host path. Pure: the
//! chain is read by the function passed in (`chain::backing_chain`).

use std::path::Path;

use super::FIRST_HANDED_FD;
use super::{opt_value, seg_kv, split_opts, Access, HandedFile, JailPlan, PlanError};
use crate::chain::Backing;

impl JailPlan {
    /// Adds the backing chain of every handed-over drive given as
    /// `format=qcow2` with no `backing.` keys of its own.
    pub fn hand_backing_chains(
        &mut self,
        chain_of: impl Fn(&Path) -> Result<Vec<Backing>, String>,
    ) -> Result<(), PlanError> {
        let drives: Vec<(std::path::PathBuf, u32)> = self
            .files
            .iter()
            .filter(|f| f.option == "drive")
            .map(|f| (f.host.clone(), f.set))
            .collect();
        for (host, set) in drives {
            let fdset = format!("/dev/fdset/{set}");
            let Some(j) = (1..self.argv.len()).find(|&j| {
                matches!(self.argv[j - 1].as_str(), "-drive" | "--drive")
                    && opt_value(&split_opts(&self.argv[j]), "file").as_deref()
                        == Some(fdset.as_str())
            }) else {
                continue;
            };
            let segs = split_opts(&self.argv[j]);
            let own_chain = segs
                .iter()
                .any(|s| seg_kv(s).0.is_some_and(|k| k.starts_with("backing.")));
            // Only a drive said to be qcow2: probing a raw image whose
            // guest-written data looks like a qcow2 header would make the
            // jailer, as root, open whatever host file it names.
            if own_chain || opt_value(&segs, "format").as_deref() != Some("qcow2") {
                continue;
            }
            let chain = chain_of(&host).map_err(|why| PlanError::BackingChain {
                image: host.clone(),
                why,
            })?;
            let mut value = self.argv[j].clone();
            let mut add_fds = Vec::new();
            for (level, b) in chain.into_iter().enumerate() {
                let n = self.files.len() + self.taps.len();
                let prefix = "backing.".repeat(level + 1);
                value.push_str(&format!(",{prefix}file.filename=/dev/fdset/{n}"));
                if let Some(f) = b.format {
                    value.push_str(&format!(",{prefix}driver={f}"));
                }
                let fd = FIRST_HANDED_FD + n as i32;
                add_fds.push("-add-fd".to_string());
                add_fds.push(format!("fd={fd},set={n},opaque=backing"));
                self.files.push(HandedFile {
                    host: b.path,
                    access: Access::ReadOnly,
                    fd,
                    set: n as u32,
                    option: "backing",
                });
            }
            self.argv[j] = value;
            // After argv[0], with the other -add-fd options.
            self.argv.splice(1..1, add_fds);
        }
        Ok(())
    }
}
