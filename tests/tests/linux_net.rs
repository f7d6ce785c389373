//! Linux's own virtio_net driver against the host (the init's `net`
//! mode), on Casemate's microvm (virtio-mmio) and q35 (virtio-pci), and on
//! QEMU 7.2's microvm as the reference. Each test makes a namespace with
//! tap0 at 10.0.2.2/24 and runs a UDP echo and a TCP echo server there
//! (threads that joined the namespace); the guest takes 10.0.2.15/24,
//! echoes one datagram, and sends 64 KiB over TCP and reads them back,
//! with checksum offload and TSO on. The same exchange over `-netdev user`
//! (passt) reaches servers on the namespace's loopback.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use casemate_tests::linux::{artifacts_or_skip, microvm, pci_machine, run, LinuxBoot};
use casemate_tests::netns::NetNs;
use casemate_tests::{have, Report};

const UDP_PORT: u16 = 5555;
const TCP_PORT: u16 = 5556;
const TCP_BYTES: usize = 65536;
/// How long the servers wait for a guest that is still booting.
const SERVE: Duration = Duration::from_secs(170);

/// UDP echo on `at`: echoes the first datagram, returns its length.
fn udp_echo(at: &str) -> usize {
    let s = UdpSocket::bind((at, UDP_PORT)).expect("UDP bind");
    s.set_read_timeout(Some(SERVE)).unwrap();
    let mut buf = [0u8; 2048];
    match s.recv_from(&mut buf) {
        Ok((n, from)) => {
            s.send_to(&buf[..n], from).expect("UDP echo");
            n
        }
        Err(_) => 0,
    }
}

/// TCP echo on `at`: one connection, echoed until the guest closes;
/// returns the bytes echoed.
fn tcp_echo(at: &str) -> usize {
    let l = TcpListener::bind((at, TCP_PORT)).expect("TCP bind");
    l.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let mut conn = loop {
        match l.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == ErrorKind::WouldBlock && start.elapsed() < SERVE => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(_) => return 0,
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16384];
    let mut total = 0;
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 || conn.write_all(&buf[..n]).is_err() {
            break;
        }
        total += n;
    }
    total
}

struct Servers {
    udp: JoinHandle<usize>,
    tcp: JoinHandle<usize>,
}

fn servers(ns: &NetNs, at: &'static str) -> Servers {
    Servers {
        udp: ns.spawn_in(move || udp_echo(at)),
        tcp: ns.spawn_in(move || tcp_echo(at)),
    }
}

fn net_boot(boot: LinuxBoot) -> LinuxBoot {
    boot.init_arg("casemate.mode=net")
        .init_arg("casemate.ip=10.0.2.15/24")
        .init_arg("casemate.host=10.0.2.2")
        .init_arg(&format!("casemate.udp={UDP_PORT}"))
        .init_arg(&format!("casemate.tcp={TCP_PORT}"))
        .init_arg(&format!("casemate.tcp_bytes={TCP_BYTES}"))
}

/// The report line led by the bare words of `topic` (e.g. `net udp`).
fn line<'a>(r: &'a Report, topic: &str) -> &'a std::collections::BTreeMap<String, String> {
    r.lines
        .iter()
        .find(|l| topic.split(' ').all(|w| l.contains_key(w)))
        .unwrap_or_else(|| panic!("no `{topic}` line:\n{}", r.raw))
}

/// How the guest reaches the host: a tap in the namespace (servers on
/// 10.0.2.2, offloads on), or `-netdev user` through passt (servers on
/// the namespace's loopback, reached at the gateway 10.0.2.2; passt takes
/// complete frames, so no offloads).
#[derive(Clone, Copy, PartialEq)]
enum Link {
    Tap,
    User,
}

fn linux_net(test: &str, machine: &'static str, qemu: bool) {
    linux_net_over(test, machine, qemu, Link::Tap)
}

fn linux_net_over(test: &str, machine: &'static str, qemu: bool, link: Link) {
    if qemu && !have("qemu-system-x86_64") {
        println!("SKIP {test}: qemu-system-x86_64 is not installed");
        return;
    }
    let Some(a) = artifacts_or_skip(test) else {
        return;
    };
    if link == Link::User && !have("passt") {
        println!("SKIP {test}: passt is not installed (scripts/setup.sh installs it)");
        return;
    }
    let ns = match link {
        Link::Tap => NetNs::with_tap(test),
        Link::User => NetNs::new(test).inspect(NetNs::uplink),
    };
    let Some(ns) = ns else {
        return;
    };
    let m = if machine == "microvm" {
        microvm(&a)
    } else {
        pci_machine(&a, machine)
    };
    let (boot, at) = match link {
        Link::Tap => (LinuxBoot::new(m, &a).tap("tap0"), "10.0.2.2"),
        Link::User => (LinuxBoot::new(m, &a).netdev("user"), "127.0.0.1"),
    };
    let boot = net_boot(boot);
    let srv = servers(&ns, at);
    let cmd = if qemu { boot.qemu() } else { boot.casemate() };
    let (r, out) = run(ns.wrap(&cmd));
    let log = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (udp, tcp) = (srv.udp.join().unwrap(), srv.tcp.join().unwrap());
    for l in r.raw.lines().filter(|l| l.contains("init: net")) {
        println!("{test}: {l}");
    }
    println!("{test}: host echoed udp={udp} tcp={tcp}");
    r.assert_ok();
    let eth = line(&r, "net eth0");
    let on = if link == Link::Tap { "1" } else { "0" };
    for k in ["tx_csum", "tso", "f_csum", "f_guest_csum", "f_host_tso4"] {
        assert_eq!(eth.get(k).map(String::as_str), Some(on), "{k}\n{log}");
    }
    let u = line(&r, "net udp");
    assert_eq!(u.get("match").map(String::as_str), Some("1"), "{log}");
    let t = line(&r, "net tcp");
    assert_eq!(t.get("mismatches").map(String::as_str), Some("0"), "{log}");
    assert_eq!(
        t.get("received").map(String::as_str),
        Some(TCP_BYTES.to_string().as_str()),
        "{log}"
    );
    assert_eq!((udp, tcp), (64, TCP_BYTES), "{log}");
    // isa-debug-exit on QEMU: 1 when the init reported ok.
    assert_eq!(out.status.code(), Some(if qemu { 1 } else { 0 }), "{log}");
}

#[test]
fn casemate_microvm_linux_virtio_net_udp_and_tcp() {
    linux_net(
        "casemate_microvm_linux_virtio_net_udp_and_tcp",
        "microvm",
        false,
    );
}

#[test]
fn qemu_microvm_linux_virtio_net_udp_and_tcp() {
    linux_net("qemu_microvm_linux_virtio_net_udp_and_tcp", "microvm", true);
}

#[test]
fn casemate_microvm_linux_user_net_reaches_the_host_loopback() {
    linux_net_over(
        "casemate_microvm_linux_user_net_reaches_the_host_loopback",
        "microvm",
        false,
        Link::User,
    );
}

/// UDP echo on `at` for `n` datagrams (each from its own socket in the
/// guest); returns how many were echoed.
fn udp_echoes_n(at: &str, n: usize) -> usize {
    let s = UdpSocket::bind((at, UDP_PORT)).expect("UDP bind");
    s.set_read_timeout(Some(SERVE)).unwrap();
    let mut buf = [0u8; 2048];
    let mut echoed = 0;
    while echoed < n {
        let Ok((len, from)) = s.recv_from(&mut buf) else {
            break;
        };
        s.send_to(&buf[..len], from).expect("UDP echo");
        echoed += 1;
    }
    echoed
}

/// Multiqueue on q35 (also Casemate's q35 virtio-net-pci boot with UDP and
/// TCP; a boot costs most of a minute here, and the probe covers the
/// single-queue device on q35): `-netdev tap,queues=2` on a multi_queue tap and
/// `-device virtio-net-pci,mq=on,vectors=6`. Linux's virtio_net
/// negotiates MQ and the control queue; the init asks for two channels
/// (`ethtool -L eth0 combined 2`: VQ_PAIRS_SET 2; one vCPU keeps the boot
/// within the harness's limit on this loaded host, and would otherwise
/// leave Linux at one pair) and sends 12 UDP flows, which the stack
/// spreads over both transmit queues and the tap answers on the queue
/// each came from: both receive queues take interrupts.
#[test]
fn casemate_q35_linux_multiqueue_uses_both_queue_pairs() {
    let test = "casemate_q35_linux_multiqueue_uses_both_queue_pairs";
    let Some(a) = artifacts_or_skip(test) else {
        return;
    };
    let Some(ns) = NetNs::new(test) else {
        return;
    };
    mq_tap0_up(&ns, &[]);
    let boot = LinuxBoot::new(pci_machine(&a, "q35"), &a)
        .netdev("tap,ifname=tap0,script=no,downscript=no,vhost=off,queues=2")
        .nic_opts(",mq=on,vectors=6");
    let boot = net_boot(boot).init_arg("casemate.pairs=2");
    // The exchange's datagram and the 12 flows.
    let udp = ns.spawn_in(|| udp_echoes_n("10.0.2.2", 13));
    let tcp = ns.spawn_in(|| tcp_echo("10.0.2.2"));
    let (r, out) = run(ns.wrap(&boot.casemate()));
    let log = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (udp, tcp) = (udp.join().unwrap(), tcp.join().unwrap());
    for l in r.raw.lines().filter(|l| l.contains("init: net")) {
        println!("{test}: {l}");
    }
    r.assert_ok();
    assert_eq!((udp, tcp), (13, TCP_BYTES), "{log}");
    let u = line(&r, "net udp");
    assert_eq!(u.get("match").map(String::as_str), Some("1"), "{log}");
    let t = line(&r, "net tcp");
    assert_eq!(t.get("mismatches").map(String::as_str), Some("0"), "{log}");
    let ch = line(&r, "net channels");
    assert_eq!(ch.get("max").map(String::as_str), Some("2"), "{log}");
    assert_eq!(ch.get("combined").map(String::as_str), Some("2"), "{log}");
    let eth = line(&r, "net eth0");
    for k in ["f_mq", "f_ctrl_vq", "f_event_idx"] {
        assert_eq!(eth.get(k).map(String::as_str), Some("1"), "{k}\n{log}");
    }
    let irqs = line(&r, "net irqs");
    let n = |k: &str| irqs.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    assert!(
        n("input0") > 0 && n("input1") > 0,
        "both receive queues used:\n{log}"
    );
    assert_eq!(out.status.code(), Some(0), "{log}");
}

/// Multiqueue through `casemate-jailer`: the jailed VMM runs as uid/gid
/// 65534 with no capabilities in the test's namespace (`--netns`), on a
/// root-owned multi_queue tap that the jailer attached there (one
/// TUNSETIFF per queue, as root, before dropping privileges) and handed
/// over as `fds=` (the jail has no /dev/net/tun; the VMM could not
/// attach root's tap itself). The control thread detaches the second
/// queue at start and the worker attaches it again on VQ_PAIRS_SET 2
/// (TUNSETQUEUE both ways, after the privilege drop: TUNSETQUEUE checks
/// no owner, only TUNSETIFF does); both receive queues take interrupts.
/// A tap that cannot be attached as asked (no multi_queue, queues=2) is
/// refused by the jailer, naming the tap and the errno.
#[test]
fn jailed_q35_linux_multiqueue_uses_both_queue_pairs() {
    use casemate_tests::{jail, Scratch};
    let test = "jailed_q35_linux_multiqueue_uses_both_queue_pairs";
    let Some(a) = artifacts_or_skip(test) else {
        return;
    };
    let Some(vmm) = jail::jail_or_skip(test) else {
        return;
    };
    let Some(ns) = NetNs::new(test) else {
        return;
    };
    mq_tap0_up(&ns, &["user", "0", "group", "0"]);
    ns.ip(&["tuntap", "add", "dev", "tapsq", "mode", "tap", "vnet_hdr"]);
    let s = Scratch::new("jailed-mq");
    let base = s.path("jails");
    let netns = format!("/run/netns/{}", ns.name);
    let jailed = |id: &str, boot: &LinuxBoot| {
        let c = boot.casemate_at(&vmm);
        let args: Vec<&str> = c.get_args().filter_map(|a| a.to_str()).collect();
        jail::jailer(&vmm, &base, id, &["--new-pid-ns", "--netns", &netns], &args)
    };

    let refused = LinuxBoot::new(pci_machine(&a, "q35"), &a)
        .netdev("tap,ifname=tapsq,script=no,downscript=no,queues=2")
        .nic_opts(",mq=on,vectors=6");
    let out = jailed("mq-refused", &refused).output().expect("jailer");
    let e = String::from_utf8_lossy(&out.stderr);
    println!("{test}: a single-queue tap with queues=2: {e}");
    assert!(!out.status.success(), "{e}");
    assert!(
        e.contains("tap tapsq: attaching (TUNSETIFF)") && e.contains("os error 22"),
        "{e}"
    );

    let boot = LinuxBoot::new(pci_machine(&a, "q35"), &a)
        .netdev("tap,ifname=tap0,script=no,downscript=no,vhost=off,queues=2")
        .nic_opts(",mq=on,vectors=6");
    let boot = net_boot(boot).init_arg("casemate.pairs=2");
    let udp = ns.spawn_in(|| udp_echoes_n("10.0.2.2", 13));
    let tcp = ns.spawn_in(|| tcp_echo("10.0.2.2"));
    let (r, out) = run(jailed("mq", &boot));
    let log = format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (udp, tcp) = (udp.join().unwrap(), tcp.join().unwrap());
    for l in r.raw.lines().filter(|l| l.contains("init: net")) {
        println!("{test}: {l}");
    }
    r.assert_ok();
    assert_eq!((udp, tcp), (13, TCP_BYTES), "{log}");
    let ch = line(&r, "net channels");
    assert_eq!(ch.get("combined").map(String::as_str), Some("2"), "{log}");
    let eth = line(&r, "net eth0");
    assert_eq!(eth.get("f_mq").map(String::as_str), Some("1"), "{log}");
    let irqs = line(&r, "net irqs");
    let n = |k: &str| irqs.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    assert!(
        n("input0") > 0 && n("input1") > 0,
        "both receive queues used:\n{log}"
    );
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        !jail::jail_dir(&base, &vmm, "mq").exists(),
        "the jailer (--new-pid-ns) removed the jail"
    );
}

/// A multi_queue tap0 (with `extra` words for `ip tuntap add`, e.g. its
/// owner) at 10.0.2.2/24, up, in `ns`.
fn mq_tap0_up(ns: &NetNs, extra: &[&str]) {
    let mut add = vec![
        "tuntap",
        "add",
        "dev",
        "tap0",
        "mode",
        "tap",
        "vnet_hdr",
        "multi_queue",
    ];
    add.extend_from_slice(extra);
    ns.ip(&add);
    ns.ip(&["addr", "add", "10.0.2.2/24", "dev", "tap0"]);
    ns.ip(&["link", "set", "tap0", "up"]);
}
