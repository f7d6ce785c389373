//! Unit tests for the steps that can run against temp dirs without changing
//! the test process (validation, cgroup writes, fd hand-over, device nodes,
//! the exec fd, cleanup). Steps needing root skip when not root.

use super::*;
use crate::plan::{Access, CgroupStep, CleanupPlan, DeviceNode, HandedFile};
use std::os::unix::fs::FileTypeExt;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn validate_refuses_missing_non_executable_and_existing_jail() {
    let t = tempfile::tempdir().unwrap();
    let exe = t.path().join("casemate");
    let jail = t.path().join("jail/casemate/vm");
    assert!(matches!(
        validate(&exe, &jail),
        Err(StepError::ExecMissing(..))
    ));
    fs::write(&exe, b"x").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o644)).unwrap();
    let e = validate(&exe, &jail).unwrap_err();
    assert!(matches!(e, StepError::ExecNotExecutable(_)));
    assert!(e.to_string().contains("is not an executable regular file"));
    assert!(matches!(
        validate(t.path(), &jail),
        Err(StepError::ExecNotExecutable(_))
    ));
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    validate(&exe, &jail).unwrap();
    fs::create_dir_all(&jail).unwrap();
    assert!(matches!(
        validate(&exe, &jail),
        Err(StepError::JailExists(_))
    ));
}

#[test]
fn cgroup_steps_against_a_temp_tree() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path();
    // A fake v1 cpuset mount: the root has values, new dirs start empty.
    fs::write(m.join("cpuset.cpus"), "0-1\n").unwrap();
    fs::write(m.join("cpuset.mems"), "0\n").unwrap();
    let parent = m.join("casemate");
    let vm = parent.join("vm");
    let steps = [
        CgroupStep::Mkdir {
            dir: parent.clone(),
            exclusive: false,
        },
        CgroupStep::InheritIfEmpty {
            file: parent.join("cpuset.cpus"),
        },
        CgroupStep::InheritIfEmpty {
            file: parent.join("cpuset.mems"),
        },
        CgroupStep::Mkdir {
            dir: vm.clone(),
            exclusive: true,
        },
        CgroupStep::InheritIfEmpty {
            file: vm.join("cpuset.cpus"),
        },
        CgroupStep::InheritIfEmpty {
            file: vm.join("cpuset.mems"),
        },
        CgroupStep::Write {
            file: vm.join("cpuset.cpus"),
            value: "1".into(),
        },
    ];
    // Real cgroupfs creates the files with a new dir; emulate that.
    let pre = |d: &Path| {
        fs::create_dir(d).unwrap();
        fs::write(d.join("cpuset.cpus"), "").unwrap();
        fs::write(d.join("cpuset.mems"), "").unwrap();
    };
    pre(&parent);
    // The parent exists (non-exclusive: fine); the VM dir does not yet.
    let mut created = Vec::new();
    apply_cgroup_steps(&steps[..3], &mut created).unwrap();
    assert!(created.is_empty());
    assert_eq!(
        fs::read_to_string(parent.join("cpuset.cpus")).unwrap(),
        "0-1"
    );
    assert_eq!(fs::read_to_string(parent.join("cpuset.mems")).unwrap(), "0");
    apply_cgroup_steps(&steps[3..4], &mut created).unwrap();
    assert_eq!(created, std::slice::from_ref(&vm));
    fs::write(vm.join("cpuset.cpus"), "").unwrap();
    fs::write(vm.join("cpuset.mems"), "").unwrap();
    apply_cgroup_steps(&steps[4..], &mut created).unwrap();
    assert_eq!(fs::read_to_string(vm.join("cpuset.cpus")).unwrap(), "1");
    assert_eq!(fs::read_to_string(vm.join("cpuset.mems")).unwrap(), "0");

    // The VM's own cgroup must be new.
    assert!(matches!(
        apply_cgroup_steps(&steps[3..4], &mut created),
        Err(StepError::CgroupExists(d)) if d == vm
    ));
    // An unwritable file is named.
    let bad = vm.join("nodir/pids.max");
    let e = apply_cgroup_steps(
        &[CgroupStep::Write {
            file: bad.clone(),
            value: "5".into(),
        }],
        &mut created,
    )
    .unwrap_err();
    assert!(e.to_string().contains(&bad.display().to_string()), "{e}");

    // What was created before a failing step is still reported, for rollback.
    let fresh = m.join("fresh");
    let mut made = Vec::new();
    assert!(apply_cgroup_steps(
        &[
            CgroupStep::Mkdir {
                dir: fresh.clone(),
                exclusive: true,
            },
            CgroupStep::Write {
                file: fresh.join("no/pids.max"),
                value: "1".into(),
            },
        ],
        &mut made,
    )
    .is_err());
    assert_eq!(made, [fresh]);

    fs::write(vm.join("cgroup.procs"), "").unwrap();
    join_cgroups(&[vm.join("cgroup.procs")], 4242).unwrap();
    assert_eq!(fs::read_to_string(vm.join("cgroup.procs")).unwrap(), "4242");
}

#[test]
fn handed_files_land_on_their_fds_without_cloexec() {
    let t = tempfile::tempdir().unwrap();
    let ro = t.path().join("kernel");
    let rw = t.path().join("disk,1.img");
    fs::write(&ro, b"KERNEL").unwrap();
    fs::write(&rw, b"DISK").unwrap();
    // High numbers: the test harness owns the low ones.
    let files = vec![
        HandedFile {
            host: ro.clone(),
            access: Access::ReadOnly,
            fd: 900,
            set: 0,
            option: "kernel",
        },
        HandedFile {
            host: rw.clone(),
            access: Access::ReadWrite,
            fd: 901,
            set: 1,
            option: "drive",
        },
    ];
    let fds = open_handed_files(&files).unwrap();
    assert_eq!(
        fds.iter().map(|f| f.as_raw_fd()).collect::<Vec<_>>(),
        [900, 901]
    );
    for (fd, mode) in [(900, libc::O_RDONLY), (901, libc::O_RDWR)] {
        // SAFETY: fcntl queries flags of fds we own.
        let (fdflags, flflags) = unsafe {
            (
                libc::fcntl(fd, libc::F_GETFD),
                libc::fcntl(fd, libc::F_GETFL),
            )
        };
        assert_eq!(fdflags & libc::FD_CLOEXEC, 0, "fd {fd} must survive exec");
        assert_eq!(flflags & libc::O_ACCMODE, mode);
    }
    let mut s = String::new();
    File::from(fds.into_iter().next().unwrap())
        .read_to_string(&mut s)
        .unwrap();
    assert_eq!(s, "KERNEL");

    let missing = vec![HandedFile {
        host: t.path().join("nope"),
        access: Access::ReadOnly,
        fd: 902,
        set: 0,
        option: "initrd",
    }];
    let e = open_handed_files(&missing).unwrap_err();
    assert!(e.to_string().contains("nope") && e.to_string().contains("initrd"));
}

#[test]
fn device_nodes_copy_major_minor_and_owner() {
    if !is_root() {
        eprintln!("SKIP device_nodes_copy_major_minor_and_owner: needs root for mknod");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let devs = vec![
        DeviceNode {
            host: PathBuf::from("/dev/null"),
            jail: PathBuf::from("/dev/null"),
        },
        DeviceNode {
            host: PathBuf::from("/dev/urandom"),
            jail: PathBuf::from("/dev/sub/urandom"),
        },
    ];
    make_device_nodes(t.path(), &devs, 1234, 5678).unwrap();
    for d in &devs {
        let host = fs::metadata(&d.host).unwrap();
        let made = fs::metadata(t.path().join(d.jail.strip_prefix("/").unwrap())).unwrap();
        assert!(made.file_type().is_char_device());
        assert_eq!(made.rdev(), host.rdev());
        assert_eq!(made.mode() & 0o777, host.mode() & 0o777);
        assert_eq!((made.uid(), made.gid()), (1234, 5678));
    }
    // A regular file is not a device.
    let f = t.path().join("plain");
    fs::write(&f, b"").unwrap();
    let e = make_device_nodes(
        t.path(),
        &[DeviceNode {
            host: f,
            jail: PathBuf::from("/x"),
        }],
        0,
        0,
    )
    .unwrap_err();
    assert!(matches!(e, StepError::NotCharDevice(_)));
}

#[test]
fn jail_dirs_are_exclusive() {
    let t = tempfile::tempdir().unwrap();
    let jail = t.path().join("base/casemate/vm");
    let root = jail.join("root");
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    create_jail_dirs(&jail, &root, uid, gid).unwrap();
    assert!(matches!(
        create_jail_dirs(&jail, &root, uid, gid),
        Err(StepError::JailExists(_))
    ));
    // Nothing but the root is made: the exec file is not copied in.
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0);
}

#[test]
fn open_exec_checks_what_it_opened() {
    let t = tempfile::tempdir().unwrap();
    let exe = t.path().join("casemate");
    fs::write(&exe, b"#!/bin/false\n").unwrap();
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let other = uid.wrapping_add(1);
    let mode = |m| fs::set_permissions(&exe, fs::Permissions::from_mode(m)).unwrap();
    mode(0o644);
    assert!(matches!(
        open_exec(&exe, uid, gid),
        Err(StepError::ExecNotExecutable(_))
    ));
    // Executable by its owner only: not by another uid (the VMM's).
    mode(0o700);
    assert!(open_exec(&exe, uid, gid).is_ok());
    let e = open_exec(&exe, other, gid.wrapping_add(1)).unwrap_err();
    assert!(
        matches!(e, StepError::ExecNotExecutableBy { mode: 0o700, .. }),
        "{e}"
    );
    // Other bits alone do not help the owner (as the kernel checks).
    mode(0o601);
    assert!(open_exec(&exe, uid, gid).is_err());
    assert!(open_exec(&exe, other, gid.wrapping_add(1)).is_ok());
    mode(0o755);
    let fd = open_exec(&exe, other, gid).unwrap();
    // SAFETY: F_GETFD only reads the flags of a valid fd.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC, "exec fd leaks");
    assert!(matches!(
        open_exec(t.path(), uid, gid),
        Err(StepError::ExecNotExecutable(_))
    ));
    assert!(matches!(
        open_exec(&t.path().join("missing"), uid, gid),
        Err(StepError::ExecMissing(..))
    ));
}

#[test]
fn cleanup_removes_jail_and_empty_cgroups_and_is_idempotent() {
    let t = tempfile::tempdir().unwrap();
    let exec_dir = t.path().join("base/casemate");
    let jail_dir = exec_dir.join("vm");
    fs::create_dir_all(jail_dir.join("root/dev")).unwrap();
    fs::write(jail_dir.join("root/casemate"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc", jail_dir.join("root/etc")).unwrap();
    let cg_parent = t.path().join("cg/casemate");
    let cg_vm = cg_parent.join("vm");
    fs::create_dir_all(&cg_vm).unwrap();
    // Another VM's cgroup under the same parent: the parent must stay.
    let other = t.path().join("cg2/casemate");
    fs::create_dir_all(other.join("vm2")).unwrap();
    let plan = CleanupPlan {
        jail_dir: jail_dir.clone(),
        exec_dir: exec_dir.clone(),
        cgroup_dirs: vec![cg_vm.clone(), t.path().join("cg2/casemate/vm")],
        cgroup_parents: vec![cg_parent.clone(), other.clone()],
    };
    let removed = cleanup(&plan).unwrap();
    assert_eq!(
        removed,
        [cg_vm, cg_parent, jail_dir.clone(), exec_dir.clone()]
    );
    assert!(!exec_dir.exists());
    assert!(other.join("vm2").exists());
    // The symlink was removed, not followed.
    assert!(Path::new("/etc").exists());
    assert!(cleanup(&plan).unwrap().is_empty());
}

#[test]
fn rlimits_are_set() {
    // RLIMIT_FSIZE at its current value changes nothing for the test run;
    // the integration test checks real values inside the jail.
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into `cur`.
    unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut cur) };
    set_rlimits(&[(Resource::FSize, cur.rlim_max)]).unwrap();
    // Raising above the hard limit needs privilege; unprivileged it fails
    // naming the resource.
    if !is_root() && cur.rlim_max != libc::RLIM_INFINITY {
        let e = set_rlimits(&[(Resource::FSize, u64::MAX)]).unwrap_err();
        assert!(e.to_string().contains("fsize"));
    }
}

#[test]
fn a_tap_that_cannot_be_attached_is_named_with_the_errno() {
    // `lo` exists and is no tap: TUNSETIFF fails with EINVAL before any
    // permission check, so this needs no root and creates nothing.
    let taps = [crate::plan::HandedTap {
        ifname: "lo".into(),
        multi_queue: false,
        queue: 0,
        fd: 903,
        set: 0,
    }];
    let e = attach_handed_taps(&taps).unwrap_err();
    let line = crate::error_line(&e);
    assert!(line.starts_with("tap lo: attaching (TUNSETIFF)"), "{line}");
    assert!(line.contains("os error 22"), "{line}");
    // SAFETY: F_GETFD only queries a possibly closed fd.
    let placed = unsafe { libc::fcntl(903, libc::F_GETFD) };
    assert_eq!(placed, -1, "nothing placed");
}

#[test]
fn dev_null_stays_clear_of_the_handed_fd_numbers() {
    let null = open_dev_null(950).unwrap();
    assert!(null.as_raw_fd() > 950, "fd {}", null.as_raw_fd());
    // SAFETY: F_GETFD only queries the flags of an fd we own.
    let flags = unsafe { libc::fcntl(null.as_raw_fd(), libc::F_GETFD) };
    assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
}
