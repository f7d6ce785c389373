//! Confinement: per-role seccomp filters and Landlock, on by default.
//! The probe runs its I/O, BAR move, reset, prealloc and power-off paths
//! under filters at the kill action (any syscall a role's list lacks would
//! kill the VM); every thread of a running VM is filtered; each role's
//! filter, installed by the real binary (`--seccomp-selftest`), kills on a
//! syscall outside it; the VMM cannot open /etc/passwd after set-up; and
//! (root, with a static casemate) the same holds under the jailer.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use casemate_tests::{
    bin, boot_probe, casemate, jail, kvm_or_skip, run_with_limit, Scratch, Watchdog,
};

const ROLES: &[&str] = &[
    "main",
    "spawner",
    "ctl",
    "vcpu",
    "worker-blk",
    "worker-rng",
    "worker-intx",
    "worker-net",
    "worker-gpu",
    "worker-vga",
    "worker-other",
    "io-helper",
    "prealloc",
    "collapse",
    "qmp",
    "vnc",
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
    let qmp = format!("unix:{},server=on,wait=off", s.path("qmp.sock").display());
    c.args(["-M", "q35", "-smp", "2", "-drive", &drive(&d, "")])
        .args(["-append", "probe=spin ms=3000", "-qmp", &qmp]);
    let seen = threads_of_running(c, |p| p);
    assert!(
        seen.iter().any(|t| t.0 == "cm-qmp"),
        "no cm-qmp thread in {seen:?}"
    );
    assert_all_filtered(&seen);

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
    open_path_after_setup("/etc/passwd", extra)
}

fn open_path_after_setup(path: &str, extra: &[&str]) -> String {
    let mut args = extra.to_vec();
    args.extend(["--selftest-open", path, "-append", "probe=hello"]);
    let (rep, out) = boot_probe(&args);
    rep.assert_ok();
    let err = String::from_utf8_lossy(&out.stderr);
    let prefix = format!("casemate: selftest: open {path} after set-up: ");
    err.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
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
    // The jailer execs the VMM from an fd, so /proc/self/exe is the host's
    // binary (casemate-jailer README, step 6): Landlock covers it too.
    let exe = "/proc/self/exe";
    assert_eq!(
        open_path_after_setup(exe, &[]),
        "Permission denied (os error 13)"
    );
    assert_eq!(open_path_after_setup(exe, &["-sandbox", "off"]), "opened");
}

/// What the test reads from `/proc` of a running jailed VMM.
struct Seen {
    vmm: u32,
    threads: Vec<(String, String, String, u64)>,
    status: Vec<(&'static str, String)>,
    /// (dev, inode) of `/proc/PID/root/` and of the jail root on the host.
    root_id: ((u64, u64), (u64, u64)),
    root_entries: Vec<String>,
    ns: Vec<(&'static str, String)>,
    pids_cgroup: Option<String>,
    /// `pids.max` and `cgroup.procs` of that cgroup while the VM runs.
    pids_max: String,
    procs: String,
}

/// Start the jailed VM (it runs `probe=spin`), wait for the probe's first
/// line on the console (the guest is running, every thread exists), read
/// `/proc` of the VMM, then let it finish and reap it.
fn observe_jailed(mut cmd: Command, jail_root: &Path) -> Seen {
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::fs::MetadataExt;
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let dog = Watchdog::arm(child.id(), Duration::from_secs(60));
    let mut err = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut console = String::new();
    while !console.contains("probe: spin") {
        if out.read_line(&mut console).unwrap() == 0 {
            break;
        }
    }
    assert!(console.contains("probe: spin"), "no spin line: {console}");
    let vmm = jail::first_child(child.id()).expect("the jailed VMM");
    let p = vmm.to_string();
    let root = std::fs::metadata(format!("/proc/{p}/root/")).unwrap();
    let mut root_entries: Vec<String> = std::fs::read_dir(format!("/proc/{p}/root/"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    root_entries.sort();
    let host_root = std::fs::metadata(jail_root).unwrap();
    let pids_cgroup = jail::cgroup_of(vmm, "pids");
    let cg_file = |f: &str| {
        pids_cgroup
            .as_ref()
            .and_then(|c| std::fs::read_to_string(format!("/sys/fs/cgroup/pids{c}/{f}")).ok())
            .unwrap_or_default()
    };
    let seen = Seen {
        vmm,
        threads: threads(vmm),
        status: [
            "CapEff:",
            "CapPrm:",
            "CapBnd:",
            "CapAmb:",
            "NoNewPrivs:",
            "Uid:",
            "Gid:",
            "Groups:",
        ]
        .into_iter()
        .map(|k| (k, jail::status_field(vmm, k)))
        .collect(),
        root_id: ((root.dev(), root.ino()), (host_root.dev(), host_root.ino())),
        root_entries,
        ns: ["mnt", "pid", "net"]
            .into_iter()
            .map(|n| (n, jail::ns(&p, n)))
            .collect(),
        pids_max: cg_file("pids.max"),
        procs: cg_file("cgroup.procs"),
        pids_cgroup,
    };
    out.read_to_string(&mut console).unwrap();
    let status = child.wait().unwrap();
    assert!(!dog.disarm());
    let err = err_reader.join().unwrap();
    assert!(
        status.success() && console.contains("probe: done status=ok"),
        "{status:?}\n{console}\n{err}"
    );
    seen
}

/// A network namespace for the jail (`ip netns`), deleted on drop.
struct NetNs(String);

impl NetNs {
    fn new(name: &str) -> Self {
        // A namespace of the same name left by a killed run.
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        let st = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {name}");
        Self(name.to_string())
    }

    fn path(&self) -> String {
        format!("/var/run/netns/{}", self.0)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn jailed_vm_is_confined_and_its_disk_reset_and_power_off_work() {
    if !kvm_or_skip("jailed_vm") {
        return;
    }
    let Some(vmm) = jail::jail_or_skip("jailed_vm") else {
        return;
    };
    let s = Scratch::new("sandbox-jail");
    let d = disk(&s);
    let base = s.path("jails");
    let netns = NetNs::new(&format!("cm-sb-{}", std::process::id()));
    let dr = drive(&d, "");
    let vm = |append: &'static str| -> Vec<String> {
        [
            "-M",
            "q35",
            "-smp",
            "2",
            "-drive",
            &dr,
            "-object",
            "rng-random,id=r,filename=/dev/urandom",
            "-device",
            "virtio-rng-pci,rng=r",
            "-append",
            append,
        ]
        .map(String::from)
        .to_vec()
    };
    let jailed = |id: &str, extra: &[&str], args: &[String]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        jail::jailer(&vmm, &base, id, extra, &args)
    };
    let np = netns.path();
    let extra = ["--new-pid-ns", "--netns", &np, "--cgroup", "pids.max=64"];
    let jail_root = jail::jail_dir(&base, &vmm, "sb-spin").join("root");
    let seen = observe_jailed(
        jailed("sb-spin", &extra, &vm("probe=spin ms=3000")),
        &jail_root,
    );

    assert_all_filtered(&seen.threads);
    let want = |k: &str| seen.status.iter().find(|x| x.0 == k).unwrap().1.clone();
    for k in ["CapEff:", "CapPrm:", "CapBnd:", "CapAmb:"] {
        assert_eq!(want(k), "0000000000000000", "{k}");
    }
    assert_eq!(want("NoNewPrivs:"), "1");
    assert_eq!(want("Uid:"), "65534\t65534\t65534\t65534");
    assert_eq!(want("Gid:"), "65534\t65534\t65534\t65534");
    assert_eq!(want("Groups:"), "", "supplementary groups");

    // The VMM's root is the jail's root directory (a bind mount of it:
    // same device and inode), holding only dev and proc: the VMM is exec'd
    // from an fd, not copied in.
    assert_eq!(
        seen.root_id.0, seen.root_id.1,
        "/proc/PID/root is not the jail"
    );
    assert!(
        !jail_root.exists(),
        "jail root left behind after the VM ended"
    );
    assert_eq!(seen.root_entries, ["dev", "proc"]);

    for (n, id) in &seen.ns {
        assert_ne!(id, &jail::ns("self", n), "{n} namespace is the test's own");
    }
    let net = seen.ns.iter().find(|x| x.0 == "net").unwrap();
    let want_net = std::fs::metadata(&np).unwrap();
    assert_eq!(
        net.1,
        format!("net:[{}]", std::os::unix::fs::MetadataExt::ino(&want_net)),
        "the VMM is in the --netns given"
    );

    let cg = seen.pids_cgroup.expect("the VMM in a pids cgroup");
    assert!(cg.ends_with("/casemate/sb-spin"), "{cg}");
    assert_eq!(seen.pids_max.trim(), "64", "pids.max of {cg}");
    assert!(
        seen.procs.lines().any(|l| l == seen.vmm.to_string()),
        "VMM {} not in {cg}/cgroup.procs: {}",
        seen.vmm,
        seen.procs
    );
    assert!(
        !std::path::Path::new(&format!("/sys/fs/cgroup/pids{cg}")).exists(),
        "VM cgroup {cg} left behind"
    );

    for append in ["probe=blk", "probe=rng", "probe=blk-reboot"] {
        let out = run_with_limit(
            jailed("sb-run", &["--new-pid-ns"], &vm(append)),
            Duration::from_secs(60),
        );
        let console = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && console.contains("probe: done status=ok"),
            "{append}: {:?}\n{console}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        !jail::jail_dir(&base, &vmm, "sb-run").exists(),
        "jail left behind"
    );

    // A jailed -snapshot (the disk arrives as an fd; its overlay is a
    // memfd) is tested in jail_handover.rs.
}
