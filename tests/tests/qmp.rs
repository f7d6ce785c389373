//! QMP against a real client: tests/qmp/qmp_check.py drives the VMM with
//! QEMU's own client library (PyPI `qemu.qmp`) and with raw JSON over the
//! socket: negotiation, every command's shape, stop/cont pausing a
//! counting probe, `-S` + `cont`, `quit`, `system_powerdown` powering the
//! probe off with POWERDOWN then SHUTDOWN, and hostile clients (1 MiB
//! values and lines, invalid JSON, commands before negotiation, 100
//! clients vanishing) with the fd count checked, HMP on a socket, and
//! `quit` right after a completed guest write leaving a consistent qcow2
//! that holds it. The same script runs
//! against QEMU 7.2 unchanged.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use casemate_tests::{bin, have, in_ci, kvm_or_skip, qemu_or_skip, run_with_limit, Scratch};

const LIMIT: Duration = Duration::from_secs(300);

/// False (after saying why) without python3 and qemu.qmp; fails in CI,
/// where scripts/setup.sh installs them.
fn qmp_client_or_skip(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import qemu.qmp"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !in_ci(),
            "{test}: python3 with qemu.qmp is missing and CI=true: scripts/setup.sh installs it (pip install qemu.qmp)"
        );
        println!("SKIP {test}: python3 -c 'import qemu.qmp' fails (pip install qemu.qmp)");
        return false;
    }
    // quit-flush checks the image with qemu-img.
    if !have("qemu-img") {
        assert!(!in_ci(), "{test}: qemu-img is missing and CI=true");
        println!("SKIP {test}: qemu-img is not installed");
        return false;
    }
    true
}

fn check(kind: &str, vmm: &str, scratch: &Scratch) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("qmp/qmp_check.py");
    let probe = scratch.probe();
    let mut c = Command::new("python3");
    c.arg(script).args([kind, vmm, &probe]).arg(&scratch.0);
    let out = run_with_limit(c, LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "qmp_check.py {kind} failed:\n{stdout}\n{stderr}"
    );
    for s in [
        "commands",
        "quit",
        "hostile",
        "powerdown q35",
        "powerdown microvm",
        "prelaunch",
        "hmp",
        "quit-flush",
        "reset",
        "endpoints",
    ] {
        assert!(
            stdout.contains(&format!("ok {s} [{kind}]")),
            "scenario {s} did not pass:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn qmp_client_drives_casemate() {
    let test = "qmp_client_drives_casemate";
    if !kvm_or_skip(test) || !qmp_client_or_skip(test) {
        return;
    }
    let scratch = Scratch::new("qmp-casemate");
    check("casemate", &bin("casemate").to_string_lossy(), &scratch);
}

#[test]
fn same_qmp_checks_pass_on_qemu() {
    let test = "same_qmp_checks_pass_on_qemu";
    if !kvm_or_skip(test) || !qmp_client_or_skip(test) || !qemu_or_skip(test) {
        return;
    }
    let scratch = Scratch::new("qmp-qemu");
    check("qemu", "qemu-system-x86_64", &scratch);
}
