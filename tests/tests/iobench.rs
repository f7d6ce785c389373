//! `casemate-iobench` end to end on its one Casemate-only path
//! (vfio-user, no QEMU) with a tiny workload: every workload row has
//! figures from a VM that ran, the kernel-VFIO row says why it is
//! absent, and the plot is written.

use std::process::Command;

use casemate_tests::{bin, kvm_or_skip, Scratch};

#[test]
fn iobench_measures_the_vfio_user_path_and_plots_it() {
    if !kvm_or_skip("casemate-iobench smoke run") {
        return;
    }
    let s = Scratch::new("iobench");
    let prefix = s.path("plot");
    let out = Command::new(bin("casemate-iobench"))
        .arg("--casemate")
        .arg(bin("casemate"))
        .args([
            "--paths",
            "vfio-user",
            "--runs",
            "1",
            "--ms",
            "100",
            "--plot",
        ])
        .arg(&prefix)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{table}\n{log}");
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|l| l.starts_with("| vfio-user |"))
        .map(|l| l.split('|').map(str::trim).collect())
        .collect();
    assert_eq!(rows.len(), 5, "{table}");
    for r in &rows {
        // | path | workload | Casemate IOPS | QEMU IOPS | ... | exits/IO | note |
        let iops: f64 = r[3].parse().unwrap_or_else(|_| panic!("{r:?}"));
        assert!(iops > 0.0, "no I/O in {r:?}");
        assert_eq!(r[4], "-", "QEMU has no vfio-user: {r:?}");
        assert!(r[12].parse::<f64>().is_ok(), "exits per I/O: {r:?}");
    }
    assert!(
        table.contains("| kernel-vfio |") && table.contains("absent:"),
        "{table}"
    );
    assert!(
        log.contains("iobench: vfio-user randread 4K qd32"),
        "progress: {log}"
    );
    let png = std::fs::read(prefix.with_extension("png")).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    assert!(
        std::fs::metadata(prefix.with_extension("svg"))
            .unwrap()
            .len()
            > 1000
    );
}
