//! What the jailer hands the VMM as fds, end to end: a `-snapshot` drive
//! that arrives as `/dev/fdset/N` (jailed, and unjailed through `-add-fd`)
//! gets a memfd overlay on the open image, so `probe=blk-reboot` reads its
//! write back after a guest reset, the image file is byte-identical
//! afterwards, and while the VM runs QEMU's tools may read the image but
//! not write it (the lock of a snapshot's backing file); and a tap named by `ifname=` is attached by the jailer in
//! `--netns` and passed as `fd=`, so a jailed VMM (uid 65534, no
//! capabilities, no `/dev/net/tun` in its jail) moves traffic through a
//! root-owned tap it could never attach itself. Network tests make their
//! own namespace and delete it.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use casemate_tests::netns::{finish, ping, udp_echoes, NetNs};
use casemate_tests::{
    bin, have, in_ci, jail, kvm_or_skip, run_with_limit, Report, Scratch, Watchdog,
};

const DISK: usize = 16 << 20;
const GUEST: [u8; 4] = [10, 0, 2, 15];

/// A disk whose every sector holds its own number, so a stray write shows.
fn patterned_disk(s: &Scratch) -> String {
    s.file(
        "d.raw",
        &(0..DISK).map(|i| (i / 512) as u8).collect::<Vec<u8>>(),
    )
}

/// The console of a `probe=blk-reboot` run: written, reset, read back.
fn assert_blk_reboot(console: &str, what: &str) {
    for want in [
        "probe: blk-reboot phase=1 wrote=9 ",
        "probe: blk-reboot resetting=",
        "probe: blk-reboot phase=2 read=ok ok=1",
        "probe: done status=ok",
    ] {
        assert!(console.contains(want), "{what}: no {want:?}\n{console}");
    }
    assert_eq!(
        console.matches("probe: boot entry=").count(),
        2,
        "{what}: two boots\n{console}"
    );
}

/// `casemate ARGS` with `image` open read-only and inherited as `-add-fd
/// fd=N,set=0` (inserted first), as a launcher hands a disk over.
fn with_image_fd(image: &str, args: &[&str]) -> std::process::Output {
    let image = std::fs::File::open(image).unwrap();
    let fd = image.as_raw_fd();
    let mut c = Command::new(bin("casemate"));
    c.args(["-add-fd", &format!("fd={fd},set=0")]).args(args);
    // SAFETY: the closure only calls fcntl(2), which is async-signal-safe,
    // on a descriptor the parent keeps open until the child has run.
    unsafe {
        c.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = run_with_limit(c, Duration::from_secs(60));
    drop(image);
    out
}

/// `-snapshot` and `snapshot=on` on a drive given as `-add-fd` +
/// `/dev/fdset/0`, with the fd open read-only (a snapshot never writes its
/// base), under the default seccomp filters and Landlock: virtio-blk
/// (worker threads; a reset between write and read-back; write-zeroes and
/// discard: fallocate on the memfd), AHCI and IDE DMA (vCPU and I/O
/// helper threads).
#[test]
fn fdset_snapshot_writes_survive_a_reset_and_leave_the_image() {
    if !kvm_or_skip("fdset_snapshot_writes_survive_a_reset_and_leave_the_image") {
        return;
    }
    let s = Scratch::new("fdset-snapshot");
    let d = patterned_disk(&s);
    let before = std::fs::read(&d).unwrap();
    let fdset = "file=/dev/fdset/0,format=raw";
    let runs: [(&str, String, bool, &str); 5] = [
        (
            "q35",
            format!("{fdset},if=virtio"),
            true,
            "probe=blk-reboot",
        ),
        (
            "microvm",
            format!("{fdset},if=virtio,snapshot=on"),
            false,
            "probe=blk-reboot",
        ),
        ("q35", format!("{fdset},if=virtio"), true, "probe=blk"),
        ("q35", fdset.to_string(), true, "probe=ahci"),
        ("pc", format!("{fdset},if=ide"), true, "probe=ide-dma"),
    ];
    for (machine, drive, global, append) in &runs {
        let what = format!("{append} on {machine}");
        let mut args = vec!["-M", machine, "-drive", drive, "-append", append];
        if *global {
            args.push("-snapshot");
        }
        let out = with_image_fd(&d, &args);
        let console = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{what}: {:?}\n{console}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        match *append {
            "probe=blk-reboot" => assert_blk_reboot(&console, &what),
            "probe=blk" => {
                Report::parse(&console).assert_ok();
                for want in ["probe: blk read=ok lba=24576", "probe: blk discard=ok"] {
                    assert!(console.contains(want), "{what}: no {want:?}\n{console}");
                }
            }
            _ => {
                Report::parse(&console).assert_ok();
                assert!(console.contains("blk wrote lba="), "{what}\n{console}");
            }
        }
        assert!(
            std::fs::read(&d).unwrap() == before,
            "{what}: -snapshot image changed"
        );
    }
}

/// While a VM runs with `-snapshot` on an `-add-fd` drive, the image is
/// locked as QEMU locks a snapshot's backing file: QEMU's own tools may
/// read it (`qemu-img info`) but not open it for writing (`qemu-io`).
#[test]
fn fdset_snapshot_base_is_locked_like_a_qemu_backing_file() {
    use std::io::{BufRead, BufReader, Read};
    let test = "fdset_snapshot_base_is_locked_like_a_qemu_backing_file";
    if !kvm_or_skip(test) {
        return;
    }
    if !have("qemu-io") {
        assert!(
            !in_ci(),
            "{test}: qemu-io (qemu-utils) missing under CI=true"
        );
        println!("SKIP {test}: qemu-io is not installed");
        return;
    }
    let s = Scratch::new("fdset-snapshot-lock");
    let d = patterned_disk(&s);
    let before = std::fs::read(&d).unwrap();
    let image = std::fs::File::open(&d).unwrap();
    let fd = image.as_raw_fd();
    let mut c = Command::new(bin("casemate"));
    c.args(["-M", "microvm", "-add-fd", &format!("fd={fd},set=0")])
        .args([
            "-drive",
            "file=/dev/fdset/0,format=raw,if=virtio",
            "-snapshot",
        ])
        .args(["-append", "probe=spin ms=3000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure only calls fcntl(2), which is async-signal-safe,
    // on a descriptor the parent keeps open until the child has run.
    unsafe {
        c.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = c.spawn().expect("casemate");
    drop(image);
    let dog = Watchdog::arm(child.id(), Duration::from_secs(60));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut console = String::new();
    // The guest runs: the drive (and its lock) was set up before boot.
    while !console.contains("probe: spin") {
        if out.read_line(&mut console).unwrap() == 0 {
            break;
        }
    }
    let write = Command::new("qemu-io")
        .args(["-f", "raw", "-c", "write 0 512", &d])
        .output()
        .unwrap();
    let info = Command::new("qemu-img")
        .args(["info", "-f", "raw", &d])
        .output()
        .unwrap();
    out.read_to_string(&mut console).unwrap();
    let status = child.wait().unwrap();
    assert!(!dog.disarm(), "casemate ran past its limit");
    assert!(status.success(), "{status:?}\n{console}");
    assert!(console.contains("probe: spin"), "{console}");
    let werr = String::from_utf8_lossy(&write.stderr);
    assert!(
        !write.status.success() && werr.contains("Failed to get \"write\" lock"),
        "qemu-io wrote to a running snapshot's base: {werr}"
    );
    assert!(
        info.status.success(),
        "qemu-img info (a reader) was refused: {}",
        String::from_utf8_lossy(&info.stderr)
    );
    assert!(std::fs::read(&d).unwrap() == before, "image changed");
}

/// The same under the jailer, which opens the image read-only (it is a
/// snapshot's base) and hands it over; the jailed VMM builds the overlay
/// in a memfd (nothing in its jail but the VMM, dev and proc).
#[test]
fn jailed_snapshot_writes_survive_a_reset_and_leave_the_image() {
    let test = "jailed_snapshot_writes_survive_a_reset_and_leave_the_image";
    if !kvm_or_skip(test) {
        return;
    }
    let Some(vmm) = jail::jail_or_skip(test) else {
        return;
    };
    let s = Scratch::new("jailed-snapshot");
    let d = patterned_disk(&s);
    let before = std::fs::read(&d).unwrap();
    let base = s.path("jails");
    for (id, machine, global) in [("snap-q35", "q35", true), ("snap-mvm", "microvm", false)] {
        let drive = format!(
            "file={d},format=raw,if=virtio{}",
            if global { "" } else { ",snapshot=on" }
        );
        let mut args = vec![
            "-M",
            machine,
            "-drive",
            &drive,
            "-append",
            "probe=blk-reboot",
        ];
        if global {
            args.push("-snapshot");
        }
        let out = run_with_limit(
            jail::jailer(&vmm, &base, id, &["--new-pid-ns"], &args),
            Duration::from_secs(60),
        );
        let console = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{id}: {:?}\n{console}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_blk_reboot(&console, id);
        assert!(
            std::fs::read(&d).unwrap() == before,
            "{id}: -snapshot image changed"
        );
        assert!(!jail::jail_dir(&base, &vmm, id).exists(), "{id}: jail left");
    }
}

/// Every entry under `dir`, as paths relative to it, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A root-owned tap in the test's namespace: the jailed VMM (uid 65534,
/// no CAP_NET_ADMIN) could not attach it; the jailer does, in `--netns`,
/// and the host's pings and UDP reach the guest through the fd. Run
/// without `--new-pid-ns`, so the jail stays until `--cleanup` and its
/// device nodes can be listed after the VM: no `/dev/net/tun`.
#[test]
fn jailed_vm_uses_the_tap_the_jailer_attached() {
    let test = "jailed_vm_uses_the_tap_the_jailer_attached";
    let Some(vmm) = jail::jail_or_skip(test) else {
        return;
    };
    let Some(ns) = NetNs::with_tap(test) else {
        return;
    };
    let s = Scratch::new("jailed-tap");
    let base = s.path("jails");
    let netns = format!("/run/netns/{}", ns.name);
    let mut c = jail::jailer(
        &vmm,
        &base,
        "tap",
        &["--netns", &netns],
        &[
            "-M",
            "microvm",
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off",
            "-device",
            "virtio-net-device,netdev=n0",
            "-append",
            "probe=net ms=5000",
        ],
    );
    let child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jailer");
    let (udp, pings) = ns.enter(|| {
        let udp = udp_echoes(GUEST, 4, Duration::from_secs(4));
        let pings = (1..=3).filter(|&s| ping(GUEST, s)).count();
        (udp, pings)
    });
    let out = finish(child, Duration::from_secs(60));
    let r = Report::parse(&String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let dev = tree(&jail::jail_dir(&base, &vmm, "tap").join("root/dev"));
    jail::cleanup(&vmm, &base, "tap");
    assert!(out.status.success(), "{:?}\n{}\n{err}", out.status, r.raw);
    r.assert_ok();
    assert_eq!((udp, pings), (4, 3), "{}", r.raw);
    assert_eq!(dev, ["kvm", "urandom"], "the jail's /dev");
}

/// A tap the jailer cannot attach (`lo` is no tap: EINVAL) is refused
/// before anything runs, naming the tap and the errno; what the jailer
/// made is rolled back.
#[test]
fn a_tap_the_jailer_cannot_attach_is_refused_by_name() {
    let test = "a_tap_the_jailer_cannot_attach_is_refused_by_name";
    let Some(vmm) = jail::jail_or_skip(test) else {
        return;
    };
    let Some(ns) = NetNs::new(test) else {
        return;
    };
    let s = Scratch::new("jailed-tap-refused");
    let base = s.path("jails");
    let netns = format!("/run/netns/{}", ns.name);
    let out = run_with_limit(
        jail::jailer(
            &vmm,
            &base,
            "tap-lo",
            &["--new-pid-ns", "--netns", &netns],
            &[
                "-netdev",
                "tap,id=n0,ifname=lo",
                "-device",
                "virtio-net-device,netdev=n0",
            ],
        ),
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("tap lo: attaching (TUNSETIFF)") && err.contains("os error 22"),
        "{err}"
    );
    assert!(!jail::jail_dir(&base, &vmm, "tap-lo").exists(), "jail left");
}
