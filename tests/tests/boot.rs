//! Boot the probe guest on /dev/kvm and check what it reports: CPUs, memory,
//! command line, boot entries, exit round trips, and how VMs end.

use casemate_tests::elf::{
    tiny_elf32_pvh, tiny_elf64, without_pvh_note, PRINT_X_THEN_UD2, PVH32_PRINT_P_POWER_OFF,
    RESET_THEN_UD2, UD2,
};
use casemate_tests::{boot_probe, casemate, kvm_or_skip, Scratch};

#[test]
fn one_and_two_vcpus_all_report() {
    if !kvm_or_skip("one_and_two_vcpus_all_report") {
        return;
    }
    for (n, ids) in [(1, "0"), (2, "0,1")] {
        let smp = n.to_string();
        let (r, _) = boot_probe(&["-smp", &smp, "-append", "probe=hello"]);
        r.assert_ok();
        assert_eq!(r.want("cpus"), smp, "{}", r.raw);
        assert_eq!(r.want("apic_ids"), ids, "{}", r.raw);
    }
}

#[test]
fn topology_gives_packed_apic_ids() {
    if !kvm_or_skip("topology_gives_packed_apic_ids") {
        return;
    }
    let (r, _) = boot_probe(&[
        "-smp",
        "cpus=2,sockets=2,cores=1,threads=1",
        "-append",
        "probe=hello",
    ]);
    r.assert_ok();
    assert_eq!(r.want("cpus"), "2");
    assert_eq!(r.want("apic_ids"), "0,1");
}

#[test]
fn memory_sizes_are_reported_exactly() {
    if !kvm_or_skip("memory_sizes_are_reported_exactly") {
        return;
    }
    for (arg, mib) in [("64M", 64u64), ("1G", 1024), ("5G", 5 * 1024)] {
        let (r, _) = boot_probe(&["-m", arg, "-append", "probe=hello"]);
        r.assert_ok();
        assert_eq!(r.want("mem_mib"), mib.to_string(), "-m {arg}:\n{}", r.raw);
    }
}

#[test]
fn command_line_round_trips() {
    if !kvm_or_skip("command_line_round_trips") {
        return;
    }
    let line = r#"probe=hello alpha=1 beta="two words" gamma=\x"#;
    let (r, _) = boot_probe(&["-append", line]);
    r.assert_ok();
    assert_eq!(r.want("cmdline"), line);
}

#[test]
fn both_boot_entries_work() {
    if !kvm_or_skip("both_boot_entries_work") {
        return;
    }
    let s = Scratch::new("entries");
    let probe = std::fs::read(s.probe()).unwrap();
    let (r, _) = boot_probe(&["-append", "probe=hello"]);
    r.assert_ok();
    assert_eq!(r.want("entry"), "pvh");
    let linux = s.file(
        "linux64.elf",
        &without_pvh_note(&probe).expect("probe carries a PVH note"),
    );
    let (r, _) = boot_probe(&["-kernel", &linux, "-append", "probe=hello"]);
    r.assert_ok();
    assert_eq!(r.want("entry"), "linux64");
}

#[test]
fn exit_round_trips_are_measured() {
    if !kvm_or_skip("exit_round_trips_are_measured") {
        return;
    }
    let (r, _) = boot_probe(&["-append", "probe=exits n=200"]);
    r.assert_ok();
    for k in ["pio_ns", "mmio_ns"] {
        let ns: f64 = r
            .want(k)
            .parse()
            .unwrap_or_else(|_| panic!("{k} not a number:\n{}", r.raw));
        // A round trip that never left the guest would take nanoseconds;
        // one through KVM and back costs at least hundreds.
        assert!(ns > 300.0 && ns < 10_000_000.0, "{k}={ns}");
    }
}

#[test]
fn serial_to_file_and_nothing_on_stdout() {
    if !kvm_or_skip("serial_to_file_and_nothing_on_stdout") {
        return;
    }
    let s = Scratch::new("serialfile");
    let log = s.path("console.txt");
    let arg = format!("file:{}", log.display());
    let (r, out) = boot_probe(&["-serial", &arg, "-append", "probe=hello"]);
    assert!(r.lines.is_empty(), "stdout should be empty: {}", r.raw);
    assert!(
        out.stderr.is_empty(),
        "clean run prints nothing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    casemate_tests::Report::parse(&text).assert_ok();
}

#[test]
fn triple_fault_exits_nonzero_with_registers() {
    if !kvm_or_skip("triple_fault_exits_nonzero_with_registers") {
        return;
    }
    let s = Scratch::new("triple");
    let k = s.file("ud2.elf", &tiny_elf64(PRINT_X_THEN_UD2));
    let out = casemate(&["-kernel", &k]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "X", "the guest ran");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("triple fault on vCPU 0") && err.contains("RIP=0000000000100007"),
        "{err}"
    );
    let k = s.file("ud2only.elf", &tiny_elf64(UD2));
    assert_eq!(casemate(&["-kernel", &k]).status.code(), Some(2));
}

#[test]
fn i8042_reset_with_no_reboot_exits_zero() {
    if !kvm_or_skip("i8042_reset_with_no_reboot_exits_zero") {
        return;
    }
    let s = Scratch::new("reset");
    let k = s.file("reset.elf", &tiny_elf64(RESET_THEN_UD2));
    let out = casemate(&["-kernel", &k, "-no-reboot"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn thirty_two_bit_pvh_elf_boots() {
    if !kvm_or_skip("thirty_two_bit_pvh_elf_boots") {
        return;
    }
    let s = Scratch::new("elf32");
    let k = s.file("pvh32.elf", &tiny_elf32_pvh(PVH32_PRINT_P_POWER_OFF));
    let out = casemate(&["-kernel", &k]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "P");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn reset_without_no_reboot_reboots() {
    if !kvm_or_skip("reset_without_no_reboot_reboots") {
        return;
    }
    use std::io::Read;
    use std::process::{Command, Stdio};
    let s = Scratch::new("reboot");
    // Prints X, then pulses the i8042 reset line: every boot adds one X.
    let code = [&PRINT_X_THEN_UD2[..7], RESET_THEN_UD2].concat();
    let k = s.file("reboot.elf", &tiny_elf64(&code));
    let log = s.path("console.txt");
    let mut child = Command::new(casemate_tests::bin("casemate"))
        .args(["-kernel", &k, "-serial", "stdio"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dog = casemate_tests::Watchdog::arm(child.id(), std::time::Duration::from_secs(60));
    let mut out = child.stdout.take().unwrap();
    let mut seen = [0u8; 3];
    // Three boots' worth of output proves the VM came back twice.
    let read = out.read_exact(&mut seen);
    child.kill().unwrap();
    assert!(!dog.disarm(), "VMM hung before its third boot");
    child.wait().unwrap();
    read.expect("VM stopped before its third boot");
    assert_eq!(&seen, b"XXX");
    // With a file console, reboots append instead of truncating: wait for
    // the VMM's second "rebooting" log line (two resets, so two X written).
    use std::io::BufRead;
    let arg = format!("file:{}", log.display());
    let mut child = Command::new(casemate_tests::bin("casemate"))
        .args(["-kernel", &k, "-serial", &arg, "--log", "info"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let dog = casemate_tests::Watchdog::arm(child.id(), std::time::Duration::from_secs(60));
    let err = std::io::BufReader::new(child.stderr.take().unwrap());
    let reboots = err
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.contains("rebooting"))
        .take(2)
        .count();
    child.kill().unwrap();
    assert!(!dog.disarm(), "VMM hung before its second reboot");
    child.wait().unwrap();
    assert_eq!(reboots, 2);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.starts_with("XX"),
        "file console lost output across reboots: {text:?}"
    );
}
