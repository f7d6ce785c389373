//! `NetConfig`: a virtio-net device and the host network behind it
//! (`-netdev tap,id=,ifname=|fd=` with `-device virtio-net-pci|
//! virtio-net-device,netdev=ID[,mac=]`, or `-nic`/`-net` as QEMU spells
//! them). MACs default as QEMU's: 52:54:00:12:34:56 for the first NIC,
//! +1 for each next one.

use serde::{Deserialize, Serialize};

use super::device::DeviceKind;
use super::Transport;

/// The host side of a NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum NetBackendConfig {
    /// A tap: attached (or created) by `ifname`, else an inherited fd
    /// (`fd=N`, as QEMU's; an `-add-fd` fd works too); with neither, the
    /// kernel names a new one.
    Tap {
        #[serde(default)]
        ifname: Option<String>,
        #[serde(default)]
        fd: Option<i32>,
        /// `queues=N`: a multiqueue tap (IFF_MULTI_QUEUE), one fd per
        /// queue pair; None is one queue.
        #[serde(default)]
        queues: Option<u16>,
        /// `fds=a:b:c`: the inherited fds of a multiqueue tap's queues.
        #[serde(default)]
        fds: Vec<i32>,
    },
    /// A tap on bridge `br`, made by QEMU's privileged bridge helper
    /// (`helper`, default `/usr/lib/qemu/qemu-bridge-helper`), which
    /// checks `/etc/qemu/bridge.conf`.
    Bridge {
        br: String,
        #[serde(default)]
        helper: Option<String>,
    },
    /// User-mode networking through passt (`-netdev user`), with QEMU's
    /// slirp addresses, and host ports forwarded to the guest.
    User {
        #[serde(default)]
        hostfwd: Vec<HostFwd>,
    },
}

/// `hostfwd=tcp::HOSTPORT-:GUESTPORT` (or udp).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostFwd {
    #[serde(default)]
    pub udp: bool,
    pub host_port: u16,
    pub guest_port: u16,
}

impl HostFwd {
    /// QEMU's `[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport`;
    /// passt binds every host address and knows one guest address, so
    /// only empty addresses (or the guest's 10.0.2.15) are taken.
    pub fn parse(s: &str) -> Result<HostFwd, String> {
        let bad = |why: &str| format!("hostfwd '{s}': {why}");
        let (host, guest) = s
            .split_once('-')
            .ok_or_else(|| bad("expected [tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport"))?;
        let mut h = host.splitn(3, ':');
        let (proto, haddr, hport) = match (h.next(), h.next(), h.next()) {
            (Some(p), Some(a), Some(port)) => (p, a, port),
            (Some(a), Some(port), None) => ("tcp", a, port),
            _ => return Err(bad("expected [tcp|udp]:[hostaddr]:hostport")),
        };
        let udp = match proto {
            "" | "tcp" => false,
            "udp" => true,
            p => return Err(bad(&format!("protocol '{p}' is not tcp or udp"))),
        };
        if !haddr.is_empty() {
            return Err(bad(
                "a host address is not supported (passt binds them all)",
            ));
        }
        let (gaddr, gport) = guest.rsplit_once(':').unwrap_or(("", guest));
        if !gaddr.is_empty() && gaddr != "10.0.2.15" {
            return Err(bad("the guest address can only be 10.0.2.15"));
        }
        let port = |p: &str| {
            p.parse::<u16>()
                .ok()
                .filter(|&v| v != 0)
                .ok_or_else(|| bad(&format!("'{p}' is not a port")))
        };
        Ok(HostFwd {
            udp,
            host_port: port(hport)?,
            guest_port: port(gport)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    /// The device's id (`-device ...,id=`, else the netdev's).
    pub id: String,
    pub backend: NetBackendConfig,
    /// `aa:bb:cc:dd:ee:ff`; None: QEMU's default for the NIC's position.
    #[serde(default)]
    pub mac: Option<String>,
    #[serde(default)]
    pub transport: Option<Transport>,
    /// QEMU's `host_mtu`: the MTU offered to the guest (VIRTIO_NET_F_MTU),
    /// 68..=65535; a tap Casemate creates gets it too.
    #[serde(default)]
    pub host_mtu: Option<u16>,
    /// `mq=on`: multiqueue with the control queue, one pair per tap queue.
    #[serde(default)]
    pub mq: bool,
}

/// The most queue pairs: two MSI-X vectors each, plus the control
/// queue's and the configuration vector, within a function's 256.
pub const MAX_QUEUES: u16 = 127;

impl NetBackendConfig {
    /// Queue pairs the backend provides (tap queues; 1 otherwise).
    pub fn queues(&self) -> u16 {
        match self {
            NetBackendConfig::Tap { fds, .. } if !fds.is_empty() => fds.len() as u16,
            NetBackendConfig::Tap {
                queues: Some(q), ..
            } => *q,
            _ => 1,
        }
    }
}

/// The MTUs `host_mtu` takes: IPv4's minimum up to what the config
/// field holds (QEMU's own bounds).
pub const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// QEMU's default MAC of the `n`th NIC (0-based).
pub fn default_mac(n: usize) -> [u8; 6] {
    let last = 0x56u8.wrapping_add(n as u8);
    [0x52, 0x54, 0x00, 0x12, 0x34, last]
}

pub fn format_mac(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// `aa:bb:cc:dd:ee:ff` (or with `-`); None if it is not six hex bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for b in &mut m {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(m)
}

impl NetConfig {
    /// The MAC this NIC gets as the `n`th NIC.
    pub fn mac_or_default(&self, n: usize) -> [u8; 6] {
        self.mac
            .as_deref()
            .and_then(parse_mac)
            .unwrap_or_else(|| default_mac(n))
    }
}

impl DeviceKind for NetConfig {
    fn id(&self) -> &str {
        &self.id
    }

    fn transport(&self) -> Option<Transport> {
        self.transport
    }

    fn qemu_name(&self, t: Transport) -> &'static str {
        t.pick("virtio-net-device", "virtio-net-pci")
    }

    fn check(&self) -> Result<(), String> {
        if let Some(m) = self
            .host_mtu
            .filter(|&m| !MTU_RANGE.contains(&u32::from(m)))
        {
            return Err(format!(
                "host_mtu={m} is out of range {}..={}",
                MTU_RANGE.start(),
                MTU_RANGE.end()
            ));
        }
        if let Some(m) = &self.mac {
            let Some(mac) = parse_mac(m) else {
                return Err(format!(
                    "mac '{m}' is not six hex bytes like 52:54:00:12:34:56"
                ));
            };
            if mac[0] & 1 != 0 {
                return Err(format!("mac '{m}' is a multicast address"));
            }
        }
        if let NetBackendConfig::Tap {
            fd, fds, queues, ..
        } = &self.backend
        {
            if fds.len() > usize::from(MAX_QUEUES) {
                return Err(format!("fds= names more than {MAX_QUEUES} queues"));
            }
            if fd.is_some() && !fds.is_empty() {
                return Err("a tap takes fd or fds, not both".into());
            }
            if let Some(bad) = fds.iter().find(|&&f| f < 0) {
                return Err(format!("fds: {bad} is not a file descriptor"));
            }
            match *queues {
                Some(q) if !(1..=MAX_QUEUES).contains(&q) => {
                    return Err(format!("queues={q} is out of range 1..={MAX_QUEUES}"))
                }
                Some(q) if !fds.is_empty() && usize::from(q) != fds.len() => {
                    return Err(format!(
                        "queues={q} but fds= names {} fds (one per queue)",
                        fds.len()
                    ))
                }
                Some(q) if q > 1 && fd.is_some() => {
                    return Err(format!("queues={q} takes fds=, one per queue, not fd="))
                }
                _ => {}
            }
        }
        let q = self.backend.queues();
        if q > 1 && !self.mq {
            return Err(format!(
                "the netdev has {q} queues: the device needs mq=on to use them"
            ));
        }
        match &self.backend {
            NetBackendConfig::Tap {
                ifname: Some(_),
                fd: Some(_),
                ..
            } => Err("a tap takes ifname or fd, not both".into()),
            NetBackendConfig::Tap {
                ifname: Some(_),
                fds,
                ..
            } if !fds.is_empty() => Err("a tap takes ifname or fds, not both".into()),
            NetBackendConfig::Tap {
                ifname: Some(n), ..
            } if n.len() >= 16 || n.contains('/') || n.is_empty() => Err(format!(
                "ifname '{n}' is not an interface name (1 to 15 bytes, no '/')"
            )),
            NetBackendConfig::Tap { fd: Some(fd), .. } if *fd < 0 => {
                Err(format!("fd={fd} is not a file descriptor"))
            }
            NetBackendConfig::Tap { .. } => Ok(()),
            NetBackendConfig::Bridge { br, .. }
                if br.len() >= 16 || br.contains('/') || br.is_empty() =>
            {
                Err(format!(
                    "br '{br}' is not an interface name (1 to 15 bytes, no '/')"
                ))
            }
            NetBackendConfig::Bridge {
                helper: Some(h), ..
            } if h.is_empty() => Err("helper= is empty".into()),
            NetBackendConfig::Bridge { .. } => Ok(()),
            NetBackendConfig::User { .. } => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_format_and_default_as_qemu() {
        assert_eq!(parse_mac("52:54:00:12:34:56"), Some(default_mac(0)));
        assert_eq!(format_mac(default_mac(2)), "52:54:00:12:34:58");
        assert_eq!(
            parse_mac("52-54-00-AB-cd-01"),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 1])
        );
        for bad in [
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "5:54:00:12:34:56",
            "zz:54:00:12:34:56",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        let c = NetConfig {
            id: "n".into(),
            backend: NetBackendConfig::Tap {
                ifname: Some("tap0".into()),
                fd: None,
                queues: None,
                fds: Vec::new(),
            },
            mac: Some("01:00:5e:00:00:01".into()),
            transport: None,
            host_mtu: None,
            mq: false,
        };
        assert!(c.check().unwrap_err().contains("multicast"));
        let c = NetConfig {
            mac: None,
            host_mtu: Some(67),
            ..c
        };
        assert_eq!(
            c.check().unwrap_err(),
            "host_mtu=67 is out of range 68..=65535"
        );
        let c = NetConfig {
            host_mtu: Some(68),
            ..c
        };
        assert_eq!(c.check(), Ok(()));
    }

    #[test]
    fn multiqueue_taps_are_checked() {
        let c = |queues: Option<u16>, fds: &[i32], fd: Option<i32>, mq: bool| NetConfig {
            id: "n".into(),
            backend: NetBackendConfig::Tap {
                ifname: None,
                fd,
                queues,
                fds: fds.to_vec(),
            },
            mac: None,
            transport: None,
            host_mtu: None,
            mq,
        };
        assert_eq!(c(Some(2), &[], None, true).check(), Ok(()));
        assert_eq!(c(None, &[5, 6, 7], None, true).backend.queues(), 3);
        assert_eq!(c(Some(3), &[5, 6, 7], None, true).check(), Ok(()));
        assert_eq!(c(Some(1), &[], None, true).check(), Ok(()));
        for (bad, want) in [
            (c(Some(2), &[], None, false), "needs mq=on"),
            (c(Some(0), &[], None, true), "out of range 1..=127"),
            (c(Some(128), &[], None, true), "out of range 1..=127"),
            (c(Some(2), &[5], None, true), "fds= names 1 fds"),
            (c(None, &[5, -1], None, true), "-1 is not a file descriptor"),
            (c(None, &[5, 6], Some(4), true), "fd or fds"),
            (c(Some(2), &[], Some(4), true), "not fd="),
        ] {
            let e = bad.check().unwrap_err();
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn hostfwd_as_qemu_spells_it() {
        let f = |udp, host_port, guest_port| HostFwd {
            udp,
            host_port,
            guest_port,
        };
        assert_eq!(HostFwd::parse("tcp::8080-:80"), Ok(f(false, 8080, 80)));
        assert_eq!(
            HostFwd::parse("udp::5007-10.0.2.15:7"),
            Ok(f(true, 5007, 7))
        );
        assert_eq!(HostFwd::parse(":2222-:22"), Ok(f(false, 2222, 22)));
        for bad in [
            "tcp:1.2.3.4:80-:80",
            "sctp::1-:1",
            "tcp::x-:1",
            "tcp::1-:0",
            "tcp::1",
        ] {
            assert!(HostFwd::parse(bad).is_err(), "{bad}");
        }
    }
}
