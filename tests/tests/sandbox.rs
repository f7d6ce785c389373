//! Confinement: per-role seccomp filters and Landlock, on by default.
//! The probe runs its I/O, BAR move, reset, prealloc and power-off paths
//! under filters at the kill action (any syscall a role's list lacks would
//! kill the VM); every thread of a running VM is filtered; each role's
//! filter, installed by the real binary (`--seccomp-selftest`), kills on a
//! syscall outside it; the VMM cannot open /etc/passwd after set-up; and
//! (root, with a static casemate) the same holds under the jailer.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use casemate_tests::{bin, boot_probe, casemate, kvm_or_skip, run_with_limit, Scratch, Watchdog};

const ROLES: &[&str] = &[
    "main",
    "spawner",
    "ctl",
    "vcpu",
    "worker-blk",
    "worker-rng",
    "worker-intx",
    "worker-net",
    "worker-other",
    "io-helper",
    "prealloc",
    "collapse",
];

/// 128 + SIGSYS: the trap handler's exit status.
const TRAP_EXIT: i32 = 159;

const PF_USER_WORKER: u64 = 0x4000;

fn disk(s: &Scratch) -> String {
    s.file("d.raw", &vec![0u8; 16 << 20])
}

fn drive(d: &str, extra: &str) -> String {
    format!("file={d},format=raw,if=virtio{extra}")
}

#[test]
fn filters_at_kill_hold_through_io_bar_move_reset_prealloc_and_power_off() {
    if !kvm_or_skip("filters_at_kill") {
        return;
    }
    let s = Scratch::new("sandbox-kill");
    let d = disk(&s);
    let rng = ["-object", "rng-random,id=r,filename=/dev/urandom"];
    let plain = drive(&d, "");
    let direct = drive(&d, ",cache=none");
    let runs: Vec<Vec<&str>> = vec![
        vec![
            "-M",
            "microvm",
            "-drive",
            &plain,
            rng[0],
            rng[1],
            "-device",
            "virtio-rng-device,rng=r",
            "-append",
            "probe=blk",
        ],
        vec![
            "-M",
            "q35",
            "-smp",
            "2",
            "-drive",
            &plain,
            rng[0],
            rng[1],
            "-device",
            "virtio-rng-pci,rng=r,max-bytes=64,period=100",
            "-append",
            "probe=rng",
        ],
        vec![
            "-M",
            "pc",
            "-object",
            "rng-builtin,id=r",
            "-device",
            "virtio-rng-pci,rng=r",
            "-append",
            "probe=rng",
        ],
        vec!["-M", "q35", "-drive", &plain, "-append", "probe=bar-move"],
        vec![
            "-M",
            "q35",
            "-snapshot",
            "-drive",
            &plain,
            "-append",
            "probe=blk-reboot",
        ],
        vec![
            "-M",
            "microvm",
            "-snapshot",
            "-drive",
            &plain,
            "-append",
            "probe=blk-reboot",
        ],
        vec![
            "-M",
            "microvm",
            "-drive",
            &direct,
            "-append",
            "probe=blk-bench",
        ],
        vec![
            "-object",
            "memory-backend-ram,id=m,size=1G,prealloc=on",
            "-m",
            "1G",
            "-M",
            "microvm,memory-backend=m",
            "-append",
            "probe=hello",
        ],
    ];
    for r in runs {
        let mut args = vec!["--seccomp", "kill"];
        args.extend(r);
        let (rep, out) = boot_probe(&args);
        rep.assert_ok();
        assert!(
            out.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `/proc/PID/task/*`: (comm, Seccomp, NoNewPrivs, flags) per thread.
fn threads(pid: u32) -> Vec<(String, String, String, u64)> {
    let mut v = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let (Ok(status), Ok(stat)) = (
            std::fs::read_to_string(t.join("status")),
            std::fs::read_to_string(t.join("stat")),
        ) else {
            continue; // the thread ended meanwhile
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        // Field 9 of stat, counted after the ")" that ends comm.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let flags = after.split(' ').nth(6).unwrap().parse().unwrap();
        v.push((
            field("Name:"),
            field("Seccomp:"),
            field("NoNewPrivs:"),
            flags,
        ));
    }
    v
}

/// Start `cmd` (a VM spinning for a few seconds), wait, look at its threads
/// (`pid_of` maps the child's pid to the VMM's), then reap it.
fn threads_of_running(
    mut cmd: Command,
    pid_of: impl Fn(u32) -> u32,
) -> Vec<(String, String, String, u64)> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let dog = Watchdog::arm(child.id(), Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(1500));
    let seen = threads(pid_of(child.id()));
    let out = child.wait_with_output().unwrap();
    assert!(!dog.disarm());
    assert!(
        out.status.success(),
        "{:?}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    seen
}

fn assert_all_filtered(seen: &[(String, String, String, u64)]) {
    let names: Vec<&str> = seen.iter().map(|t| t.0.as_str()).collect();
    for want in ["cm-spawn", "cm-ctl", "cm-vcpu0", "cm-vcpu1"] {
        assert!(names.contains(&want), "no {want} thread in {names:?}");
    }
    for (name, seccomp, nnp, flags) in seen {
        if flags & PF_USER_WORKER != 0 {
            continue; // kernel-owned (kvm-nx-lpage-recovery): cannot carry a filter
        }
        assert_eq!(seccomp, "2", "thread {name}: Seccomp: {seccomp}");
        assert_eq!(nnp, "1", "thread {name}: NoNewPrivs: {nnp}");
    }
}

#[test]
fn every_thread_of_a_running_vm_is_filtered() {
    if !kvm_or_skip("every_thread_filtered") {
        return;
    }
    let s = Scratch::new("sandbox-threads");
    let d = disk(&s);
    let mut c = Command::new(bin("casemate"));
    c.args(["-M", "q35", "-smp", "2", "-drive", &drive(&d, "")])
        .args(["-append", "probe=spin ms=3000"]);
    assert_all_filtered(&threads_of_running(c, |p| p));

    // The check can see an unfiltered thread: -sandbox off shows Seccomp: 0.
    let mut c = Command::new(bin("casemate"));
    c.args([
        "-sandbox",
        "off",
        "-smp",
        "2",
        "-append",
        "probe=spin ms=2500",
    ]);
    let seen = threads_of_running(c, |p| p);
    assert!(
        seen.iter().any(|t| t.0 == "cm-ctl" && t.1 == "0"),
        "{seen:?}"
    );
}

#[test]
fn each_role_dies_of_sigsys_outside_its_list() {
    for role in ROLES {
        let out = casemate(&["--seccomp-selftest", role]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(TRAP_EXIT), "{role}: {err}");
        assert!(
            err.contains(&format!("role {role} confined")),
            "{role}: {err}"
        );
        let line = err
            .lines()
            .find(|l| l.starts_with("casemate: seccomp: "))
            .unwrap_or_else(|| panic!("{role}: no seccomp line in {err}"));
        assert!(
            line.contains(&format!("thread role {role} made forbidden syscall ")),
            "{line}"
        );
        assert!(!err.contains("FAILED"), "{err}");

        let out = casemate(&["--seccomp-selftest", role, "--seccomp", "kill"]);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGSYS),
            "{role}: {:?}",
            out.status
        );
    }
    let out = casemate(&["--seccomp-selftest", "nobody"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown role 'nobody'"));
}

fn open_after_setup(extra: &[&str]) -> String {
    let mut args = extra.to_vec();
    args.extend(["--selftest-open", "/etc/passwd", "-append", "probe=hello"]);
    let (rep, out) = boot_probe(&args);
    rep.assert_ok();
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| l.strip_prefix("casemate: selftest: open /etc/passwd after set-up: "))
        .unwrap_or_else(|| panic!("{args:?}: no selftest line in {err}"))
        .to_string()
}

#[test]
fn landlock_denies_host_files_after_set_up() {
    if !kvm_or_skip("landlock_denies") {
        return;
    }
    assert!(Path::new("/etc/passwd").exists());
    assert_eq!(open_after_setup(&[]), "Permission denied (os error 13)");
    assert_eq!(
        open_after_setup(&["-sandbox", "on,landlock=required"]),
        "Permission denied (os error 13)"
    );
    assert_eq!(open_after_setup(&["-sandbox", "off"]), "opened");
    assert_eq!(open_after_setup(&["-sandbox", "on,landlock=off"]), "opened");
}

/// A statically linked casemate (the jail has no /lib), if one was built:
/// `RUSTFLAGS="-C target-feature=+crt-static" cargo build -p casemate-vmm
/// --bin casemate --target x86_64-unknown-linux-gnu`.
fn static_casemate() -> Option<PathBuf> {
    let t = casemate_tests::target_dir();
    let profile = t.file_name()?.to_owned();
    let p = t
        .parent()?
        .join("x86_64-unknown-linux-gnu")
        .join(profile)
        .join("casemate");
    p.exists().then_some(p)
}

#[test]
fn jailed_vm_is_confined_and_its_disk_reset_and_power_off_work() {
    if !kvm_or_skip("jailed_vm") {
        return;
    }
    // SAFETY: geteuid only reads the caller's effective uid.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIP jailed_vm: the jailer needs root");
        return;
    }
    let Some(vmm) = static_casemate() else {
        println!(
            "SKIP jailed_vm: no static casemate; build one with RUSTFLAGS=\"-C \
             target-feature=+crt-static\" cargo build -p casemate-vmm --bin casemate \
             --target x86_64-unknown-linux-gnu"
        );
        return;
    };
    let s = Scratch::new("sandbox-jail");
    let d = disk(&s);
    let base = s.path("jails");
    let jail = |id: &str, append: &str| {
        let mut c = Command::new(bin("casemate-jailer"));
        c.args(["--id", id, "--exec-file", vmm.to_str().unwrap()])
            .args(["--uid", "65534", "--gid", "65534", "--new-pid-ns"])
            .args(["--chroot-base-dir", base.to_str().unwrap(), "--"])
            .args(["-M", "q35", "-smp", "2", "-drive", &drive(&d, "")])
            .args(["-object", "rng-random,id=r,filename=/dev/urandom"])
            .args(["-device", "virtio-rng-pci,rng=r", "-append", append]);
        c
    };
    // The VMM is the supervisor's only child.
    let vmm_pid = |sup: u32| {
        let kids = std::fs::read_to_string(format!("/proc/{sup}/task/{sup}/children")).unwrap();
        kids.split_whitespace()
            .next()
            .expect("the jailed VMM")
            .parse()
            .unwrap()
    };
    let seen = threads_of_running(jail("sb-spin", "probe=spin ms=3000"), vmm_pid);
    assert_all_filtered(&seen);

    for append in ["probe=blk", "probe=rng", "probe=blk-reboot"] {
        let out = run_with_limit(jail("sb-run", append), Duration::from_secs(60));
        let console = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && console.contains("probe: done status=ok"),
            "{append}: {:?}\n{console}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        !base.join("casemate").join("sb-run").exists(),
        "jail left behind"
    );
}
