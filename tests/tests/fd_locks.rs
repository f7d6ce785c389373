//! A drive handed over as an fd (`-add-fd` + `/dev/fdset/N`, how
//! `casemate-jailer` hands every disk over) is locked as QEMU locks an
//! image, exactly as a drive given by path: while the VM runs, `qemu-io`
//! cannot write the image ("Failed to get \"write\" lock") and a second
//! casemate on the same image is refused; `readonly=on` lets readers in;
//! `file.locking=off` takes no lock. The same holds for a jailed VM's disk.
//! A qcow2 handed over whose backing file the VMM cannot open is refused
//! naming both; under the jailer, the backing chain is handed over too. Every check runs while the VM is still alive (asserted),
//! so a VM that ended early cannot make a missing lock look held.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::Duration;

use casemate_tests::{bin, casemate, have, in_ci, jail, kvm_or_skip, Scratch, Watchdog};

const DISK: usize = 4 << 20;
/// Long enough for qemu-io and a refused casemate to run beside it.
const SPIN: &str = "probe=spin ms=6000";

/// A VM whose guest is running (its console reached `probe: spin`).
struct Running {
    child: Child,
    dog: Watchdog,
    out: BufReader<ChildStdout>,
    console: String,
}

impl Running {
    fn start(mut c: Command) -> Running {
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn the VM");
        let dog = Watchdog::arm(child.id(), Duration::from_secs(90));
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut console = String::new();
        while !console.contains("probe: spin") {
            if out.read_line(&mut console).unwrap() == 0 {
                break;
            }
        }
        let r = Running {
            child,
            dog,
            out,
            console,
        };
        assert!(
            r.console.contains("probe: spin"),
            "the guest never ran: {}",
            r.finish().1
        );
        r
    }

    /// Fails unless the VM is still running: checks made before this call
    /// ran next to the VM's open image.
    fn assert_alive(&mut self, what: &str) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "{what}: the VM ended before the checks were done (spin too short?)"
        );
    }

    /// Waits for the VM; its console, and stderr, after a clean exit.
    fn finish(mut self) -> (String, String) {
        self.out.read_to_string(&mut self.console).unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(!self.dog.disarm(), "the VM ran past its limit");
        assert!(status.success(), "{status:?}\n{}\n{err}", self.console);
        (self.console, err)
    }
}

/// `casemate -add-fd fd=N,set=0 ARGS` with `image` open (read-write
/// unless `read_only`) and inherited, as a launcher hands a disk over.
/// The parent's copy is closed once the child has started.
fn casemate_with_fd(image: &str, read_only: bool, args: &[&str]) -> (Command, File) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(image)
        .unwrap();
    let fd = file.as_raw_fd();
    let mut c = Command::new(bin("casemate"));
    c.args(["-M", "microvm", "-add-fd", &format!("fd={fd},set=0")])
        .args(args);
    // SAFETY: the closure only calls fcntl(2), which is async-signal-safe,
    // on a descriptor the parent keeps open until the child has started.
    unsafe {
        c.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    (c, file)
}

fn qemu_io(args: &[&str]) -> Output {
    Command::new("qemu-io").args(args).output().unwrap()
}

/// A reader that, unlike `qemu-io` and `qemu-img info`, refuses to share
/// "write": `qemu-img convert` of the image to `copy`, with `-U` when
/// `force_share`.
fn qemu_img_read(image: &str, copy: &Path, force_share: bool) -> Output {
    let mut c = Command::new("qemu-img");
    c.args(["convert", "-f", "raw", "-O", "raw"]);
    if force_share {
        c.arg("-U");
    }
    c.arg(image).arg(copy).output().unwrap()
}

/// `qemu-io -c 'write 0 512'` on a raw image: refused with QEMU's message
/// when `locked`, done otherwise.
fn assert_qemu_write(image: &str, locked: bool, what: &str) {
    let w = qemu_io(&["-f", "raw", "-c", "write 0 512", image]);
    let err = String::from_utf8_lossy(&w.stderr);
    if locked {
        assert!(
            !w.status.success() && err.contains("Failed to get \"write\" lock"),
            "{what}: qemu-io wrote to the image of a running VM: {:?} {err}",
            w.status
        );
    } else {
        assert!(
            w.status.success() && !err.contains("lock"),
            "{what}: qemu-io was refused: {err}"
        );
    }
}

/// A second casemate writing the image by path is refused with QEMU's
/// wording before it boots anything.
fn assert_second_casemate_refused(image: &str, what: &str) {
    let drive = format!("file={image},format=raw,if=virtio");
    let out = casemate(&["-M", "microvm", "-drive", &drive, "-append", "probe=hello"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Failed to get") && err.contains("lock"),
        "{what}: a second casemate opened the image: {:?}\n{err}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("probe: "),
        "{what}: the refused casemate booted a guest"
    );
}

fn qemu_io_or_skip(test: &str) -> bool {
    if have("qemu-io") {
        return true;
    }
    assert!(
        !in_ci(),
        "{test}: qemu-io (qemu-utils) missing under CI=true"
    );
    println!("SKIP {test}: qemu-io is not installed");
    false
}

#[test]
fn an_fdset_drive_is_locked_while_the_vm_runs() {
    let test = "an_fdset_drive_is_locked_while_the_vm_runs";
    if !kvm_or_skip(test) || !qemu_io_or_skip(test) {
        return;
    }
    let s = Scratch::new("fd-locks-rw");
    let d = s.file("d.raw", &vec![0x5a; DISK]);
    let args = [
        "-drive",
        "file=/dev/fdset/0,format=raw,if=virtio",
        "-append",
        SPIN,
    ];
    let (c, file) = casemate_with_fd(&d, false, &args);
    let mut vm = Running::start(c);
    drop(file);
    assert_qemu_write(&d, true, "fd drive");
    assert_second_casemate_refused(&d, "fd drive");
    // A reader that refuses to share "write" cannot read it; with -U
    // (force share) it can.
    let info = qemu_img_read(&d, &s.path("copy.raw"), false);
    assert!(
        !info.status.success()
            && String::from_utf8_lossy(&info.stderr)
                .contains("Failed to get shared \"write\" lock"),
        "qemu-img convert read a running VM's writable image: {}",
        String::from_utf8_lossy(&info.stderr)
    );
    let info = qemu_img_read(&d, &s.path("copy.raw"), true);
    assert!(
        info.status.success(),
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    vm.assert_alive("fd drive");
    vm.finish();
    assert!(
        std::fs::read(&d).unwrap() == vec![0x5a; DISK],
        "the refused writers changed the image"
    );
    // The lock went with the VM.
    assert_qemu_write(&d, false, "after the VM");
}

#[test]
fn a_readonly_fdset_drive_lets_readers_in() {
    let test = "a_readonly_fdset_drive_lets_readers_in";
    if !kvm_or_skip(test) || !qemu_io_or_skip(test) {
        return;
    }
    let s = Scratch::new("fd-locks-ro");
    let d = s.file("d.raw", &vec![0x5a; DISK]);
    let args = [
        "-drive",
        "file=/dev/fdset/0,format=raw,if=virtio,readonly=on",
        "-append",
        SPIN,
    ];
    let (c, file) = casemate_with_fd(&d, true, &args);
    let mut vm = Running::start(c);
    drop(file);
    let info = qemu_img_read(&d, &s.path("copy.raw"), false);
    assert!(
        info.status.success(),
        "qemu-img convert (a reader) was refused next to a read-only drive: {}",
        String::from_utf8_lossy(&info.stderr)
    );
    assert_qemu_write(&d, true, "read-only fd drive");
    assert_second_casemate_refused(&d, "read-only fd drive");
    vm.assert_alive("read-only fd drive");
    vm.finish();
}

#[test]
fn locking_off_on_an_fdset_drive_takes_no_lock() {
    let test = "locking_off_on_an_fdset_drive_takes_no_lock";
    if !kvm_or_skip(test) || !qemu_io_or_skip(test) {
        return;
    }
    let s = Scratch::new("fd-locks-off");
    let d = s.file("d.raw", &vec![0x5a; DISK]);
    let args = [
        "-drive",
        "file=/dev/fdset/0,format=raw,if=virtio,file.locking=off",
        "-append",
        SPIN,
    ];
    let (c, file) = casemate_with_fd(&d, false, &args);
    let mut vm = Running::start(c);
    drop(file);
    assert_qemu_write(&d, false, "locking=off");
    vm.assert_alive("locking=off");
    vm.finish();
}

/// A qcow2 handed over whose backing file, named relative to the image,
/// resolves under `/dev/fdset/`: refused, naming the image and the
/// backing path, before any guest runs.
#[test]
fn a_qcow2_fd_with_an_unreachable_backing_is_refused() {
    let test = "a_qcow2_fd_with_an_unreachable_backing_is_refused";
    if !kvm_or_skip(test) || !have("qemu-img") {
        assert!(!in_ci(), "{test}: qemu-img missing under CI=true");
        return;
    }
    let s = Scratch::new("fd-locks-backing");
    s.file("base.raw", &vec![0; DISK]);
    let top = s.path("top.qcow2");
    let out = Command::new("qemu-img")
        .current_dir(&s.0)
        .args(["create", "-f", "qcow2", "-F", "raw", "-b", "base.raw"])
        .arg(&top)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let args = [
        "-drive",
        "file=/dev/fdset/0,if=virtio",
        "-append",
        "probe=hello",
    ];
    let (mut c, file) = casemate_with_fd(top.to_str().unwrap(), false, &args);
    c.stdin(Stdio::null());
    let out = c.output().unwrap();
    drop(file);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for want in [
        "/dev/fdset/0",
        "base.raw",
        "/dev/fdset/base.raw",
        "flatten the image (qemu-img convert",
    ] {
        assert!(err.contains(want), "no {want:?} in: {err}");
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains("probe: "));
}

/// The jailer opens the disk and hands it over; the jailed VMM (uid
/// 65534, its own mount namespace) locks it, and the host's QEMU tools
/// and a second casemate see the lock.
#[test]
fn a_jailed_vms_disk_is_locked_while_it_runs() {
    let test = "a_jailed_vms_disk_is_locked_while_it_runs";
    if !kvm_or_skip(test) || !qemu_io_or_skip(test) {
        return;
    }
    let Some(vmm) = jail::jail_or_skip(test) else {
        return;
    };
    let s = Scratch::new("fd-locks-jailed");
    let d = s.file("d.raw", &vec![0x5a; DISK]);
    let base = s.path("jails");
    let drive = format!("file={d},format=raw,if=virtio");
    let args = ["-M", "microvm", "-drive", &drive, "-append", SPIN];
    let mut vm = Running::start(jail::jailer(
        &vmm,
        &base,
        "fd-locks",
        &["--new-pid-ns"],
        &args,
    ));
    assert_qemu_write(&d, true, "jailed");
    assert_second_casemate_refused(&d, "jailed");
    vm.assert_alive("jailed");
    vm.finish();
    assert_qemu_write(&d, false, "after the jailed VM");
    assert!(
        !jail::jail_dir(&base, &vmm, "fd-locks").exists(),
        "jail left"
    );
}

/// A jailed VM's qcow2 whose backing file lies outside the jail: the
/// jailer hands the chain over too (`backing.file.filename=/dev/fdset/N`),
/// the VMM locks it as QEMU locks a backing file (no writer while the VM
/// runs), and the guest's first write to a cluster copies the rest of it
/// from the handed backing (read back from the top alone afterwards), the
/// base untouched.
#[test]
fn a_jailed_qcow2_gets_its_backing_chain_handed_over() {
    let test = "a_jailed_qcow2_gets_its_backing_chain_handed_over";
    if !kvm_or_skip(test) || !qemu_io_or_skip(test) {
        return;
    }
    let Some(vmm) = jail::jail_or_skip(test) else {
        return;
    };
    let s = Scratch::new("fd-locks-jailed-backing");
    // Every sector holds its own number (mod 256).
    let base_bytes: Vec<u8> = (0..DISK).map(|i| (i / 512) as u8).collect();
    let base_img = s.file("base.raw", &base_bytes);
    let top = s.path("top.qcow2");
    let top_s = top.to_str().unwrap().to_string();
    let out = Command::new("qemu-img")
        .args([
            "create", "-q", "-f", "qcow2", "-F", "raw", "-b", &base_img, &top_s,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let jails = s.path("jails");
    let run_with = |id: &str, drive: &str, append: &str| {
        jail::jailer(
            &vmm,
            &jails,
            id,
            &["--new-pid-ns"],
            &["-M", "microvm", "-drive", drive, "-append", append],
        )
    };
    // The jailer walks only a drive said to be qcow2 (it never probes, as
    // root, what a guest may have written): a probed one reaches the VMM
    // alone, which refuses it saying what to do.
    let probed = format!("file={top_s},if=virtio");
    let out = casemate_tests::run_with_limit(
        run_with("fd-backing-probed", &probed, "probe=hello"),
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for want in [
        base_img.as_str(),
        "/dev/fdset/0",
        "format=qcow2",
        "flatten the image (qemu-img convert",
    ] {
        assert!(err.contains(want), "no {want:?} in: {err}");
    }
    assert!(!String::from_utf8_lossy(&out.stdout).contains("probe: "));
    let drive = format!("file={top_s},if=virtio,format=qcow2");
    let run = |id: &str, append: &str| run_with(id, &drive, append);
    let mut vm = Running::start(run("fd-backing-spin", SPIN));
    assert_qemu_write(&base_img, true, "the handed backing file");
    let w = qemu_io(&["-f", "qcow2", "-c", "write 0 512", &top_s]);
    assert!(
        !w.status.success() && String::from_utf8_lossy(&w.stderr).contains("lock"),
        "qemu-io wrote to a running jailed VM's qcow2"
    );
    vm.assert_alive("handed chain");
    vm.finish();

    let out =
        casemate_tests::run_with_limit(run("fd-backing-blk", "probe=blk"), Duration::from_secs(60));
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && console.contains("probe: done status=ok"),
        "{:?}\n{console}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&base_img).unwrap() == base_bytes,
        "the base changed"
    );
    // The guest wrote sector 0 only: the rest of that cluster came from
    // the backing (sector 1 holds 0x01), as seen in the top alone.
    let out = Command::new("qemu-img")
        .args(["rebase", "-u", "-b", "", &top_s])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let r = qemu_io(&["-r", "-f", "qcow2", "-c", "read -P 1 512 512", &top_s]);
    let rout = String::from_utf8_lossy(&r.stdout);
    assert!(
        r.status.success() && !rout.contains("Pattern verification failed"),
        "the copied cluster does not hold the backing's data: {rout}"
    );
    for id in ["fd-backing-probed", "fd-backing-spin", "fd-backing-blk"] {
        assert!(
            !jail::jail_dir(&jails, &vmm, id).exists(),
            "{id}: jail left"
        );
    }
}
