//! The reference peer: the same probe ELF must boot under Debian's QEMU 7.2
//! (`-M microvm`, isa-debug-exit to end it) and report `done status=ok`.

use std::time::Duration;

use casemate_tests::{
    have, in_ci, kvm_or_skip, qemu_microvm_probe, run_with_limit, Report, Scratch,
};

#[test]
fn probe_boots_under_qemu_microvm() {
    if !kvm_or_skip("probe_boots_under_qemu_microvm") {
        return;
    }
    if !have("qemu-system-x86_64") {
        assert!(
            !in_ci(),
            "qemu-system-x86_64 missing in CI: the test command installs it"
        );
        println!("SKIP probe_boots_under_qemu_microvm: qemu-system-x86_64 is not installed");
        return;
    }
    let s = Scratch::new("qemu");
    let probe = s.probe();
    for smp in ["1", "2"] {
        let c = qemu_microvm_probe(&probe, smp, "probe=hello");
        let out = run_with_limit(c, Duration::from_secs(120));
        let console = String::from_utf8_lossy(&out.stdout);
        let r = Report::parse(&console);
        r.assert_ok();
        assert_eq!(r.want("cpus"), smp, "{console}");
        // isa-debug-exit: (0 << 1) | 1 for a passing probe.
        assert_eq!(
            out.status.code(),
            Some(1),
            "{console}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
