//! virtio-net over a tap, driven from inside the probe guest (`probe=net`)
//! on microvm (virtio-mmio), pc and q35 (virtio-pci). Every test makes its
//! own network namespace (`cm-test-<pid>-<n>`) with a tap in it, gives the
//! host side 10.0.2.2/24 there only, runs casemate inside it and always
//! deletes it (a Drop guard): no frame leaves the namespace.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use casemate_tests::netns::{finish, open_tap0, ping, udp_echoes, NetNs};
use casemate_tests::{qemu_or_skip, qemu_probe, Report, Scratch};

const GUEST: [u8; 4] = [10, 0, 2, 15];
const GUEST_MAC: &str = "52:54:00:12:34:56";

fn nic(machine: &str) -> (&'static str, &'static str) {
    if machine == "microvm" {
        ("mmio", "virtio-net-device,netdev=n0")
    } else {
        ("pci", "virtio-net-pci,netdev=n0")
    }
}

macro_rules! on_machines {
    ($scenario:ident: $($machine:ident),+) => {
        mod $scenario {
            $(
                #[test]
                fn $machine() {
                    super::$scenario(stringify!($machine));
                }
            )+
        }
    };
}

on_machines!(host_pings_guest_and_gets_udp_echoes: microvm, pc, q35);
on_machines!(with_event_idx_pings_and_udp_work_too: microvm, q35);

fn host_pings_guest_and_gets_udp_echoes(machine: &str) {
    pings_and_echoes(machine, "probe=net ms=5000", "0");
}

/// The probe negotiating VIRTIO_RING_F_EVENT_IDX: it then notifies only
/// past the device's `avail_event`, so a device that forgot to write it
/// would stop receiving the probe's transmits and refills.
fn with_event_idx_pings_and_udp_work_too(machine: &str) {
    pings_and_echoes(machine, "probe=net ms=5000 event_idx=1", "1");
}

fn pings_and_echoes(machine: &str, append: &str, event_idx: &str) {
    let test = format!("{append} on {machine}");
    let Some(ns) = NetNs::with_tap(&test) else {
        return;
    };
    let (transport, device) = nic(machine);
    let child = ns.casemate(&[
        "-M",
        machine,
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off",
        "-device",
        device,
        "-append",
        append,
    ]);
    let (udp, pings) = ns.enter(|| {
        let udp = udp_echoes(GUEST, 4, Duration::from_secs(4));
        let pings = (1..=3).filter(|&s| ping(GUEST, s)).count();
        (udp, pings)
    });
    let out = finish(child, Duration::from_secs(30));
    let r = Report::parse(&String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}\n{}",
        r.raw,
        String::from_utf8_lossy(&out.stderr)
    );
    r.assert_ok();
    assert_eq!((udp, pings), (4, 3), "{}", r.raw);
    assert_eq!(r.want("transport"), transport, "{}", r.raw);
    assert_eq!(r.want("mac"), GUEST_MAC, "{}", r.raw);
    assert_eq!(r.want("event_idx"), event_idx, "{}", r.raw);
    let n = |k: &str| r.want(k).parse::<u64>().unwrap();
    assert!(n("udp") >= 5 && n("icmp") == 3, "{}", r.raw);
    assert!(n("tx") >= n("udp") + n("icmp"), "{}", r.raw);
}

#[test]
fn inherited_tap_fd_with_the_legacy_net_pair() {
    let Some(ns) = NetNs::with_tap("inherited_tap_fd_with_the_legacy_net_pair") else {
        return;
    };
    let tap = ns.enter(open_tap0);
    let fd = tap.as_raw_fd().to_string();
    let child = ns.casemate_with_fd(
        &[
            "-net",
            "nic,model=virtio,macaddr=52:54:00:00:00:07",
            "-net",
            &format!("tap,fd={fd}"),
            "-append",
            "probe=net ms=3000",
        ],
        Some(tap.as_raw_fd()),
    );
    let udp = ns.enter(|| udp_echoes(GUEST, 2, Duration::from_secs(4)));
    let out = finish(child, Duration::from_secs(30));
    let r = Report::parse(&String::from_utf8_lossy(&out.stdout));
    r.assert_ok();
    assert_eq!(udp, 2);
    assert_eq!(r.want("mac"), "52:54:00:00:00:07", "{}", r.raw);
}

/// The same probe and tap set-up under QEMU 7.2 (the reference): the
/// host's pings and UDP get answered on microvm (modern virtio-mmio) and
/// q35 (transitional virtio-net-pci).
#[test]
fn probe_net_passes_under_qemu() {
    if !qemu_or_skip("probe_net_passes_under_qemu") {
        return;
    }
    let scratch = Scratch::new("net-qemu");
    let probe = scratch.probe();
    let mmio: &[&str] = &[
        "-global",
        "virtio-mmio.force-legacy=false",
        "-device",
        "virtio-net-device,netdev=n0",
    ];
    let cases: [(&str, &[&str], &str, &str); 3] = [
        ("microvm", mmio, "mmio", "probe=net ms=4000"),
        ("microvm", mmio, "mmio", "probe=net ms=4000 event_idx=1"),
        (
            "q35",
            &["-device", "virtio-net-pci,netdev=n0"],
            "pci",
            "probe=net ms=4000",
        ),
    ];
    for (machine, device, transport, append) in cases {
        let Some(ns) = NetNs::with_tap("probe_net_passes_under_qemu") else {
            return;
        };
        let q = qemu_probe(machine, &probe, "1", append);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(q.get_program())
            .args(q.get_args())
            .args([
                "-netdev",
                "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off",
            ])
            .args(device)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning qemu in the namespace");
        let (udp, pings) = ns.enter(|| {
            // SeaBIOS takes seconds on q35 here before the probe starts.
            let udp = udp_echoes(GUEST, 2, Duration::from_secs(20));
            (udp, (1..=2).filter(|&s| ping(GUEST, s)).count())
        });
        let out = finish(child, Duration::from_secs(60));
        let r = Report::parse(&String::from_utf8_lossy(&out.stdout));
        r.assert_ok();
        assert_eq!((udp, pings), (2, 2), "{}", r.raw);
        assert_eq!(r.want("transport"), transport, "{}", r.raw);
        let event_idx = if append.contains("event_idx=1") {
            "1"
        } else {
            "0"
        };
        assert_eq!(r.want("event_idx"), event_idx, "{}", r.raw);
        assert_eq!(out.status.code(), Some(1), "isa-debug-exit ok: {}", r.raw);
    }
}

on_machines!(hostile_chains_fail_alone_and_traffic_still_works: microvm, q35);

/// `probe=net-evil`: malformed chains on both queues (outside RAM, the
/// wrong direction, shorter than the header, loops) each come back empty
/// with a logged warning; the VMM keeps running and the exchange after
/// them works.
fn hostile_chains_fail_alone_and_traffic_still_works(machine: &str) {
    let test = format!("hostile_chains_fail_alone_and_traffic_still_works on {machine}");
    let Some(ns) = NetNs::with_tap(&test) else {
        return;
    };
    let (_, device) = nic(machine);
    let child = ns.casemate(&[
        "-M",
        machine,
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device",
        device,
        "-append",
        "probe=net-evil ms=3000",
    ]);
    let udp = ns.enter(|| udp_echoes(GUEST, 2, Duration::from_secs(6)));
    let out = finish(child, Duration::from_secs(30));
    let r = Report::parse(&String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", r.raw);
    r.assert_ok();
    let cases: Vec<_> = r.lines.iter().filter(|l| l.contains_key("case")).collect();
    assert_eq!(cases.len(), 8, "{}", r.raw);
    for c in cases {
        assert_eq!(
            c.get("result").map(String::as_str),
            Some("returned"),
            "{c:?}"
        );
        assert_eq!(c.get("len").map(String::as_str), Some("0"), "{c:?}");
    }
    assert_eq!(udp, 2);
    assert!(stderr.contains("malformed transmit chain"), "{stderr}");
    assert!(stderr.contains("malformed receive chain"), "{stderr}");
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// utime + stime (clock ticks) of the thread named `comm`, if it exists.
fn thread_ticks(pid: u32, comm: &str) -> Option<u64> {
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let dir = t.ok()?.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if name.trim_end() == comm {
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            let after = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = after.split_whitespace().collect();
            return Some(f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?);
        }
    }
    None
}

#[test]
fn flood_without_receive_buffers_keeps_vmm_memory_flat() {
    let Some(ns) = NetNs::with_tap("flood_without_receive_buffers_keeps_vmm_memory_flat") else {
        return;
    };
    // The guest never answers ARP (it posts no receive buffers).
    ns.ip(&[
        "neigh",
        "add",
        "10.0.2.15",
        "lladdr",
        GUEST_MAC,
        "dev",
        "tap0",
    ]);
    let child = ns.casemate(&[
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device",
        "virtio-net-device,netdev=n0",
        "-append",
        "probe=net rx=0 ms=6000",
    ]);
    let pid = child.id();
    let start = Instant::now();
    let ticks_before = loop {
        if let Some(t) = thread_ticks(pid, "cm-net0") {
            break t;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no cm-net0 thread"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let rss_before = rss_kib(pid);
    let sent = ns.enter(|| {
        let s = UdpSocket::bind("10.0.2.2:0").unwrap();
        let frame = [0x5au8; 1400];
        let mut sent = 0u64;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(2) {
            if s.send_to(&frame, "10.0.2.15:9").is_ok() {
                sent += 1;
            }
        }
        sent
    });
    let rss_after = rss_kib(pid);
    let ticks = thread_ticks(pid, "cm-net0").unwrap() - ticks_before;
    let dropped = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "cat",
            "/sys/class/net/tap0/statistics/tx_dropped",
        ])
        .output()
        .unwrap();
    let dropped: u64 = String::from_utf8_lossy(&dropped.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let out = finish(child, Duration::from_secs(30));
    let r = Report::parse(&String::from_utf8_lossy(&out.stdout));
    r.assert_ok();
    println!(
        "flood: sent {sent} frames ({} MiB), tap dropped {dropped}, VMM RSS {rss_before} -> {rss_after} KiB, cm-net0 used {ticks} ticks",
        (sent * 1400) >> 20
    );
    assert!(
        sent > 10_000,
        "the flood was too small to mean anything: {sent}"
    );
    assert!(dropped > 0, "the tap's queue should have overflowed");
    assert!(
        rss_after < rss_before + 2048,
        "VMM RSS grew from {rss_before} to {rss_after} KiB under the flood"
    );
    assert!(
        ticks < 20,
        "cm-net0 spun while the guest had no buffers: {ticks} ticks"
    );
    assert_eq!(r.want("rx"), "0", "{}", r.raw);
}

/// The tap is deleted under a running VM: the worker logs the error and
/// stops reading the dead fd (no busy loop), the VMM keeps running and
/// the guest finishes normally.
#[test]
fn tap_deleted_under_a_running_vm() {
    let Some(ns) = NetNs::with_tap("tap_deleted_under_a_running_vm") else {
        return;
    };
    let child = ns.casemate(&[
        "-netdev",
        "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device",
        "virtio-net-device,netdev=n0",
        "-append",
        "probe=net ms=4000",
    ]);
    let pid = child.id();
    assert_eq!(ns.enter(|| udp_echoes(GUEST, 1, Duration::from_secs(4))), 1);
    let before = thread_ticks(pid, "cm-net0").expect("cm-net0");
    ns.ip(&["link", "del", "tap0"]);
    std::thread::sleep(Duration::from_secs(1));
    let ticks = thread_ticks(pid, "cm-net0").expect("cm-net0 still there") - before;
    let out = finish(child, Duration::from_secs(30));
    let r = Report::parse(&String::from_utf8_lossy(&out.stdout));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stderr}", r.raw);
    r.assert_ok();
    assert!(ticks < 20, "cm-net0 spun on the dead tap: {ticks} ticks");
    assert!(stderr.contains("tap0: receiving a frame"), "{stderr}");
}

#[test]
fn vhost_on_is_refused_with_the_reason() {
    let out = casemate_tests::casemate(&[
        "-netdev",
        "tap,id=n0,ifname=t0,vhost=on",
        "-device",
        "virtio-net-pci,netdev=n0",
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("vhost"), "{e}");
}

/// `host_mtu=9000` on a tap Casemate creates: the guest reads MTU 9000
/// from the device (VIRTIO_NET_F_MTU) and the new tap has MTU 9000 while
/// the VM runs (the first report line shows the device is up; the tap
/// goes away with the VMM).
#[test]
fn host_mtu_reaches_the_guest_and_the_tap_casemate_creates() {
    use std::io::{BufRead, BufReader, Read};
    let Some(ns) = NetNs::new("host_mtu_reaches_the_guest_and_the_tap_casemate_creates") else {
        return;
    };
    let mut child = ns.casemate(&[
        "-netdev",
        "tap,id=n0,ifname=cmmtu0,script=no,downscript=no",
        "-device",
        "virtio-net-device,netdev=n0,host_mtu=9000",
        "-append",
        "probe=net rx=0 ms=3000",
    ]);
    let dog = casemate_tests::Watchdog::arm(child.id(), Duration::from_secs(30));
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut console = String::new();
    let mut line = String::new();
    while out.read_line(&mut line).unwrap() > 0 {
        console.push_str(&line);
        if line.starts_with("probe: net transport=") {
            break;
        }
        line.clear();
    }
    let link = Command::new("ip")
        .args(["-n", &ns.name, "-o", "link", "show", "cmmtu0"])
        .output()
        .expect("ip link show");
    let link = String::from_utf8_lossy(&link.stdout).to_string();
    out.read_to_string(&mut console).unwrap();
    let status = child.wait().unwrap();
    assert!(!dog.disarm(), "casemate ran past 30 s:\n{console}");
    assert!(status.success(), "{console}");
    let r = Report::parse(&console);
    r.assert_ok();
    assert_eq!(r.want("mtu"), "9000", "{console}");
    assert!(link.contains(" mtu 9000 "), "tap while running: {link}");
}

/// An MTU outside 68..=65535 is refused on the command line, naming it.
#[test]
fn host_mtu_out_of_range_is_refused() {
    for bad in ["67", "65536"] {
        let out = casemate_tests::casemate(&[
            "-netdev",
            "tap,id=n0,ifname=tapx",
            "-device",
            &format!("virtio-net-device,netdev=n0,host_mtu={bad}"),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad}");
        assert!(
            err.contains("host_mtu= must be a number in 68..=65535"),
            "{bad}: {err}"
        );
    }
}

/// `probe=net-bench` (what tools/netbench times) works both ways: `tx`
/// sends frames, `tso` its 64 KiB GSO frame; `rx` counts the datagrams the host keeps sending to the
/// guest's MAC (a static neighbour entry: the bench mode answers no ARP).
/// Only that frames moved is checked; the rates are the benchmark's.
#[test]
fn net_bench_probe_moves_frames_both_ways() {
    let Some(ns) = NetNs::with_tap("net_bench_probe_moves_frames_both_ways") else {
        return;
    };
    ns.ip(&[
        "neigh",
        "add",
        "10.0.2.15",
        "lladdr",
        GUEST_MAC,
        "dev",
        "tap0",
    ]);
    for dir in ["tx", "rx", "tso"] {
        let child = ns.casemate(&[
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off",
            "-device",
            "virtio-net-device,netdev=n0",
            "-append",
            &format!("probe=net-bench dir={dir} size=1000 ms=300 event_idx=1"),
        ]);
        let pid = child.id();
        let sender = (dir == "rx").then(|| {
            ns.spawn_in(move || {
                let s = UdpSocket::bind("10.0.2.2:0").unwrap();
                let payload = [0x5au8; 958];
                // Until the VMM is gone (kill(pid, 0) fails).
                // SAFETY: signal 0 only checks that the process exists.
                while unsafe { libc::kill(pid as i32, 0) } == 0 {
                    let _ = s.send_to(&payload, "10.0.2.15:9");
                }
            })
        });
        let out = finish(child, Duration::from_secs(30));
        if let Some(s) = sender {
            s.join().unwrap();
        }
        let r = Report::parse(&String::from_utf8_lossy(&out.stdout));
        r.assert_ok();
        let n = |k: &str| r.want(k).parse::<u64>().unwrap();
        assert_eq!(r.want("dir"), dir, "{}", r.raw);
        assert!(n("frames") > 0 && n("fps") > 0, "{}", r.raw);
    }
}

/// The same probe mode under QEMU 7.2 (the reference the benchmark
/// compares with): tx and the TSO frame both leave through the tap.
#[test]
fn net_bench_probe_passes_under_qemu() {
    if !qemu_or_skip("net_bench_probe_passes_under_qemu") {
        return;
    }
    let scratch = Scratch::new("net-bench-qemu");
    let probe = scratch.probe();
    for dir in ["tx", "tso"] {
        let Some(ns) = NetNs::with_tap("net_bench_probe_passes_under_qemu") else {
            return;
        };
        let append = format!("probe=net-bench dir={dir} ms=300 event_idx=1");
        let q = qemu_probe("microvm", &probe, "1", &append);
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(q.get_program())
            .args(q.get_args())
            .args(["-global", "virtio-mmio.force-legacy=false"])
            .args([
                "-netdev",
                "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off",
            ])
            .args(["-device", "virtio-net-device,netdev=n0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning qemu in the namespace");
        let out = finish(child, Duration::from_secs(60));
        let r = Report::parse(&String::from_utf8_lossy(&out.stdout));
        r.assert_ok();
        assert_eq!(r.want("dir"), dir, "{}", r.raw);
        assert!(r.want("frames").parse::<u64>().unwrap() > 0, "{}", r.raw);
    }
}
