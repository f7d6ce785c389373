//! Network namespaces for tests: each `NetNs` is `cm-test-<pid>-<n>`,
//! holds the taps and bridges a test makes (the host side's addresses
//! live only there), runs VMMs inside it and is deleted with everything in
//! it on drop, so no frame leaves it. Also the host-side checks the net
//! tests share: an ICMP ping and UDP echoes against a probe guest.

use std::cell::RefCell;
use std::fs::File;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::{bin, have, in_ci, kvm_or_skip, Watchdog};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A network namespace, deleted with everything in it on drop.
pub struct NetNs {
    pub name: String,
    /// Links made in it, deleted first on drop.
    links: RefCell<Vec<String>>,
}

pub fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    /// A namespace with tap0 (vnet header, persistent) at 10.0.2.2/24;
    /// None (after saying why) where namespaces or taps cannot be made.
    pub fn with_tap(test: &str) -> Option<Self> {
        let ns = Self::new(test)?;
        ns.tap("tap0");
        ns.ip(&["addr", "add", "10.0.2.2/24", "dev", "tap0"]);
        Some(ns)
    }

    /// An empty namespace with lo up; None (after saying why) where
    /// namespaces or taps cannot be made.
    pub fn new(test: &str) -> Option<Self> {
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
        let ns = NetNs {
            name,
            links: RefCell::new(Vec::new()),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        Some(ns)
    }

    /// A persistent tap `name` with the vnet header, up.
    pub fn tap(&self, name: &str) {
        self.ip(&["tuntap", "add", "dev", name, "mode", "tap", "vnet_hdr"]);
        self.links.borrow_mut().push(name.into());
        self.ip(&["link", "set", name, "up"]);
    }

    /// An uplink for passt, which needs a default route to pick its
    /// interface: a veth pair up0/up1 at 192.0.2.1/24 (a documentation
    /// range), default route via 192.0.2.254, all inside the namespace.
    pub fn uplink(&self) {
        self.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
        self.links.borrow_mut().push("up0".into());
        self.ip(&["addr", "add", "192.0.2.1/24", "dev", "up0"]);
        self.ip(&["link", "set", "up0", "up"]);
        self.ip(&["link", "set", "up1", "up"]);
        self.ip(&[
            "route",
            "add",
            "default",
            "via",
            "192.0.2.254",
            "dev",
            "up0",
        ]);
    }

    /// A bridge `name` at `addr` (CIDR), up, with STP off (the default) so
    /// ports forward as soon as they have carrier.
    pub fn bridge(&self, name: &str, addr: &str) {
        self.ip(&["link", "add", name, "type", "bridge"]);
        self.links.borrow_mut().push(name.into());
        self.ip(&["addr", "add", addr, "dev", name]);
        self.ip(&["link", "set", name, "up"]);
    }

    pub fn ip(&self, args: &[&str]) {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args));
    }

    /// `casemate ARGS` inside the namespace.
    pub fn casemate(&self, args: &[&str]) -> Child {
        self.casemate_with_fd(args, None)
    }

    /// As `casemate`, with `keep` inherited by the VMM (as a launcher
    /// hands a tap over).
    pub fn casemate_with_fd(&self, args: &[&str], keep: Option<i32>) -> Child {
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

    /// `cmd` run inside the namespace (through `ip netns exec`).
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        c
    }

    /// As `enter`, on a thread of its own that the caller joins later
    /// (host-side servers while a VM boots).
    pub fn spawn_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            // SAFETY: setns(2) on an fd we opened; it moves only this
            // thread, which ends when `f` returns.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
    }

    /// Run `f` on a thread that has joined the namespace, so the sockets
    /// it makes live there.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
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
        for l in self.links.borrow().iter() {
            let _ = Command::new("ip")
                .args(["-n", &self.name, "link", "del", l])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Waits for the child under a watchdog.
pub fn finish(child: Child, limit: Duration) -> Output {
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

/// One ICMP echo to `guest` over a raw socket; true when the matching
/// reply with the same payload came back.
pub fn ping(guest: [u8; 4], seq: u16) -> bool {
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
            s_addr: u32::from_ne_bytes(guest),
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

/// UDP echoes from `guest`'s port 7, sent from 10.0.2.2: waits up to
/// `boot` for the guest to answer at all, then checks `n` datagrams come
/// back unchanged.
pub fn udp_echoes(guest: [u8; 4], n: usize, boot: Duration) -> usize {
    let s = UdpSocket::bind("10.0.2.2:0").expect("bind in the namespace");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let to = (std::net::Ipv4Addr::from(guest), 7);
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

/// tap0 opened and attached from inside the namespace, as a launcher
/// (the jailer, libvirt) would hand it over.
pub fn open_tap0() -> OwnedFd {
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
