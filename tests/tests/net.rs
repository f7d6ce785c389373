//! virtio-net over a tap, driven from inside the probe guest (`probe=net`)
//! on microvm (virtio-mmio), pc and q35 (virtio-pci). Every test makes its
//! own network namespace (`cm-test-<pid>-<n>`) with a tap in it, gives the
//! host side 10.0.2.2/24 there only, runs casemate inside it and always
//! deletes it (a Drop guard): no frame leaves the namespace.

use std::fs::File;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use casemate_tests::{
    bin, have, in_ci, kvm_or_skip, qemu_or_skip, qemu_probe, Report, Scratch, Watchdog,
};

const GUEST: [u8; 4] = [10, 0, 2, 15];
const GUEST_MAC: &str = "52:54:00:12:34:56";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace with tap0 (vnet header, persistent) at 10.0.2.2/24,
/// deleted with everything in it on drop.
struct NetNs {
    name: String,
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    /// None (after saying why) where namespaces or taps cannot be made.
    fn with_tap(test: &str) -> Option<Self> {
        if !kvm_or_skip(test) {
            return None;
        }
        let ok = have("ip") && std::path::Path::new("/dev/net/tun").exists();
        if !ok {
            assert!(!in_ci(), "{test}: needs ip(8) and /dev/net/tun in CI");
            println!("SKIP {test}: needs ip(8) and /dev/net/tun");
            return None;
        }
        let name = format!(
            "cm-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns.ip(&["tuntap", "add", "dev", "tap0", "mode", "tap", "vnet_hdr"]);
        ns.ip(&["addr", "add", "10.0.2.2/24", "dev", "tap0"]);
        ns.ip(&["link", "set", "tap0", "up"]);
        Some(ns)
    }

    fn ip(&self, args: &[&str]) {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    /// `casemate ARGS` inside the namespace.
    fn casemate(&self, args: &[&str]) -> Child {
        self.casemate_with_fd(args, None)
    }

    /// As `casemate`, with `keep` inherited by the VMM (as a launcher
    /// hands a tap over).
    fn casemate_with_fd(&self, args: &[&str], keep: Option<i32>) -> Child {
        let mut c = Command::new("ip");
        if let Some(fd) = keep {
            // SAFETY: the closure only calls fcntl(2), which is
            // async-signal-safe, on a descriptor the parent keeps open.
            unsafe {
                c.pre_exec(move || {
                    if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        c.args(["netns", "exec", &self.name])
            .arg(bin("casemate"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning casemate in the namespace")
    }

    /// Run `f` on a thread that has joined the namespace, so the sockets
    /// it makes live there.
    fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                // SAFETY: setns(2) on an fd we opened; it moves only this
                // thread, which ends when `f` returns.
                let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("namespace thread")
        })
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["-n", &self.name, "link", "del", "tap0"])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Waits for the child under a watchdog.
fn finish(child: Child, limit: Duration) -> Output {
    let dog = Watchdog::arm(child.id(), limit);
    let out = child.wait_with_output().expect("waiting for casemate");
    assert!(!dog.disarm(), "casemate ran past {limit:?}");
    out
}

fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// One ICMP echo to the guest over a raw socket; true when the matching
/// reply with the same payload came back.
fn ping(seq: u16) -> bool {
    // SAFETY: socket(2) with constant arguments; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: a new descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let tv = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: SO_RCVTIMEO reads a timeval of the given size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    let payload = b"casemate-ping-payload";
    let mut pkt = vec![8u8, 0, 0, 0, 0x43, 0x4d];
    pkt.extend(seq.to_be_bytes());
    pkt.extend(payload);
    let c = csum(&pkt);
    pkt[2..4].copy_from_slice(&c.to_be_bytes());
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(GUEST),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `pkt` and `to` are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&to as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    assert_eq!(
        n,
        pkt.len() as isize,
        "sendto: {}",
        std::io::Error::last_os_error()
    );
    let mut buf = [0u8; 1500];
    for _ in 0..8 {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return false;
        }
        let ihl = usize::from(buf[0] & 0xf) * 4;
        let icmp = &buf[ihl..n as usize];
        if icmp.len() >= 8 && icmp[0] == 0 && icmp[4..8] == pkt[4..8] {
            return icmp[8..] == payload[..] && csum(icmp) == 0;
        }
    }
    false
}

/// UDP echoes from the guest's port 7: waits up to `boot` for the guest to
/// answer at all, then checks `n` datagrams come back unchanged.
fn udp_echoes(n: usize, boot: Duration) -> usize {
    let s = UdpSocket::bind("10.0.2.2:0").expect("bind in the namespace");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let to = (std::net::Ipv4Addr::from(GUEST), 7);
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    loop {
        s.send_to(b"casemate-hello", to).unwrap();
        if let Ok((len, _)) = s.recv_from(&mut buf) {
            assert_eq!(&buf[..len], b"casemate-hello");
            break;
        }
        assert!(
            start.elapsed() < boot,
            "no UDP echo from the guest within {boot:?}"
        );
    }
    let mut ok = 0;
    for i in 0..n {
        let msg = format!("casemate-udp-{i}-{}", "x".repeat(i * 100));
        s.send_to(msg.as_bytes(), to).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // Hellos the kernel queued while ARP was pending may still come
        // back first.
        let (len, from) = loop {
            let (len, from) = s.recv_from(&mut buf).expect("UDP echo");
            if &buf[..len] != b"casemate-hello" {
                break (len, from);
            }
        };
        assert_eq!(from.port(), 7);
        assert_eq!(&buf[..len], msg.as_bytes());
        ok += 1;
    }
    ok
}

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

fn host_pings_guest_and_gets_udp_echoes(machine: &str) {
    let test = format!("host_pings_guest_and_gets_udp_echoes on {machine}");
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
        "probe=net ms=5000",
    ]);
    let (udp, pings) = ns.enter(|| {
        let udp = udp_echoes(4, Duration::from_secs(4));
        let pings = (1..=3).filter(|&s| ping(s)).count();
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
    let n = |k: &str| r.want(k).parse::<u64>().unwrap();
    assert!(n("udp") >= 5 && n("icmp") == 3, "{}", r.raw);
    assert!(n("tx") >= n("udp") + n("icmp"), "{}", r.raw);
}

/// tap0 opened and attached from inside the namespace, as a launcher
/// (the jailer, libvirt) would hand it over.
fn open_tap0() -> OwnedFd {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .expect("/dev/net/tun");
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"tap0") {
        *d = *s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
    // SAFETY: TUNSETIFF reads and writes the ifreq we pass.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    assert_eq!(r, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    f.into()
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
    let udp = ns.enter(|| udp_echoes(2, Duration::from_secs(4)));
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
    let cases: [(&str, &[&str], &str); 2] = [
        (
            "microvm",
            &[
                "-global",
                "virtio-mmio.force-legacy=false",
                "-device",
                "virtio-net-device,netdev=n0",
            ],
            "mmio",
        ),
        ("q35", &["-device", "virtio-net-pci,netdev=n0"], "pci"),
    ];
    for (machine, device, transport) in cases {
        let Some(ns) = NetNs::with_tap("probe_net_passes_under_qemu") else {
            return;
        };
        let q = qemu_probe(machine, &probe, "1", "probe=net ms=4000");
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
            let udp = udp_echoes(2, Duration::from_secs(20));
            (udp, (1..=2).filter(|&s| ping(s)).count())
        });
        let out = finish(child, Duration::from_secs(60));
        let r = Report::parse(&String::from_utf8_lossy(&out.stdout));
        r.assert_ok();
        assert_eq!((udp, pings), (2, 2), "{}", r.raw);
        assert_eq!(r.want("transport"), transport, "{}", r.raw);
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
    let udp = ns.enter(|| udp_echoes(2, Duration::from_secs(6)));
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
    assert_eq!(ns.enter(|| udp_echoes(1, Duration::from_secs(4))), 1);
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
