//! Unit tests for the pure [`JailPlan`]: paths, ids, cgroup writes (v1 and
//! v2), rlimits, device nodes and argument rewriting.

use super::*;
use crate::cli::parse;
use crate::host::HostInfo;

/// This host: v1 controllers, cgroup2 with hugetlb only, the jailer in the
/// root of every hierarchy but memory.
fn this_host() -> HostInfo {
    HostInfo {
        mounts: HostInfo::parse_mounts(
            "cgroup /cg/cpu cgroup rw,cpu 0 0\n\
             cgroup /cg/cpuset cgroup rw,cpuset 0 0\n\
             cgroup /cg/memory cgroup rw,memory 0 0\n\
             cgroup /cg/pids cgroup rw,pids 0 0\n\
             cgroup /cg/systemd cgroup rw,name=systemd 0 0\n\
             cgroup2 /cg/unified cgroup2 rw 0 0\n",
        ),
        self_cgroups: HostInfo::parse_self_cgroup(
            "9:name=systemd:/\n8:pids:/\n4:memory:/api/5f\n3:cpuset:/\n1:cpu:/\n0::/\n",
        ),
        vfio_nodes: vec![
            PathBuf::from("/dev/vfio/12"),
            PathBuf::from("/dev/vfio/vfio"),
        ],
    }
}

fn v2_host(own: &str) -> HostInfo {
    HostInfo {
        mounts: HostInfo::parse_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n"),
        self_cgroups: HostInfo::parse_self_cgroup(&format!("0::{own}\n")),
        vfio_nodes: Vec::new(),
    }
}

fn args(extra: &[&str], casemate: &[&str]) -> Args {
    let mut a = vec![
        "--id",
        "vm-1",
        "--exec-file",
        "/usr/bin/casemate",
        "--uid",
        "1000",
        "--gid",
        "1001",
    ];
    a.extend_from_slice(extra);
    a.push("--");
    a.extend_from_slice(casemate);
    parse(a).unwrap()
}

fn plan(extra: &[&str], casemate: &[&str]) -> JailPlan {
    JailPlan::new(&args(extra, casemate), &this_host()).unwrap()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn mkdir(p: &str, exclusive: bool) -> CgroupStep {
    CgroupStep::Mkdir {
        dir: PathBuf::from(p),
        exclusive,
    }
}
fn write(p: &str, v: &str) -> CgroupStep {
    CgroupStep::Write {
        file: PathBuf::from(p),
        value: v.to_string(),
    }
}
fn inherit(p: &str) -> CgroupStep {
    CgroupStep::InheritIfEmpty {
        file: PathBuf::from(p),
    }
}

#[test]
fn paths_ids_and_defaults() {
    let p = plan(&[], &["-m", "128"]);
    assert_eq!(p.exec_name, "casemate");
    assert_eq!(p.jail_dir, PathBuf::from("/srv/jailer/casemate/vm-1"));
    assert_eq!(p.root, PathBuf::from("/srv/jailer/casemate/vm-1/root"));
    assert_eq!((p.uid, p.gid), (1000, 1001));
    assert_eq!(p.argv, s(&["casemate", "-m", "128"]));
    assert_eq!(
        p.cgroups,
        CgroupPlan::default(),
        "no --cgroup: no cgroup work"
    );
    assert_eq!(p.rlimits, [(Resource::NoFile, DEFAULT_NOFILE)]);
    assert!(!p.mount_proc && !p.new_pid_ns && !p.daemonize);
    assert_eq!(p.cleanup.exec_dir, PathBuf::from("/srv/jailer/casemate"));

    let p = plan(&["--chroot-base-dir", "/j/"], &[]);
    assert_eq!(p.root, PathBuf::from("/j/casemate/vm-1/root"));
    assert!(plan(&["--new-pid-ns"], &[]).mount_proc);
}

#[test]
fn ids_are_checked() {
    for bad in ["", "a/b", "..", ".", "a.b", "a_b", "é", &"x".repeat(65)] {
        let mut a = args(&[], &[]);
        a.id = bad.to_string();
        assert_eq!(
            JailPlan::new(&a, &this_host()),
            Err(PlanError::BadId(bad.to_string()))
        );
    }
    assert!(valid_id(&"A-9".repeat(21)));
    let mut a = args(&[], &[]);
    a.exec_file = PathBuf::from("/");
    assert!(matches!(
        JailPlan::new(&a, &this_host()),
        Err(PlanError::BadExecName(_))
    ));
    let mut a = args(&[], &[]);
    a.chroot_base_dir = PathBuf::from("rel");
    assert!(matches!(
        JailPlan::new(&a, &this_host()),
        Err(PlanError::RelativeBase(_))
    ));
}

#[test]
fn cgroup_v1_under_own_cgroup() {
    let p = plan(
        &[
            "--cgroup",
            "cpu.cfs_quota_us=50000",
            "--cgroup",
            "memory.limit_in_bytes=134217728",
            "--cgroup",
            "cpu.cfs_period_us=100000",
            "--cgroup",
            "pids.max=64",
        ],
        &[],
    );
    assert_eq!(p.cgroups.version, Some(CgroupVersion::V1));
    assert_eq!(
        p.cgroups.steps,
        [
            // The jailer is in cpu's root: the VM goes under /casemate, not /.
            mkdir("/cg/cpu/casemate", false),
            mkdir("/cg/cpu/casemate/vm-1", true),
            write("/cg/cpu/casemate/vm-1/cpu.cfs_quota_us", "50000"),
            write("/cg/cpu/casemate/vm-1/cpu.cfs_period_us", "100000"),
            // memory: under the jailer's own cgroup /api/5f.
            mkdir("/cg/memory/api", false),
            mkdir("/cg/memory/api/5f", false),
            mkdir("/cg/memory/api/5f/casemate", false),
            mkdir("/cg/memory/api/5f/casemate/vm-1", true),
            write(
                "/cg/memory/api/5f/casemate/vm-1/memory.limit_in_bytes",
                "134217728"
            ),
            mkdir("/cg/pids/casemate", false),
            mkdir("/cg/pids/casemate/vm-1", true),
            write("/cg/pids/casemate/vm-1/pids.max", "64"),
        ]
    );
    assert_eq!(
        p.cgroups.procs_files,
        [
            PathBuf::from("/cg/cpu/casemate/vm-1/cgroup.procs"),
            PathBuf::from("/cg/memory/api/5f/casemate/vm-1/cgroup.procs"),
            PathBuf::from("/cg/pids/casemate/vm-1/cgroup.procs"),
        ]
    );
    assert_eq!(
        p.cgroups.origin_procs_files,
        [
            PathBuf::from("/cg/cpu/cgroup.procs"),
            PathBuf::from("/cg/memory/api/5f/cgroup.procs"),
            PathBuf::from("/cg/pids/cgroup.procs"),
        ]
    );
}

#[test]
fn cgroup_v1_cpuset_inherits_before_writes() {
    let p = plan(
        &["--cgroup", "cpuset.cpus=0", "--parent-cgroup", "/vms/"],
        &[],
    );
    assert_eq!(
        p.cgroups.steps,
        [
            mkdir("/cg/cpuset/vms", false),
            inherit("/cg/cpuset/vms/cpuset.cpus"),
            inherit("/cg/cpuset/vms/cpuset.mems"),
            mkdir("/cg/cpuset/vms/vm-1", true),
            inherit("/cg/cpuset/vms/vm-1/cpuset.cpus"),
            inherit("/cg/cpuset/vms/vm-1/cpuset.mems"),
            write("/cg/cpuset/vms/vm-1/cpuset.cpus", "0"),
        ]
    );
    // An explicit parent is not removed by cleanup; the VM cgroup is.
    assert!(p.cleanup.cgroup_parents.is_empty());
    assert!(p
        .cleanup
        .cgroup_dirs
        .contains(&PathBuf::from("/cg/cpuset/vms/vm-1")));
}

#[test]
fn cgroup_v1_hugetlb_file_names_keep_their_case() {
    let mut h = this_host();
    h.mounts.extend(HostInfo::parse_mounts(
        "cgroup /cg/hugetlb cgroup rw,hugetlb 0 0\n",
    ));
    h.self_cgroups
        .extend(HostInfo::parse_self_cgroup("10:hugetlb:/\n"));
    let p = JailPlan::new(
        &args(&["--cgroup", "hugetlb.2MB.limit_in_bytes=4194304"], &[]),
        &h,
    )
    .unwrap();
    assert_eq!(
        p.cgroups.steps.last(),
        Some(&write(
            "/cg/hugetlb/casemate/vm-1/hugetlb.2MB.limit_in_bytes",
            "4194304"
        ))
    );
}

#[test]
fn cgroup_v1_refusals() {
    let host = this_host();
    let err = |extra: &[&str]| JailPlan::new(&args(extra, &[]), &host).unwrap_err();
    assert_eq!(
        err(&["--cgroup", "blkio.weight=10"]),
        PlanError::ControllerNotMounted {
            file: "blkio.weight".into(),
            controller: "blkio".into()
        }
    );
    for f in [
        "../x.max=1",
        "pids/../x=1",
        "pids=1",
        "cgroup.procs=1",
        "Pids.max=1",
        "pids.a/b=1",
    ] {
        assert!(
            matches!(err(&["--cgroup", f]), PlanError::BadCgroupFile { .. }),
            "{f}"
        );
    }
    for parent in ["/", "", "a/../b"] {
        assert!(
            matches!(
                err(&["--cgroup", "pids.max=1", "--parent-cgroup", parent]),
                PlanError::BadParentCgroup { .. }
            ),
            "{parent:?}"
        );
    }
    let mut a = args(&["--cgroup", "pids.max=1"], &[]);
    a.cgroups[0].1 = "1\n2".into();
    assert!(matches!(
        JailPlan::new(&a, &host),
        Err(PlanError::BadCgroupValue { .. })
    ));
    // No own cgroup in the hierarchy and no --parent-cgroup: refuse.
    let mut h = this_host();
    h.self_cgroups
        .retain(|c| !c.controllers.contains(&"pids".to_string()));
    assert!(matches!(
        JailPlan::new(&args(&["--cgroup", "pids.max=1"], &[]), &h),
        Err(PlanError::NoOwnCgroup { .. })
    ));
}

#[test]
fn cgroup_v2_enables_controllers_down_to_parent() {
    let a = args(
        &[
            "--cgroup-version",
            "2",
            "--cgroup",
            "cpu.max=50000 100000",
            "--cgroup",
            "memory.max=1G",
            "--cgroup",
            "pids.max=64",
            "--cgroup",
            "cpuset.cpus=0-1",
        ],
        &[],
    );
    let p = JailPlan::new(&a, &v2_host("/user.slice")).unwrap();
    let en = "+cpu +memory +pids +cpuset";
    assert_eq!(p.cgroups.version, Some(CgroupVersion::V2));
    assert_eq!(
        p.cgroups.steps,
        [
            write("/sys/fs/cgroup/cgroup.subtree_control", en),
            mkdir("/sys/fs/cgroup/user.slice", false),
            write("/sys/fs/cgroup/user.slice/cgroup.subtree_control", en),
            mkdir("/sys/fs/cgroup/user.slice/casemate", false),
            write(
                "/sys/fs/cgroup/user.slice/casemate/cgroup.subtree_control",
                en
            ),
            mkdir("/sys/fs/cgroup/user.slice/casemate/vm-1", true),
            write(
                "/sys/fs/cgroup/user.slice/casemate/vm-1/cpu.max",
                "50000 100000"
            ),
            write("/sys/fs/cgroup/user.slice/casemate/vm-1/memory.max", "1G"),
            write("/sys/fs/cgroup/user.slice/casemate/vm-1/pids.max", "64"),
            write("/sys/fs/cgroup/user.slice/casemate/vm-1/cpuset.cpus", "0-1"),
        ]
    );
    assert_eq!(
        p.cgroups.procs_files,
        [PathBuf::from(
            "/sys/fs/cgroup/user.slice/casemate/vm-1/cgroup.procs"
        )]
    );
    assert_eq!(
        p.cgroups.origin_procs_files,
        [PathBuf::from("/sys/fs/cgroup/user.slice/cgroup.procs")]
    );
    assert_eq!(
        p.cleanup.cgroup_dirs,
        [PathBuf::from("/sys/fs/cgroup/user.slice/casemate/vm-1")]
    );
    assert_eq!(
        p.cleanup.cgroup_parents,
        [PathBuf::from("/sys/fs/cgroup/user.slice/casemate")]
    );
}

#[test]
fn cgroup_version_default_follows_host() {
    // v1 controllers mounted: v1 even though a cgroup2 mount exists.
    let p = plan(&["--cgroup", "pids.max=5"], &[]);
    assert_eq!(p.cgroups.version, Some(CgroupVersion::V1));
    let p = JailPlan::new(&args(&["--cgroup", "pids.max=5"], &[]), &v2_host("/")).unwrap();
    assert_eq!(p.cgroups.version, Some(CgroupVersion::V2));
    // At the v2 root the VM still gets its own level: /casemate/vm-1.
    assert_eq!(
        p.cgroups.procs_files,
        [PathBuf::from("/sys/fs/cgroup/casemate/vm-1/cgroup.procs")]
    );
    assert_eq!(
        JailPlan::new(
            &args(&["--cgroup-version", "2", "--cgroup", "pids.max=5"], &[]),
            &HostInfo::default()
        ),
        Err(PlanError::NoV2Mount)
    );
}

#[test]
fn cleanup_covers_every_hierarchy() {
    let c = cleanup_plan(&args(&[], &[]), &this_host()).unwrap();
    assert_eq!(c.jail_dir, PathBuf::from("/srv/jailer/casemate/vm-1"));
    assert_eq!(
        c.cgroup_dirs,
        [
            PathBuf::from("/cg/cpu/casemate/vm-1"),
            PathBuf::from("/cg/cpuset/casemate/vm-1"),
            PathBuf::from("/cg/memory/api/5f/casemate/vm-1"),
            PathBuf::from("/cg/pids/casemate/vm-1"),
            PathBuf::from("/cg/unified/casemate/vm-1"),
        ]
    );
    assert_eq!(c.cgroup_parents.len(), 5);
}

#[test]
fn rlimits() {
    let p = plan(&["--resource-limit", "fsize=1024"], &[]);
    assert_eq!(
        p.rlimits,
        [(Resource::NoFile, DEFAULT_NOFILE), (Resource::FSize, 1024)]
    );
    let p = plan(&["--resource-limit", "nofile=64,fsize=10"], &[]);
    assert_eq!(p.rlimits, [(Resource::NoFile, 64), (Resource::FSize, 10)]);
}

#[test]
fn device_nodes() {
    let jail = |p: &JailPlan| p.devices.iter().map(|d| d.jail.clone()).collect::<Vec<_>>();
    assert_eq!(
        jail(&plan(&[], &["-netdev", "user,id=n"])),
        [PathBuf::from("/dev/kvm"), PathBuf::from("/dev/urandom")]
    );
    // Taps the jailer attaches itself: no /dev/net/tun in the jail.
    for net in [
        ["-netdev", "tap,id=n0,ifname=tap0"],
        ["-nic", "tap,ifname=tap0"],
        ["-net", "tap"],
        ["--netdev", "type=tap,id=n0"],
        ["-netdev", "tap,id=n0,ifname=tap0,queues=4"],
    ] {
        let p = plan(&[], &net);
        assert!(
            !jail(&p).contains(&PathBuf::from("/dev/net/tun")),
            "{net:?}"
        );
        assert!(!p.taps.is_empty(), "{net:?}");
    }
    // One it cannot (fd=, or a queues= the VMM will refuse): the node stays.
    for net in [
        ["-netdev", "tap,id=n0,fd=5"],
        ["-netdev", "tap,id=n0,ifname=t,queues=0"],
    ] {
        assert!(
            jail(&plan(&[], &net)).contains(&PathBuf::from("/dev/net/tun")),
            "{net:?}"
        );
    }
    // "tap" as an -append word is not a tap netdev.
    assert!(!jail(&plan(&[], &["-append", "-netdev tap"])).contains(&PathBuf::from("/dev/net/tun")));
    let p = plan(&[], &["-device", "vfio-pci,host=0000:01:00.0"]);
    assert_eq!(
        jail(&p),
        [
            PathBuf::from("/dev/kvm"),
            PathBuf::from("/dev/urandom"),
            PathBuf::from("/dev/vfio/12"),
            PathBuf::from("/dev/vfio/vfio"),
        ]
    );
    assert_eq!(p.devices[2].host, PathBuf::from("/dev/vfio/12"));
}

#[test]
fn opts_splitting_and_escaping() {
    assert_eq!(split_opts("a=1,b=2"), ["a=1", "b=2"]);
    assert_eq!(
        split_opts("file=a,,b,if=virtio"),
        ["file=a,,b", "if=virtio"]
    );
    assert_eq!(split_opts("file=a,,,b"), ["file=a,,", "b"]);
    assert_eq!(split_opts("file=a,,,,b"), ["file=a,,,,b"]);
    assert_eq!(split_opts(""), [""]);
    assert_eq!(unescape_opt("a,,b,,,,c"), "a,b,,c");
}

#[test]
fn rewrites_kernel_initrd_drive_and_rng() {
    let p = plan(
        &[],
        &[
            "-M",
            "microvm",
            "-kernel",
            "/img/vmlinux",
            "--initrd",
            "/img/initrd,x",
            "-append",
            "console=ttyS0 -kernel /nope",
            "-drive",
            "id=d0,file=/img/disk,,1.raw,if=virtio,format=raw",
            "-drive",
            "file=/img/ro.raw,readonly=on,if=virtio",
            "-object",
            "rng-random,id=rng0,filename=/dev/random",
            "-object",
            "memory-backend-file,id=m,mem-path=/dev/hugepages,filename=/x",
            "-serial",
            "file:/var/log/vm.log",
            "-nographic",
        ],
    );
    let f = |host: &str, access, fd, set, option| HandedFile {
        host: PathBuf::from(host),
        access,
        fd,
        set,
        option,
    };
    assert_eq!(
        p.files,
        [
            f("/img/vmlinux", Access::ReadOnly, 3, 0, "kernel"),
            // -initrd is a plain path: no `,,` unescaping.
            f("/img/initrd,x", Access::ReadOnly, 4, 1, "initrd"),
            f("/img/disk,1.raw", Access::ReadWrite, 5, 2, "drive"),
            f("/img/ro.raw", Access::ReadOnly, 6, 3, "drive"),
            f("/dev/random", Access::ReadOnly, 7, 4, "rng"),
        ]
    );
    assert_eq!(
        p.argv,
        s(&[
            "casemate",
            "-add-fd",
            "fd=3,set=0,opaque=kernel",
            "-add-fd",
            "fd=4,set=1,opaque=initrd",
            "-add-fd",
            "fd=5,set=2,opaque=drive",
            "-add-fd",
            "fd=6,set=3,opaque=drive",
            "-add-fd",
            "fd=7,set=4,opaque=rng",
            "-M",
            "microvm",
            "-kernel",
            "/dev/fdset/0",
            "--initrd",
            "/dev/fdset/1",
            "-append",
            "console=ttyS0 -kernel /nope",
            "-drive",
            "id=d0,file=/dev/fdset/2,if=virtio,format=raw",
            "-drive",
            "file=/dev/fdset/3,readonly=on,if=virtio",
            "-object",
            "rng-random,id=rng0,filename=/dev/fdset/4",
            // Not rng-random: untouched.
            "-object",
            "memory-backend-file,id=m,mem-path=/dev/hugepages,filename=/x",
            // -serial file: stays a path (inside the jail).
            "-serial",
            "file:/var/log/vm.log",
            "-nographic",
        ])
    );
}

#[test]
fn rewrite_edge_cases() {
    // readonly spellings, escaped commas around the file, qom-type=.
    let r = rewrite_args(&s(&[
        "-drive",
        "if=virtio,file=a,,,,b,,,read-only=yes",
        "-drive",
        "readonly,file=c",
        "-drive",
        "file=d,readonly=off",
        "-object",
        "qom-type=rng-random,filename=/r,,x,id=r",
        "-drive",
        "if=none,id=empty",
        "-kernel",
        "/dev/fdset/9",
    ]))
    .unwrap();
    let got: Vec<_> = r
        .files
        .iter()
        .map(|f| (f.host.to_str().unwrap().to_string(), f.access))
        .collect();
    assert_eq!(
        got,
        [
            ("a,,b,".to_string(), Access::ReadOnly),
            ("c".to_string(), Access::ReadOnly),
            ("d".to_string(), Access::ReadWrite),
            ("/r,x".to_string(), Access::ReadOnly),
        ]
    );
    assert_eq!(
        r.args,
        s(&[
            "-drive",
            "if=virtio,file=/dev/fdset/0,read-only=yes",
            "-drive",
            "readonly,file=/dev/fdset/1",
            "-drive",
            "file=/dev/fdset/2,readonly=off",
            "-object",
            "qom-type=rng-random,filename=/dev/fdset/3,id=r",
            "-drive",
            "if=none,id=empty",
            "-kernel",
            "/dev/fdset/9",
        ])
    );
}

#[test]
fn rewrite_refusals() {
    assert!(matches!(
        rewrite_args(&s(&["-add-fd", "fd=3,set=1"])),
        Err(PlanError::UnsupportedArg(..))
    ));
    assert!(matches!(
        rewrite_args(&s(&["--config", "vm.json"])),
        Err(PlanError::UnsupportedArg(..))
    ));
    assert!(matches!(
        rewrite_args(&s(&["--config=vm.json"])),
        Err(PlanError::UnsupportedArg(..))
    ));
    assert_eq!(
        rewrite_args(&s(&["-m", "1G", "-kernel"])),
        Err(PlanError::MissingArgValue("-kernel".into()))
    );
}

#[test]
fn taps_are_attached_by_the_jailer_and_passed_as_fds() {
    let p = plan(
        &[],
        &[
            "-kernel",
            "/img/k",
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off",
            "-nic",
            "tap,ifname=t,,1,model=virtio-net-pci",
            "-netdev",
            "tap,id=mq,queues=3,ifname=mq0",
            "-net",
            "tap",
            "-drive",
            "file=/img/d,if=virtio",
            "-append",
            "-netdev tap,ifname=nope",
        ],
    );
    let t = |ifname: &str, multi_queue, queue, fd, set| HandedTap {
        ifname: ifname.to_string(),
        multi_queue,
        queue,
        fd,
        set,
    };
    // Numbered with the files, in command-line order.
    assert_eq!(
        p.taps,
        [
            t("tap0", false, 0, 4, 1),
            t("t,1", false, 0, 5, 2),
            t("mq0", true, 0, 6, 3),
            t("mq0", true, 1, 7, 4),
            t("mq0", true, 2, 8, 5),
            // No name: the kernel picks one.
            t("", false, 0, 9, 6),
        ]
    );
    assert_eq!(p.files.len(), 2);
    assert_eq!((p.files[1].fd, p.files[1].set), (10, 7));
    assert_eq!(
        p.argv,
        s(&[
            "casemate",
            "-add-fd",
            "fd=3,set=0,opaque=kernel",
            "-add-fd",
            "fd=10,set=7,opaque=drive",
            "-add-fd",
            "fd=4,set=1,opaque=tap",
            "-add-fd",
            "fd=5,set=2,opaque=tap",
            "-add-fd",
            "fd=6,set=3,opaque=tap",
            "-add-fd",
            "fd=7,set=4,opaque=tap",
            "-add-fd",
            "fd=8,set=5,opaque=tap",
            "-add-fd",
            "fd=9,set=6,opaque=tap",
            "-kernel",
            "/dev/fdset/0",
            "-netdev",
            "tap,id=n0,script=no,downscript=no,vhost=off,fd=4",
            "-nic",
            "tap,model=virtio-net-pci,fd=5",
            "-netdev",
            "tap,id=mq,fds=6:7:8",
            "-net",
            "tap,fd=9",
            "-drive",
            "file=/dev/fdset/7,if=virtio",
            "-append",
            "-netdev tap,ifname=nope",
        ])
    );
    assert!(!p
        .devices
        .iter()
        .any(|d| d.jail == Path::new("/dev/net/tun")));
}

#[test]
fn tap_options_the_jailer_leaves_to_the_vmm() {
    let r = rewrite_args(&s(&["-netdev", "tap,id=n0,ifname=t,queues=0x2"])).unwrap();
    assert_eq!(r.taps.len(), 2, "hex queues=");
    assert_eq!(r.args, s(&["-netdev", "tap,id=n0,fds=3:4"]));
    for v in [
        "tap,id=n0,fd=7",
        "tap,id=n0,fds=7:8",
        "tap,id=n0,ifname=t,queues=x",
        "tap,id=n0,ifname=t,queues=128",
        "user,id=n0",
        "bridge,id=n0,br=br0",
    ] {
        let r = rewrite_args(&s(&["-netdev", v])).unwrap();
        assert!(r.taps.is_empty(), "{v}");
        assert_eq!(r.args, s(&["-netdev", v]), "{v}");
    }
}

#[test]
fn snapshot_drives_are_opened_read_only() {
    let access = |a: &[&str]| -> Vec<Access> {
        rewrite_args(&s(a))
            .unwrap()
            .files
            .iter()
            .map(|f| f.access)
            .collect()
    };
    assert_eq!(
        access(&["-drive", "file=a,snapshot=on", "-drive", "file=b"]),
        [Access::ReadOnly, Access::ReadWrite]
    );
    // -snapshot anywhere (even after the drives) covers every drive, as
    // the VMM applies it (snapshot=off does not opt out); as an -append
    // word it is no option.
    assert_eq!(
        access(&[
            "-drive",
            "file=a",
            "-object",
            "rng-random,id=r,filename=/r",
            "-drive",
            "file=b,snapshot=off",
            "-snapshot"
        ]),
        [Access::ReadOnly, Access::ReadOnly, Access::ReadOnly]
    );
    assert_eq!(
        access(&["-append", "-snapshot", "-drive", "file=a"]),
        [Access::ReadWrite]
    );
}

#[test]
fn last_handed_fd_covers_files_and_taps() {
    assert_eq!(plan(&[], &["-M", "microvm"]).last_handed_fd(), 2);
    let p = plan(
        &[],
        &["-netdev", "tap,id=n,ifname=t,queues=2", "-kernel", "/k"],
    );
    assert_eq!(p.last_handed_fd(), 5);
}

/// A qcow2 drive's backing chain is handed over after every other file
/// and tap, each level read-only as one more `-add-fd`, and named in the
/// drive by QEMU's nested `backing.file.filename=`; only `format=qcow2`
/// drives are walked (never a probed one), and not one with its own
/// `backing.` keys.
#[test]
fn backing_chains_are_handed_over_with_their_drive() {
    use crate::chain::Backing;
    let mut p = plan(
        &[],
        &[
            "-drive",
            "file=/img/top.qcow2,if=virtio,format=qcow2",
            "-kernel",
            "/k",
            "-netdev",
            "tap,id=n0,ifname=t0",
            "-drive",
            "file=/img/b.raw,format=raw",
            "-drive",
            "file=/img/probed.img",
            "-drive",
            "file=/img/own.qcow2,format=qcow2,backing.file.filename=/x",
        ],
    );
    let before = p.files.len() + p.taps.len();
    assert_eq!(before, 6);
    p.hand_backing_chains(|image: &Path| {
        assert_eq!(
            image,
            Path::new("/img/top.qcow2"),
            "only the qcow2 is walked"
        );
        Ok(vec![
            Backing {
                path: "/img/mid.qcow2".into(),
                format: Some("qcow2"),
            },
            Backing {
                path: "/img/base.img".into(),
                format: None,
            },
        ])
    })
    .unwrap();
    let handed: Vec<_> = p.files.iter().filter(|f| f.option == "backing").collect();
    assert_eq!(
        handed,
        [
            &HandedFile {
                host: "/img/mid.qcow2".into(),
                access: Access::ReadOnly,
                fd: 9,
                set: 6,
                option: "backing",
            },
            &HandedFile {
                host: "/img/base.img".into(),
                access: Access::ReadOnly,
                fd: 10,
                set: 7,
                option: "backing",
            },
        ]
    );
    assert_eq!(p.last_handed_fd(), 10);
    assert_eq!(
        &p.argv[1..5],
        s(&[
            "-add-fd",
            "fd=9,set=6,opaque=backing",
            "-add-fd",
            "fd=10,set=7,opaque=backing"
        ])
    );
    assert!(p.argv.contains(
        &"file=/dev/fdset/0,if=virtio,format=qcow2,backing.file.filename=/dev/fdset/6,\
          backing.driver=qcow2,backing.backing.file.filename=/dev/fdset/7"
            .to_string()
    ));
    assert!(p.argv.contains(&"file=/dev/fdset/3,format=raw".to_string()));
    assert!(p.argv.contains(&"file=/dev/fdset/4".to_string()));

    let mut p = plan(&[], &["-drive", "file=/img/loop.qcow2,format=qcow2"]);
    let e = p
        .hand_backing_chains(|_: &Path| Err("the chain loops back to /img/loop.qcow2".into()))
        .unwrap_err();
    assert!(
        e.to_string().contains("/img/loop.qcow2") && e.to_string().contains("loops"),
        "{e}"
    );
}
