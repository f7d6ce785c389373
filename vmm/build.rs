//! Builds the probe guest (tools/probe) with its own script and leaves the
//! ELF in OUT_DIR for `include_bytes!`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let probe_dir = manifest.join("../tools/probe");
    let out =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("probe.elf");
    println!("cargo:rerun-if-changed={}", probe_dir.display());
    println!("cargo:rerun-if-env-changed=CASEMATE_PROBE_ELF");
    // A prebuilt probe (e.g. one under investigation) replaces the build.
    if let Ok(prebuilt) = std::env::var("CASEMATE_PROBE_ELF") {
        std::fs::copy(&prebuilt, &out)
            .unwrap_or_else(|e| panic!("copying CASEMATE_PROBE_ELF={prebuilt}: {e}"));
        return;
    }
    let script = probe_dir.join("build.sh");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .env("RUSTC", rustc)
        .status()
        .expect("run tools/probe/build.sh");
    assert!(
        status.success(),
        "building the probe guest failed: {status}"
    );
}
