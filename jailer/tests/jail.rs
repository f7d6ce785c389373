//! Integration test of `casemate-jailer` as a whole: it jails a static
//! stand-in for `casemate` (tests/standin/standin.rs, compiled here with
//! rustc and `+crt-static`, because the jail has no /lib) and asserts what
//! the stand-in reports from inside, then that cleanup leaves nothing.
//!
//! Needs root (cgroups, namespaces, mknod). Without root every test prints
//! a SKIP line and returns; with root (as under CI=true here) all run.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

const JAILER: &str = env!("CARGO_BIN_EXE_casemate-jailer");
const STANDIN_EXIT: i32 = 7;
/// nobody:nogroup.
const VM_UID: u32 = 65534;

fn skip_unless_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Straight to stderr, past libtest's capture, so the skip is seen.
        let _ = writeln!(
            std::io::stderr(),
            "SKIP {test}: needs root (cgroups, namespaces, mknod)"
        );
        return true;
    }
    false
}

/// Builds the static stand-in once per test binary, under Cargo's
/// per-target temp dir (readable by every user: the refusal test runs the
/// jailer unprivileged).
fn standin() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("jailer-standin");
        fs::create_dir_all(&dir).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/standin/standin.rs");
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let tmp = dir.join(format!("standin.{}", std::process::id()));
        let out = Command::new(rustc)
            .args(["-O", "-C", "target-feature=+crt-static", "-o"])
            .arg(&tmp)
            .arg(&src)
            .output()
            .expect("run rustc to build the stand-in");
        assert!(
            out.status.success(),
            "building the static stand-in failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = dir.join("standin");
        fs::rename(&tmp, &path).unwrap();
        path
    })
}

/// A base dir for jails plus host files to hand over.
struct Fixture {
    tmp: tempfile::TempDir,
    id: String,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let tmp = tempfile::Builder::new()
            .prefix("jailer-it")
            .tempdir()
            .unwrap();
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(tmp.path().join("host")).unwrap();
        fs::write(tmp.path().join("host/vmlinux"), "KERNEL-BYTES\n").unwrap();
        fs::write(tmp.path().join("host/disk,1.img"), "DISK-BYTES\n").unwrap();
        Fixture {
            id: format!("it-{tag}-{}", std::process::id()),
            tmp,
        }
    }
    fn base(&self) -> PathBuf {
        self.tmp.path().join("jails")
    }
    fn jail_dir(&self) -> PathBuf {
        self.base().join("standin").join(&self.id)
    }
    fn host(&self, f: &str) -> String {
        self.tmp.path().join("host").join(f).display().to_string()
    }
    /// The jailer's common arguments.
    fn args(&self) -> Vec<String> {
        [
            "--id",
            &self.id,
            "--exec-file",
            standin().to_str().unwrap(),
            "--chroot-base-dir",
            self.base().to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
    /// The casemate arguments: a kernel and a disk whose name needs `,,`.
    fn casemate_args(&self) -> Vec<String> {
        vec![
            "-M".into(),
            "microvm".into(),
            "-kernel".into(),
            self.host("vmlinux"),
            "-drive".into(),
            format!(
                "file={},if=virtio,format=raw",
                self.host("disk,1.img").replace(',', ",,")
            ),
            "-append".into(),
            "console=ttyS0 -kernel /etc/passwd".into(),
        ]
    }
    fn cleanup(&self) -> Output {
        let mut a = vec!["--cleanup".to_string()];
        a.extend(self.args());
        Command::new(JAILER).args(a).output().unwrap()
    }
}

/// `<mount>/<own cgroup>/standin/<id>` for a v1 controller, the directory
/// the jailer must create (the jailer inherits the test's cgroups).
fn vm_cgroup(controller: &str, id: &str) -> (String, PathBuf) {
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own
        .lines()
        .find_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_, c, path) = (p.next()?, p.next()?, p.next()?);
            c.split(',')
                .any(|x| x == controller)
                .then(|| path.to_string())
        })
        .unwrap();
    let rel = format!("{}/standin/{id}", own.trim_end_matches('/'));
    let dir = PathBuf::from(format!("/sys/fs/cgroup/{controller}{rel}"));
    (rel, dir)
}

/// `standin: KEY...` lines, and `key=value` pairs of the first line of each key.
fn report(stdout: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let lines: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("standin: "))
        .map(str::to_string)
        .collect();
    let mut kv = BTreeMap::new();
    for l in &lines {
        for part in l.split(' ') {
            if let Some((k, v)) = part.split_once('=') {
                kv.entry(k.to_string()).or_insert_with(|| v.to_string());
            }
        }
    }
    (lines, kv)
}

fn has(lines: &[String], want: &str) -> bool {
    lines.iter().any(|l| l == want)
}

#[test]
fn new_pid_ns_jail_reports_from_inside_and_cleans_up_itself() {
    if skip_unless_root("new_pid_ns_jail_reports_from_inside_and_cleans_up_itself") {
        return;
    }
    let fx = Fixture::new("pidns");
    // A named network namespace to join.
    let netns = NetNs::new(&format!("jailer-it-{}", std::process::id()));
    let mut a = fx.args();
    a.extend(["--netns".to_string(), netns.path.display().to_string()]);
    a.extend(
        [
            "--uid",
            "65534",
            "--gid",
            "65534",
            "--cgroup",
            "pids.max=32",
            "--cgroup",
            "cpuset.cpus=0",
            "--cgroup",
            "memory.limit_in_bytes=268435456",
            "--resource-limit",
            "nofile=64,fsize=1048576",
            "--new-pid-ns",
            "--",
        ]
        .map(String::from),
    );
    a.extend(fx.casemate_args());
    let out = Command::new(JAILER)
        .args(&a)
        .env("JAILER_TEST_SECRET", "must-not-leak")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert_eq!(out.status.code(), Some(STANDIN_EXIT), "{stderr}");
    let (lines, kv) = report(&stdout);

    // Identity and privileges.
    assert!(has(&lines, "uid=65534 gid=65534 euid=65534 egid=65534"));
    assert!(has(&lines, "pid=1"), "pid 1 of its own pid namespace");
    assert!(has(&lines, "env_count=0"));
    assert!(has(&lines, "prctl no_new_privs=1 seccomp=0 capbnd_count=0"));
    for l in [
        "status NoNewPrivs: 1",
        "status CapInh: 0000000000000000",
        "status CapPrm: 0000000000000000",
        "status CapEff: 0000000000000000",
        "status CapBnd: 0000000000000000",
        "status CapAmb: 0000000000000000",
        // The jailer installs no filter: the VMM does, per thread.
        "status Seccomp: 0",
        "status Groups:",
    ] {
        assert!(has(&lines, l), "missing {l:?}");
    }

    // What the jail shows: no host files, only its own tree.
    assert!(has(&lines, "passwd_visible=false"));
    // The VMM is exec'd from an fd: no copy of it in the jail, and the host
    // binary behind /proc/self/exe cannot be opened for writing.
    assert!(has(&lines, "root_entries=dev,proc"));
    assert!(lines.iter().any(|l| l.starts_with("exe_write=denied")));
    assert!(has(
        &lines,
        "dev /dev/kvm 10:232 owner=65534:65534 mode=600"
    ));
    assert!(has(
        &lines,
        "dev /dev/urandom 1:9 owner=65534:65534 mode=666"
    ));
    assert!(
        has(&lines, "dev /dev/net/tun absent"),
        "no tap netdev asked"
    );

    // The handed-over files: open, right access, not close-on-exec, and the
    // arguments point at their fd sets.
    assert!(has(
        &lines,
        "fd=3 set=0 opaque=kernel access=ro cloexec=false content=\"KERNEL-BYTES\""
    ));
    assert!(has(
        &lines,
        "fd=4 set=1 opaque=drive access=rw cloexec=false content=\"DISK-BYTES\""
    ));
    assert!(has(&lines, "fdset_arg=/dev/fdset/0"));
    assert!(has(
        &lines,
        "fdset_arg=file=/dev/fdset/1,if=virtio,format=raw"
    ));
    // Nothing else inherited: stdio, the two fds, and read_dir's own fd.
    assert!(has(&lines, "open_fds=[0, 1, 2, 3, 4, 5]"), "{lines:?}");
    // -append is not an option list: left alone.
    assert!(stdout.contains("\"console=ttyS0 -kernel /etc/passwd\""));

    // Cgroups and limits.
    for c in ["pids", "cpuset", "memory"] {
        let (rel, _) = vm_cgroup(c, &fx.id);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("cgroup ") && l.ends_with(&format!(":{c}:{rel}"))),
            "not in {c}:{rel}: {lines:?}"
        );
    }
    let ino = fs::metadata(&netns.path).unwrap().ino();
    assert!(has(&lines, &format!("netns=net:[{ino}]")), "joined --netns");
    assert!(has(&lines, "limit Max open files 64 64 files"));
    assert!(has(&lines, "limit Max file size 1048576 1048576 bytes"));
    assert_eq!(kv.get("no_new_privs").map(String::as_str), Some("1"));

    // The parent waited and cleaned up: no jail, no cgroup left.
    assert!(!fx.jail_dir().exists(), "jail dir left behind");
    for c in ["pids", "cpuset", "memory"] {
        let (_, dir) = vm_cgroup(c, &fx.id);
        assert!(!dir.exists(), "cgroup {} left behind", dir.display());
    }
}

/// `ip netns add NAME`, deleted on drop.
struct NetNs {
    name: String,
    path: PathBuf,
}

impl NetNs {
    fn new(name: &str) -> NetNs {
        let st = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {name}");
        NetNs {
            name: name.to_string(),
            path: PathBuf::from("/var/run/netns").join(name),
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn daemonized_pid_ns_jail_detaches_and_still_cleans_up() {
    if skip_unless_root("daemonized_pid_ns_jail_detaches_and_still_cleans_up") {
        return;
    }
    let fx = Fixture::new("daemon");
    let mut a = fx.args();
    a.extend(
        [
            "--uid",
            "65534",
            "--gid",
            "65534",
            "--cgroup",
            "pids.max=8",
            "--daemonize",
            "--new-pid-ns",
            "--",
            "-m",
            "64",
        ]
        .map(String::from),
    );
    let out = Command::new(JAILER).args(&a).output().unwrap();
    // The caller sees success at once and no output: stdio is /dev/null.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    // The detached supervisor waits for the VM and cleans up.
    let (_, pids_dir) = vm_cgroup("pids", &fx.id);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    // `<base>/standin` goes last: once it is gone the supervisor is done
    // and the temp dir can be removed without racing it.
    let exec_dir = fx.base().join("standin");
    while exec_dir.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!fx.jail_dir().exists(), "jail dir left behind");
    assert!(!pids_dir.exists(), "cgroup left behind");
}

/// Reads `standin:` lines until `standin: ready` (or EOF).
fn read_until_ready(stdout: &mut impl BufRead) -> String {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 || line.trim() == "standin: ready" {
            text.push_str(&line);
            return text;
        }
        text.push_str(&line);
    }
}

#[test]
fn pid_ns_supervisor_forwards_sigterm_and_cleans_up() {
    if skip_unless_root("pid_ns_supervisor_forwards_sigterm_and_cleans_up") {
        return;
    }
    let fx = Fixture::new("sigterm");
    let mut a = fx.args();
    a.extend(
        [
            "--uid",
            "65534",
            "--gid",
            "65534",
            "--cgroup",
            "pids.max=8",
            "--new-pid-ns",
            "--",
            "--wait-stdin",
        ]
        .map(String::from),
    );
    let mut child = Command::new(JAILER)
        .args(&a)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let text = read_until_ready(&mut stdout);
    assert!(text.contains("standin: pid=1"), "{text}");
    // Child::wait closes the child's stdin first: keep it open, or the
    // stand-in sees EOF and exits on its own before the signal reaches it.
    let stdin = child.stdin.take();
    // SAFETY: kill on the jailer we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    println!("{text}{rest}");
    assert!(
        rest.contains("standin: got SIGTERM"),
        "status {status:?}, rest: {rest}"
    );
    // The supervisor survived the signal, waited, cleaned up, and passed on
    // the VM's status.
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert!(!fx.jail_dir().exists());
    assert!(!vm_cgroup("pids", &fx.id).1.exists());
}

#[test]
fn exec_mode_jail_then_cleanup() {
    if skip_unless_root("exec_mode_jail_then_cleanup") {
        return;
    }
    let fx = Fixture::new("exec");
    let mut a = fx.args();
    a.extend(
        [
            "--uid",
            "65534",
            "--gid",
            "65534",
            "--cgroup",
            "pids.max=16",
            "--",
            "--wait-stdin",
            // A tap the jailer leaves to the VMM (`fd=`; one by name it
            // attaches itself): the jail gets /dev/net/tun.
            "-netdev",
            "tap,id=n0,fd=9",
        ]
        .map(String::from),
    );
    a.extend(fx.casemate_args());
    let mut child = Command::new(JAILER)
        .args(&a)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut text = read_until_ready(&mut stdout);
    // The jailer exec'd the stand-in: same pid, now in the VM cgroup.
    let (_, pids_dir) = vm_cgroup("pids", &fx.id);
    let procs = fs::read_to_string(pids_dir.join("cgroup.procs")).unwrap_or_default();
    let max = fs::read_to_string(pids_dir.join("pids.max")).unwrap_or_default();
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    text.push_str(&rest);
    println!("{text}");
    assert_eq!(status.code(), Some(STANDIN_EXIT));
    assert_eq!(
        procs.trim(),
        child.id().to_string(),
        "VMM pid in the VM cgroup"
    );
    assert_eq!(max.trim(), "16");

    let (lines, _) = report(&text);
    assert!(has(&lines, "uid=65534 gid=65534 euid=65534 egid=65534"));
    assert!(has(&lines, "prctl no_new_privs=1 seccomp=0 capbnd_count=0"));
    assert!(has(&lines, "passwd_visible=false"));
    // No pid namespace: no /proc (it would show the host's processes).
    assert!(lines.iter().any(|l| l.starts_with("proc=absent")));
    assert!(has(&lines, "root_entries=dev"));
    assert!(lines.iter().any(|l| l.starts_with("exe_write=denied")));
    assert!(has(
        &lines,
        "dev /dev/net/tun 10:200 owner=65534:65534 mode=600"
    ));
    assert!(has(
        &lines,
        "fd=3 set=0 opaque=kernel access=ro cloexec=false content=\"KERNEL-BYTES\""
    ));

    // Nobody cleaned up yet; --cleanup does, and is idempotent.
    assert!(fx.jail_dir().exists());
    assert!(pids_dir.exists());
    let out = fx.cleanup();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    println!("{said}");
    assert!(said.contains(&format!("removed {}", pids_dir.display())));
    assert!(!fx.jail_dir().exists());
    assert!(!pids_dir.exists());
    let out = fx.cleanup();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
}

/// Runs the jailer and expects a refusal: non-zero exit, one line on stderr
/// containing `want`; returns that line.
fn refused(args: &[String], as_nobody: bool, want: &str) -> String {
    let mut cmd = Command::new(JAILER);
    cmd.args(args);
    if as_nobody {
        cmd.uid(VM_UID).gid(VM_UID);
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    println!("refused as expected: {}", err.trim());
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("casemate-jailer: "), "{err}");
    assert!(err.contains(want), "want {want:?} in {err}");
    err.into_owned()
}

#[test]
fn refusals_name_the_problem() {
    if skip_unless_root("refusals_name_the_problem") {
        return;
    }
    let fx = Fixture::new("refuse");
    let with = |extra: &[&str]| {
        let mut a = fx.args();
        a.extend(["--uid", "65534", "--gid", "65534"].map(String::from));
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    let mut a = with(&["--", "-m", "64"]);
    a[3] = fx.host("missing");
    refused(&a, false, "does not exist");
    let mut a = with(&["--", "-m", "64"]);
    a[3] = fx.host("vmlinux");
    refused(&a, false, "is not an executable regular file");
    let mut a = with(&[]);
    a[1] = "../etc".into();
    refused(&a, false, "invalid --id \"../etc\"");

    fs::create_dir_all(fx.jail_dir()).unwrap();
    refused(&with(&[]), false, "already exists");
    fs::remove_dir(fx.jail_dir()).unwrap();

    // A cgroup file the kernel does not have: named, and nothing is left.
    let (_, pids_dir) = vm_cgroup("pids", &fx.id);
    refused(
        &with(&["--cgroup", "pids.bogus=1"]),
        false,
        &format!(
            "cannot write cgroup file {} (value \"1\"): No such file or directory",
            pids_dir.join("pids.bogus").display()
        ),
    );
    assert!(!pids_dir.exists(), "rolled back");
    assert!(!fx.jail_dir().exists(), "rolled back");

    // A value the kernel refuses.
    refused(
        &with(&["--cgroup", "pids.max=lots"]),
        false,
        &format!(
            "cannot write cgroup file {} (value \"lots\"): Invalid argument",
            pids_dir.join("pids.max").display()
        ),
    );
    assert!(!pids_dir.exists(), "rolled back");

    // A handed-over file that cannot be opened.
    refused(
        &with(&["--", "-initrd", "/nonexistent/initrd"]),
        false,
        "cannot open /nonexistent/initrd for initrd",
    );

    // Without privileges: the first privileged step (mknod) is named. The base dir
    // is made writable so that unprivileged steps get that far.
    let exec_dir = fx.base().join("standin");
    fs::create_dir_all(&exec_dir).unwrap();
    for d in [fx.base(), exec_dir] {
        fs::set_permissions(d, fs::Permissions::from_mode(0o777)).unwrap();
    }
    let err = refused(
        &with(&[]),
        true,
        "root/dev/kvm: Operation not permitted (os error 1) (this step needs root",
    );
    assert!(err.contains("cannot mknod "), "{err}");
    assert!(!fx.jail_dir().exists(), "rolled back");

    // Unknown option / casemate option the jailer cannot honour.
    refused(&with(&["--bogus"]), false, "unknown option --bogus");
    refused(
        &with(&["--", "-add-fd", "fd=3,set=1"]),
        false,
        "-add-fd is not supported under the jailer",
    );
    let _ = std::io::stdout().flush();
}

/// Taps are attached by the jailer in `--netns` (as root: a root-owned
/// multiqueue tap, once per queue; one that does not exist yet, which the
/// kernel creates; a multiqueue tap with no name, whose second queue joins
/// the tap the kernel named for the first) and arrive as `-add-fd` fds,
/// open read-write and not close-on-exec, with the netdevs rewritten to
/// `fds=`/`fd=`; the jail has no `/dev/net/tun`. The taps the jailer
/// created are not persistent: they are gone once the VM has ended.
#[test]
fn taps_are_attached_in_the_netns_and_handed_over() {
    if skip_unless_root("taps_are_attached_in_the_netns_and_handed_over") {
        return;
    }
    let fx = Fixture::new("taps");
    let netns = NetNs::new(&format!("jailer-it-tap-{}", std::process::id()));
    let ip = |args: &[&str]| {
        Command::new("ip")
            .args(["-n", &netns.name])
            .args(args)
            .output()
            .unwrap()
    };
    let made = ip(&[
        "tuntap",
        "add",
        "dev",
        "tapq",
        "mode",
        "tap",
        "vnet_hdr",
        "multi_queue",
    ]);
    assert!(made.status.success(), "{made:?}");
    let mut a = fx.args();
    a.extend(["--netns".to_string(), netns.path.display().to_string()]);
    a.extend(["--uid", "65534", "--gid", "65534", "--new-pid-ns", "--"].map(String::from));
    a.extend(
        [
            "--wait-stdin",
            "-kernel",
            &fx.host("vmlinux"),
            "-netdev",
            "tap,id=a,ifname=tapq,queues=2,script=no",
            "-netdev",
            "tap,id=b,ifname=tapnew",
            "-netdev",
            "tap,id=c,queues=2",
        ]
        .map(String::from),
    );
    let mut child = Command::new(JAILER)
        .args(&a)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut text = read_until_ready(&mut stdout);
    // While the stand-in holds the fds: the taps in the namespace.
    let links = String::from_utf8_lossy(&ip(&["-o", "link", "show"]).stdout).into_owned();
    let mut taps: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .filter(|n| n.starts_with("tap"))
        .collect();
    taps.sort();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    text.push_str(&rest);
    println!("{text}");
    assert_eq!(status.code(), Some(STANDIN_EXIT), "{text}");
    // The nameless two-queue tap is one interface, not two.
    assert_eq!(taps, ["tap0", "tapnew", "tapq"], "{links}");
    let (lines, _) = report(&text);
    assert!(has(
        &lines,
        "fd=3 set=0 opaque=kernel access=ro cloexec=false content=\"KERNEL-BYTES\""
    ));
    for (fd, set) in [(4, 1), (5, 2), (6, 3), (7, 4), (8, 5)] {
        let want = format!("fd={fd} set={set} opaque=tap access=rw cloexec=false content=\"\"");
        assert!(has(&lines, &want), "missing {want:?}: {lines:?}");
    }
    assert!(text.contains("\"tap,id=a,script=no,fds=4:5\""), "{text}");
    assert!(text.contains("\"tap,id=b,fd=6\""), "{text}");
    assert!(text.contains("\"tap,id=c,fds=7:8\""), "{text}");
    assert!(has(&lines, "dev /dev/net/tun absent"), "{lines:?}");
    assert!(ip(&["link", "show", "tapq"]).status.success());
    for gone in ["tapnew", "tap0"] {
        assert!(
            !ip(&["link", "show", gone]).status.success(),
            "{gone}, which the jailer created, outlived the VM"
        );
    }
    assert!(!fx.jail_dir().exists(), "jail dir left behind");
}

/// `--daemonize` with handed-over files: the jailer's `/dev/null` stays
/// above the fd numbers it hands over (it once took fd 3, and placing the
/// kernel there was refused as "already open").
#[test]
fn daemonized_jail_with_handed_files_starts() {
    if skip_unless_root("daemonized_jail_with_handed_files_starts") {
        return;
    }
    let fx = Fixture::new("daemon-files");
    let mut a = fx.args();
    a.extend(["--uid", "65534", "--gid", "65534", "--daemonize", "--"].map(String::from));
    a.extend(fx.casemate_args());
    let out = Command::new(JAILER).args(&a).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = fx.cleanup();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
}
