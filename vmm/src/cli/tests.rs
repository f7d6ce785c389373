//! The command line's parser, option by option, and whole QEMU lines.

use super::*;
use crate::config::CacheConfig;

fn run(args: &[&str]) -> Result<VmConfig, CliError> {
    match parse(args.iter().map(|s| s.to_string()))? {
        Command::Run { config, .. } => Ok(*config),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn qemu_style_line() {
    let c = run(&[
        "-M",
        "microvm,accel=kvm",
        "-enable-kvm",
        "-cpu",
        "host",
        "-smp",
        "2",
        "-m",
        "1G",
        "-kernel",
        "/k",
        "-append",
        "console=ttyS0 a=b",
        "-nographic",
        "-no-reboot",
        "-serial",
        "file:/tmp/x",
    ])
    .unwrap();
    assert_eq!(c.memory, 1 << 30);
    assert_eq!(c.smp.cpus, 2);
    assert_eq!((c.smp.sockets, c.smp.cores, c.smp.threads), (1, 2, 1));
    assert_eq!(c.append, "console=ttyS0 a=b");
    assert!(c.no_reboot);
    assert_eq!(c.serial, SerialConfig::File("/tmp/x".into()));
    assert!(c.acpi_on(), "ACPI tables by default, as QEMU's microvm");
}

#[test]
fn sizes() {
    assert_eq!(parse_size("64", 20), Some(64 << 20));
    assert_eq!(parse_size("5G", 20), Some(5 << 30));
    assert_eq!(parse_size("1.5G", 20), Some(3 << 29));
    assert_eq!(parse_size("512MiB", 20), Some(512 << 20));
    assert_eq!(parse_size("1T", 20), Some(1 << 40));
    assert_eq!(parse_size("0", 20), Some(0));
    assert_eq!(parse_size("12Q", 20), None);
    assert_eq!(parse_size("G", 20), None);
    assert_eq!(parse_size("99999999999999999999T", 20), None);
    assert_eq!(run(&["-m", "size=256M"]).unwrap().memory, 256 << 20);
    assert!(matches!(
        run(&["-m", "1G,maxmem=4G"]),
        Err(CliError::BadValue { .. })
    ));
}

#[test]
fn smp_topologies() {
    let s = run(&["-smp", "cpus=4,sockets=2,threads=2"]).unwrap().smp;
    assert_eq!((s.cpus, s.sockets, s.cores, s.threads), (4, 2, 1, 2));
    let s = run(&["-smp", "sockets=2,cores=2"]).unwrap().smp;
    assert_eq!(s.cpus, 4);
    assert!(run(&["-smp", "2,maxcpus=4"]).is_err());
    assert!(run(&["-smp", "two"]).is_err());
    assert_eq!(
        run(&["-smp", "0"]).unwrap().smp.cpus,
        0,
        "validate() rejects it"
    );
}

#[test]
fn rejections_name_the_option() {
    let e = run(&["-frobnicate"]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown option '-frobnicate' (see casemate --help)"
    );
    let e = run(&["-netdev", "vhost-user,id=n"]).unwrap_err();
    assert!(e.to_string().contains("only tap, bridge and user"), "{e}");
    assert_eq!(
        run(&["-m"]).unwrap_err(),
        CliError::MissingValue("-m".into())
    );
    assert!(run(&["-M", "microvm,x-option-roms=off"]).is_err());
    assert!(run(&["-cpu", "host,+avx"]).is_err());
    assert!(run(&["-serial", "tcp:1"]).is_err());
    assert!(run(&["stray"]).is_err());
}

#[test]
fn drives_pair_with_devices() {
    let c = run(&[
        "-drive",
        "file=/a.raw,format=raw,if=virtio,cache=none",
        "-snapshot",
    ])
    .unwrap();
    assert_eq!(c.drives.len(), 1);
    let d = &c.drives[0];
    assert_eq!(
        (d.cache, d.snapshot, d.read_only),
        (CacheConfig::None, true, false)
    );
    let c = run(&[
        "-drive",
        "file=/b.qcow2,if=none,id=d1,readonly=on",
        "-device",
        "virtio-blk-device,drive=d1,num-queues=4",
    ])
    .unwrap();
    assert_eq!((c.drives[0].num_queues, c.drives[0].read_only), (4, true));
    assert!(
        run(&["-drive", "file=/b,if=none,id=x"]).is_err(),
        "unused if=none drive"
    );
    assert!(run(&["-device", "virtio-blk-device,drive=nope"]).is_err());
    assert!(run(&["-drive", "file=/a,cache=sometimes"]).is_err());
    assert!(run(&["-drive", "if=virtio"]).is_err(), "no file");
    let c = run(&[
        "-M",
        "q35",
        "-drive",
        "file=/a,if=none,id=d",
        "-device",
        "virtio-blk-pci,drive=d",
    ])
    .unwrap();
    assert_eq!(c.drives[0].transport, Some(Transport::Pci));
    let e = run(&["-device", "virtio-net-pci"]).unwrap_err();
    assert!(e.to_string().contains("virtio-net-pci"), "{e}");
}

#[test]
fn iothreads_set_a_devices_polling() {
    let line = |obj: &str, dev: &str| {
        run(&[
            "-object",
            obj,
            "-drive",
            "file=/a,if=none,id=d",
            "-device",
            dev,
        ])
    };
    let c = line(
        "iothread,id=io0,poll-max-ns=0",
        "virtio-blk-pci,drive=d,iothread=io0",
    )
    .unwrap();
    assert_eq!(c.drives[0].poll_max_ns, Some(0));
    let c = line("iothread,id=io0", "virtio-blk-pci,drive=d,iothread=io0").unwrap();
    assert_eq!(c.drives[0].poll_max_ns, Some(32_768), "QEMU's default");
    let c = line("iothread,id=io0", "virtio-blk-pci,drive=d").unwrap();
    assert_eq!(
        c.drives[0].poll_max_ns, None,
        "no iothread= keeps the default"
    );
    for (obj, dev, says) in [
        (
            "iothread,id=io0",
            "virtio-blk-pci,drive=d,iothread=io1",
            "names no -object iothread",
        ),
        (
            "rng-builtin,id=io0",
            "virtio-blk-pci,drive=d,iothread=io0",
            "not an iothread",
        ),
        (
            "iothread,id=io0,poll-max-ns=-1",
            "virtio-blk-pci,drive=d,iothread=io0",
            "poll-max-ns",
        ),
        (
            "iothread,id=io0,poll-grow=2",
            "virtio-blk-pci,drive=d",
            "poll-grow",
        ),
        ("iothread", "virtio-blk-pci,drive=d", "id= is required"),
    ] {
        let e = line(obj, dev).unwrap_err().to_string();
        assert!(e.contains(says), "{obj} {dev}: {e}");
    }
}

#[test]
fn rng_devices_and_their_backends() {
    let c = run(&[
        "-device",
        "virtio-rng-pci,rng=r0,max-bytes=1024,period=500",
        "-object",
        "rng-random,id=r0,filename=/dev/random",
        "-M",
        "q35",
    ])
    .unwrap();
    let want = crate::config::RngConfig {
        id: "r0".into(),
        backend: crate::config::RngBackendConfig::Random {
            filename: "/dev/random".into(),
        },
        max_bytes: Some(1024),
        period_ms: 500,
        transport: Some(Transport::Pci),
    };
    assert_eq!(c.devices, vec![crate::config::DeviceConfig::Rng(want)]);
    let c = run(&["-device", "virtio-rng-device"]).unwrap();
    assert!(matches!(
        &c.devices[0],
        crate::config::DeviceConfig::Rng(r)
            if r.backend == crate::config::RngBackendConfig::Builtin
    ));
    let e = run(&["-device", "virtio-rng-pci,rng=nope"]).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let e = run(&["-object", "rng-random,id=a", "-object", "rng-builtin,id=a"]).unwrap_err();
    assert!(e.to_string().contains("Duplicate ID"), "{e}");
    let e = run(&["-device", "virtio-rng-pci,max-bytes=lots"]).unwrap_err();
    assert!(e.to_string().contains("max-bytes"), "{e}");
}

#[test]
fn add_fd_sets() {
    let c = run(&[
        "-add-fd",
        "fd=5,set=2,opaque=disk",
        "-drive",
        "file=/dev/fdset/2",
    ])
    .unwrap();
    assert_eq!(
        c.fdsets,
        vec![crate::config::FdSetConfig {
            fd: 5,
            set: 2,
            opaque: Some("disk".into())
        }]
    );
    for bad in ["fd=1,set=0", "set=0", "fd=4", "fd=x,set=1"] {
        assert!(run(&["-add-fd", bad]).is_err(), "{bad}");
    }
}

#[test]
fn machine_acpi_switch() {
    assert!(!run(&["-M", "isapc"]).unwrap().acpi_on(), "isapc has none");
    assert!(!run(&["-M", "microvm,acpi=off"]).unwrap().acpi_on());
    assert!(run(&["-M", "microvm,acpi=auto"]).unwrap().acpi_on());
    // A later -machine without acpi= keeps the earlier choice.
    assert!(!run(&["-M", "acpi=off", "-M", "microvm"]).unwrap().acpi_on());
    let e = run(&["-M", "microvm,acpi=maybe"]).unwrap_err().to_string();
    assert!(e.contains("acpi") && e.contains("maybe"), "{e}");
}

#[test]
fn memory_backends() {
    let c = run(&[
        "-m",
        "1G",
        "-object",
        "memory-backend-memfd,id=m0,size=1G,prealloc=on,prealloc-threads=2,hugetlb=on,hugetlbsize=2M,dump=off",
        "-machine",
        "microvm,memory-backend=m0",
        "-overcommit",
        "mem-lock=on",
        "--thp",
        "off",
    ])
    .unwrap();
    let b = c.memory_backend.unwrap();
    assert_eq!(
        (b.kind, b.size, b.id.as_str()),
        (BackendKind::Memfd, 1 << 30, "m0")
    );
    assert!(b.prealloc && b.share && b.hugetlb && !b.dump && b.merge);
    assert_eq!(
        (b.prealloc_threads, b.hugetlbsize),
        (Some(2), Some(2 << 20))
    );
    assert!(c.mem_lock && !c.thp);
    let c = run(&[
        "-object",
        "memory-backend-file,id=f,size=512M,mem-path=/dev/shm/x,share=on",
        "-M",
        "memory-backend=f",
    ])
    .unwrap();
    assert_eq!(c.memory, 512 << 20, "no -m: RAM is the backend's size");
    assert_eq!(
        c.memory_backend.unwrap().mem_path.unwrap().to_str(),
        Some("/dev/shm/x")
    );
    let ram = run(&[
        "-object",
        "memory-backend-ram,id=r,size=64M",
        "-M",
        "memory-backend=r",
    ]);
    assert!(!ram.unwrap().memory_backend.unwrap().share);
}

#[test]
fn memory_backend_mistakes_are_named() {
    let e = run(&["-object", "secret,id=r"]).unwrap_err().to_string();
    assert!(
        e.contains("-object secret") && e.contains("memory-backend"),
        "{e}"
    );
    let e = run(&["-object", "memory-backend-ram,id=r,size=1G,hugetlb=on"]).unwrap_err();
    assert_eq!(
        e,
        CliError::BadKey {
            opt: "-object".into(),
            key: "hugetlb".into()
        }
    );
    assert!(
        run(&["-object", "memory-backend-ram,id=r"]).is_err(),
        "size needed"
    );
    assert!(
        run(&["-object", "memory-backend-ram,id=r,size=1G"]).is_ok(),
        "unused: accepted with a note, as QEMU accepts it"
    );
    assert!(run(&["-M", "memory-backend=zz"]).is_err(), "unknown id");
    assert!(run(&["-overcommit", "mem-lock=maybe"]).is_err());
    assert!(run(&["-object", "memory-backend-ram,id=r,size=1G,prealloc=2"]).is_err());
}

#[test]
fn rtc_bases() {
    assert_eq!(
        run(&["-rtc", "base=localtime"]).unwrap().rtc,
        RtcConfig::Localtime
    );
    assert_eq!(
        run(&["-rtc", "base=2000-02-29T12:34:56"]).unwrap().rtc,
        RtcConfig::At(951_827_696)
    );
    assert!(run(&["-rtc", "base=2001-02-29"]).is_err());
}

#[test]
fn config_file_excludes_vm_options() {
    let p = parse(["--config".into(), "/x.json".into()]).unwrap();
    assert!(matches!(p, Command::RunConfigFile { .. }));
    let e = parse(["--config".into(), "/x".into(), "-m".into(), "1G".into()]).unwrap_err();
    assert!(matches!(e, CliError::ConfigPlusOptions(_)));
}

#[test]
fn nodefaults_drops_the_serial_unless_asked() {
    assert_eq!(run(&["-nodefaults"]).unwrap().serial, SerialConfig::None);
    assert_eq!(
        run(&["-nodefaults", "-serial", "stdio"]).unwrap().serial,
        SerialConfig::Stdio
    );
}

fn notes(args: &[&str]) -> Vec<String> {
    match parse(args.iter().map(|s| s.to_string())).unwrap() {
        Command::Run { notes, .. } => notes,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn every_refusal_of_a_line_is_named_at_once() {
    let line = [
        "-boot",
        "order=c",
        "-usbdevice",
        "tablet",
        "-audiodev",
        "none,id=a",
        "-parallel",
        "none",
        "-global",
        "kvm-pit.lost_tick_policy=delay",
        "-k",
        "en-us",
        "-uuid",
        "5e5e5e5e-0000-0000-0000-000000000000",
        "-m",
        "1G",
        "-frobnicate",
        "-smp",
        "two",
    ];
    let e = run(&line).unwrap_err();
    let CliError::Several(Errors(list)) = &e else {
        panic!("one error only: {e}");
    };
    let text = e.to_string();
    assert_eq!(list.len(), 9, "{text}");
    for opt in [
        "-boot",
        "-usbdevice",
        "-audiodev",
        "-parallel",
        "-global",
        "-k",
        "-uuid",
        "-frobnicate",
        "-smp",
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("'{opt}'")) || l.starts_with(&format!("{opt}:"))),
            "{opt} not named:\n{text}"
        );
    }
    for l in text.lines().filter(|l| !l.contains("-frobnicate")) {
        assert!(!l.contains("unknown option"), "a bare refusal: {l}");
    }
}

#[test]
fn options_that_ask_for_nothing_are_accepted_with_a_note() {
    let n = notes(&[
        "-net",
        "none",
        "-nic",
        "none",
        "-vga",
        "none",
        "-monitor",
        "none",
        "-usb",
        "-M",
        "microvm,usb=off",
        "-no-acpi",
    ]);
    for opt in [
        "-net none",
        "-nic none",
        "-vga none",
        "-monitor none",
        "-usb",
        "-no-acpi",
    ] {
        assert!(n.iter().any(|x| x.starts_with(opt)), "{opt}: {n:?}");
    }
    assert!(run(&["-no-acpi"]).unwrap().acpi_on(), "microvm keeps ACPI");
    assert!(!run(&["-M", "q35", "-no-acpi"]).unwrap().acpi_on());
    assert!(run(&["-net", "user"]).is_err(), "a backend without a NIC");
    let n = notes(&["-object", "memory-backend-ram,id=spare,size=64M"]);
    assert!(
        n.iter()
            .any(|x| x.contains("spare") && x.contains("not used")),
        "{n:?}"
    );
    let c = run(&["-M", "pc-q35-2.10"]).unwrap();
    assert_eq!(c.machine, MachineKind::Q35);
    assert_eq!(
        run(&["-M", "pc-i440fx-7.2"]).unwrap().machine,
        MachineKind::Pc
    );
    assert_eq!(
        run(&["-M", "q35", "-M", "acpi=off"]).unwrap().machine,
        MachineKind::Q35,
        "a -machine without a type keeps the type"
    );
}

#[test]
fn help_lists_exit_without_a_vm() {
    let p = |a: &[&str]| parse(a.iter().map(|s| s.to_string())).unwrap();
    assert!(matches!(p(&["-cpu", "help"]), Command::Print(t) if t.contains("kvm64")));
    assert!(matches!(p(&["-machine", "help"]), Command::Print(t) if t.contains("q35")));
    assert!(matches!(p(&["-M", "?"]), Command::Print(_)));
}

#[test]
fn duplicate_object_ids_and_second_serials_are_named() {
    let e = run(&[
        "-object",
        "memory-backend-ram,id=m,size=64M",
        "-object",
        "memory-backend-memfd,id=m,size=64M",
    ])
    .unwrap_err();
    assert!(e.to_string().contains("Duplicate ID 'm' for object"), "{e}");
    let e = run(&["-serial", "stdio", "-serial", "file:/tmp/x"]).unwrap_err();
    assert!(e.to_string().contains("COM2"), "{e}");
}

#[test]
fn smp_topology_follows_qemu_on_the_command_line_too() {
    let host = crate::config::validate::HostLimits {
        memory: 1 << 34,
        max_vcpus: Some(64),
    };
    let e = run(&["-smp", "cpus=3,sockets=2"])
        .unwrap()
        .validate(&host)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Invalid CPU topology"), "{e}");
    run(&["-smp", "cpus=4,sockets=2"])
        .unwrap()
        .validate(&host)
        .unwrap();
    run(&["-smp", "3"]).unwrap().validate(&host).unwrap();
}

/// QEMU's option names with values from its documentation, shuffled into
/// random lines: the parser never panics, and every refusal names an
/// option of the line.
#[test]
fn fuzzed_qemu_lines_never_panic_and_every_refusal_names_an_option() {
    const OPTS: &[&str] = &[
        "-M",
        "-machine",
        "-cpu",
        "-smp",
        "-m",
        "-kernel",
        "-initrd",
        "-append",
        "-serial",
        "-nographic",
        "-display",
        "-drive",
        "-snapshot",
        "-netdev",
        "-net",
        "-nic",
        "-object",
        "-device",
        "-vga",
        "-monitor",
        "-no-reboot",
        "-rtc",
        "-boot",
        "-usb",
        "-audiodev",
        "-parallel",
        "-global",
        "-no-acpi",
        "-k",
        "-uuid",
        "-enable-kvm",
        "-accel",
        "-name",
        "-nodefaults",
        "-add-fd",
        "-overcommit",
        "-bios",
        "-S",
        "-qmp",
        "-chardev",
        "-hda",
        "--thp",
        "-smbios",
        "-numa",
        "-pidfile",
        "-daemonize",
    ];
    const VALUES: &[&str] = &[
        "",
        "none",
        "help",
        "q35",
        "pc-q35-7.2",
        "microvm,acpi=off",
        "host",
        "Haswell",
        "EPYC-v2",
        "4",
        "cpus=3,sockets=2",
        "sockets=2,cores=2,threads=2",
        "1G",
        "99999999T",
        "stdio",
        "file:/x",
        "file=/a,if=virtio",
        "file=/a,aio=bogus",
        "file=/a,id=d,if=none",
        "virtio-blk-pci,drive=d,num-queues=100000",
        "memory-backend-ram,id=m,size=1G",
        "rng-random,id=r",
        "virtio-rng-pci,rng=r",
        "user,id=n",
        "order=c",
        "base=utc",
        "base=2001-02-29",
        "fd=5,set=1",
        "mem-lock=on",
        "on",
        ",,,",
        "=",
        "a=b=c",
        "kvm",
        "tcg",
        "id=x,,y",
        "-m",
        "--",
        "-",
    ];
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: usize| {
        // xorshift64*: a fixed seed, so a failure reproduces.
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        (rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    };
    for _ in 0..3000 {
        let mut line = Vec::new();
        for _ in 0..next(8) {
            line.push(OPTS[next(OPTS.len())].to_string());
            if next(4) != 0 {
                line.push(VALUES[next(VALUES.len())].to_string());
            }
        }
        let Err(e) = parse(line.clone()) else {
            continue;
        };
        let text = e.to_string();
        for l in text.lines() {
            // Quoted ('-x'), or leading the message (-x: ..., -x TYPE: ...).
            let named = line.iter().any(|w| {
                l.contains(&format!("'{w}'"))
                    || l.contains(&format!("'{w} "))
                    || l.starts_with(&format!("{w}:"))
                    || l.starts_with(&format!("{w} "))
            });
            assert!(named, "{line:?}: a refusal names no option: {l}");
        }
    }
}

#[test]
fn key_value_options_and_json_fill_the_same_types() {
    // One serde path: the CLI's memory backend equals the one --config's
    // JSON gives, sizes written either way.
    let c = run(&[
        "-m",
        "1G",
        "-object",
        "memory-backend-memfd,id=m0,size=1G,prealloc=on,prealloc-threads=2,hugetlb=on,hugetlbsize=2M",
        "-M",
        "memory-backend=m0",
    ])
    .unwrap();
    let json = r#"{"id": "m0", "kind": "memfd", "size": "1G", "prealloc": true,
        "prealloc_threads": 2, "share": true, "hugetlb": true, "hugetlbsize": 2097152}"#;
    let from_json: crate::config::MemoryBackendConfig = serde_json::from_str(json).unwrap();
    assert_eq!(c.memory_backend, Some(from_json));
    let e = run(&["-object", "memory-backend-ram,id=m,size=lots"]).unwrap_err();
    assert!(e.to_string().contains("'lots' is not a size"), "{e}");
    let e = run(&["-smp", "2,sockets=x"]).unwrap_err();
    assert!(e.to_string().contains("'x' is not a whole number"), "{e}");
    let e = run(&["-rtc", "base=utc,drift=1"]).unwrap_err();
    assert!(e.to_string().contains("unknown key `drift`"), "{e}");
}

#[test]
fn serial_goes_to_a_socket_a_pty_or_a_chardev() {
    assert_eq!(run(&["-serial", "pty"]).unwrap().serial, SerialConfig::Pty);
    assert_eq!(
        run(&["-serial", "unix:/tmp/c.sock,server=on,wait=off"])
            .unwrap()
            .serial,
        SerialConfig::Socket(crate::config::Endpoint::Unix("/tmp/c.sock".into()))
    );
    assert_eq!(
        run(&["-serial", "tcp:127.0.0.1:4555,server,nowait"])
            .unwrap()
            .serial,
        SerialConfig::Socket(crate::config::Endpoint::Tcp {
            host: "127.0.0.1".into(),
            port: 4555
        })
    );
    let c = run(&[
        "-nodefaults",
        "-serial",
        "chardev:s0",
        "-chardev",
        "socket,id=s0,path=/tmp/s0,server=on,wait=off",
    ])
    .unwrap();
    assert_eq!(
        c.serial,
        SerialConfig::Socket(crate::config::Endpoint::Unix("/tmp/s0".into()))
    );
    assert!(run(&["-serial", "unix:/tmp/x"]).is_err(), "a client socket");
    assert!(run(&["-serial", "chardev:none"]).is_err());
    assert!(run(&["-serial", "stdio", "-serial", "chardev:x"]).is_err());
}
