//! Typing into the console: tests/qmp/console_check.py runs casemate on a
//! pty with the probe's echo mode, types lines (one longer than COM1's
//! FIFO), checks the terminal is raw while the VM runs and restored after
//! `Ctrl-A x`, a guest power-off and SIGTERM, and uses `Ctrl-A h` and
//! `Ctrl-A c` (the monitor on the terminal and back).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use casemate_tests::{bin, have, in_ci, kvm_or_skip, run_with_limit};

#[test]
fn keys_reach_the_guest_and_the_terminal_is_restored() {
    let test = "keys_reach_the_guest_and_the_terminal_is_restored";
    if !kvm_or_skip(test) {
        return;
    }
    if !have("python3") {
        assert!(!in_ci(), "{test}: python3 is missing and CI=true");
        println!("SKIP {test}: python3 is not installed");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("qmp/console_check.py");
    let mut c = Command::new("python3");
    c.arg(script).arg(bin("casemate"));
    let out = run_with_limit(c, Duration::from_secs(240));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "console_check.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in ["ctrl-a-x", "monitor-switch", "sigterm"] {
        assert!(stdout.contains(&format!("ok {s}")), "{s}: {stdout}");
    }
}
