//! The scratch directory (jail base, guest ELF) and the tiny guest, built
//! from benches/tiny with binutils as the boot bench does.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// A directory under /tmp removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new() -> Result<Self> {
        let p = std::env::temp_dir().join(format!("casemate-jailbench-{}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `--chroot-base-dir` for the jails.
    pub fn base(&self) -> PathBuf {
        self.0.join("jails")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Assembles and links benches/tiny into the scratch dir.
pub fn tiny(s: &Scratch) -> Result<PathBuf> {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../../benches/tiny");
    let obj = s.path().join("tiny.o");
    let elf = s.path().join("tiny.elf");
    let run = |c: &mut Command| -> Result<()> {
        let st = c.status().with_context(|| format!("running {c:?}"))?;
        if !st.success() {
            bail!("{c:?} failed: {st}");
        }
        Ok(())
    };
    run(Command::new("as")
        .args(["--32", "-o"])
        .arg(&obj)
        .arg(format!("{src}/tiny.S")))?;
    run(Command::new("ld")
        .args(["-m", "elf_i386", "-T", &format!("{src}/link.ld"), "-o"])
        .arg(&elf)
        .arg(&obj))?;
    Ok(elf)
}
