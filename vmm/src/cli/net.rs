//! Networking options as QEMU users type them: `-netdev tap,id=ID,...`
//! with `-device virtio-net-pci|virtio-net-device,netdev=ID[,mac=]`,
//! `-nic tap,...[,model=][,mac=]` (both at once), the legacy
//! `-net nic[,model=] -net tap,...` pair, and `-net none`/`-nic none`.
//! `-netdev bridge,br=,helper=` runs QEMU's bridge helper for a tap;
//! `-netdev user[,hostfwd=...]` runs passt.
//! Casemate never runs ifup/ifdown scripts: `script=` or `downscript=`
//! other than `no` is refused. Only virtio-net exists: other NIC models
//! are refused by name.

use std::cell::RefCell;

use super::devices::Objects;
use super::{bad, CliError, KeyVals};
use crate::config::net::{default_mac, format_mac, parse_mac, MAX_QUEUES, MTU_RANGE};
use crate::config::{DeviceConfig, HostFwd, NetBackendConfig, NetConfig, Transport};

/// Keys of `-netdev tap` (and of the tap part of `-nic`/`-net tap`).
const TAP_KEYS: &[&str] = &[
    "type",
    "id",
    "ifname",
    "script",
    "downscript",
    "fd",
    "vhost",
    "vnet_hdr",
    "queues",
    "fds",
];

/// Keys of `-netdev bridge` (and `-nic bridge`, `-net bridge`).
const BRIDGE_KEYS: &[&str] = &["type", "id", "br", "helper"];

/// Keys of `-netdev user` (and `-nic user`, `-net user`).
const USER_KEYS: &[&str] = &["type", "id", "hostfwd"];

/// QEMU's default bridge (`DEFAULT_BRIDGE_INTERFACE`).
const DEFAULT_BRIDGE: &str = "br0";

/// The keys a backend of type `kind` takes, plus `extra`.
fn keys(kind: &str, extra: &[&'static str]) -> Vec<&'static str> {
    let mut k = match kind {
        "bridge" => BRIDGE_KEYS.to_vec(),
        "user" => USER_KEYS.to_vec(),
        _ => TAP_KEYS.to_vec(),
    };
    k.extend(extra);
    k
}

/// The networking options seen so far.
#[derive(Default)]
pub struct NetOpts {
    /// `-netdev`s by id, and whether a NIC took each.
    netdevs: Vec<(String, NetBackendConfig, bool)>,
    used: RefCell<Vec<String>>,
    /// NICs of `-nic`: (id, backend, mac, transport).
    nics: Vec<NetConfig>,
    /// Legacy `-net nic` (mac, transport, netdev) and `-net tap` lists,
    /// paired in order.
    legacy_nics: Vec<(Option<String>, Option<Transport>, Option<String>)>,
    legacy_taps: Vec<NetBackendConfig>,
}

/// The backend a `-netdev`/`-nic`/`-net` of type `kind` describes.
fn backend(opt: &str, kind: &str, kv: &KeyVals) -> Result<NetBackendConfig, CliError> {
    match kind {
        "tap" => {}
        "user" => {
            let hostfwd = kv
                .get_all("hostfwd")
                .map(|h| HostFwd::parse(h).map_err(|why| bad(opt, h, why)))
                .collect::<Result<_, _>>()?;
            return Ok(NetBackendConfig::User { hostfwd });
        }
        "bridge" => {
            return Ok(NetBackendConfig::Bridge {
                br: kv.get("br").unwrap_or(DEFAULT_BRIDGE).to_string(),
                helper: kv.get("helper").map(str::to_string),
            })
        }
        "vhost-user" | "vhost-vdpa" | "socket" | "stream" | "dgram" | "l2tpv3" | "vde"
        | "hubport" | "netmap" | "af-xdp" => {
            return Err(bad(
                opt,
                kind,
                "only tap, bridge and user networking are supported",
            ))
        }
        _ => return Err(bad(opt, kind, "unknown network backend type")),
    }
    for k in ["script", "downscript"] {
        if let Some(v) = kv.get(k).filter(|v| *v != "no") {
            return Err(bad(
                opt,
                v,
                format!("{k}= must be 'no': Casemate runs no ifup/ifdown scripts (set the tap up beforehand)"),
            ));
        }
    }
    if kv.get("vhost") == Some("on") {
        let why = if std::path::Path::new("/dev/vhost-net").exists() {
            "vhost-net is not supported by Casemate; use vhost=off"
        } else {
            "this host has no /dev/vhost-net (its kernel lacks vhost-net); use vhost=off"
        };
        return Err(bad(opt, "vhost=on", why));
    }
    if kv.get("vnet_hdr") == Some("off") {
        return Err(bad(
            opt,
            "vnet_hdr=off",
            "Casemate's taps always carry the vnet header",
        ));
    }
    let queues = kv
        .get("queues")
        .map(|v| {
            number(v)
                .and_then(|q| u16::try_from(q).ok())
                .filter(|q| (1..=MAX_QUEUES).contains(q))
                .ok_or_else(|| {
                    bad(
                        opt,
                        v,
                        format!("queues= must be a number in 1..={MAX_QUEUES}"),
                    )
                })
        })
        .transpose()?;
    let fds = match kv.get("fds") {
        None => Vec::new(),
        Some(v) => {
            v.split(':')
                .map(|f| {
                    f.parse::<i32>().ok().filter(|&f| f >= 0).ok_or_else(|| {
                        bad(opt, v, "fds= must be descriptor numbers separated by ':'")
                    })
                })
                .collect::<Result<_, _>>()?
        }
    };
    let fd = kv
        .get("fd")
        .map(|v| {
            v.parse::<i32>()
                .map_err(|_| bad(opt, v, "fd= must be a descriptor number"))
        })
        .transpose()?;
    let ifname = kv.get("ifname").map(str::to_string);
    if fd.is_some() && ifname.is_some() {
        return Err(bad(opt, "fd", "ifname= and fd= exclude each other"));
    }
    Ok(NetBackendConfig::Tap {
        ifname,
        fd,
        queues,
        fds,
    })
}

/// A number as QEMU reads one: decimal or `0x` hex.
fn number(v: &str) -> Option<u64> {
    match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// `model=`: the transport it implies (None: the machine's own).
fn model(opt: &str, m: Option<&str>) -> Result<Option<Transport>, CliError> {
    match m {
        None | Some("virtio") => Ok(None),
        Some("virtio-net-pci") => Ok(Some(Transport::Pci)),
        Some("virtio-net-device") => Ok(Some(Transport::Mmio)),
        Some(m) => Err(bad(
            opt,
            m,
            format!(
                "NIC model '{m}' is not available: Casemate has only virtio-net (model=virtio)"
            ),
        )),
    }
}

impl NetOpts {
    /// One `-netdev`, `-nic` or `-net` option (`name` without dashes).
    pub fn option(&mut self, opt: &str, name: &str, v: &str) -> Result<(), CliError> {
        let kv = KeyVals::parse(opt, v, "type")?;
        let kind = kv.get("type").unwrap_or_default();
        match name {
            "netdev" => {
                kv.only(opt, &keys(kind, &[]))?;
                let id = kv
                    .get("id")
                    .filter(|i| !i.is_empty())
                    .ok_or_else(|| bad(opt, v, "id= is required"))?;
                if self.netdevs.iter().any(|(i, ..)| i == id) {
                    return Err(bad(opt, id, "Duplicate ID for netdev"));
                }
                let b = backend(opt, kind, &kv)?;
                self.netdevs.push((id.to_string(), b, false));
            }
            "nic" => {
                if kind == "none" {
                    return kv.only(opt, &["type"]);
                }
                kv.only(opt, &keys(kind, &["model", "mac"]))?;
                let t = model(opt, kv.get("model"))?;
                let b = backend(opt, kind, &kv)?;
                let n = self.nics.len();
                self.nics.push(NetConfig {
                    id: kv
                        .get("id")
                        .map_or_else(|| format!("nic{n}"), str::to_string),
                    backend: b,
                    mac: kv.get("mac").map(str::to_string),
                    transport: t,
                    host_mtu: None,
                    mq: false,
                });
            }
            _ => match kind {
                "none" => kv.only(opt, &["type"])?,
                "nic" => {
                    kv.only(opt, &["type", "model", "macaddr", "netdev", "id", "name"])?;
                    let t = model(opt, kv.get("model"))?;
                    self.legacy_nics.push((
                        kv.get("macaddr").map(str::to_string),
                        t,
                        kv.get("netdev").map(str::to_string),
                    ));
                }
                _ => {
                    kv.only(opt, &keys(kind, &["name"]))?;
                    self.legacy_taps.push(backend(opt, kind, &kv)?);
                }
            },
        }
        Ok(())
    }

    /// The `-netdev` a NIC names, marked taken (a netdev serves one NIC).
    fn take(&self, opt: &str, id: &str) -> Result<NetBackendConfig, CliError> {
        let Some((_, b, _)) = self.netdevs.iter().find(|(i, ..)| i == id) else {
            return Err(bad(opt, id, "no -netdev has this id"));
        };
        let mut used = self.used.borrow_mut();
        if used.iter().any(|u| u == id) {
            return Err(bad(
                opt,
                id,
                "this -netdev is already in use by another NIC",
            ));
        }
        used.push(id.to_string());
        Ok(b.clone())
    }
}

/// `-device virtio-net-pci|virtio-net-device,netdev=ID[,mac=][,id=]`.
pub fn device(
    opt: &str,
    kv: &KeyVals,
    t: Transport,
    objects: &Objects,
) -> Result<DeviceConfig, CliError> {
    let mut keys = vec!["driver", "id", "netdev", "mac", "host_mtu", "mq"];
    if t == Transport::Pci {
        keys.push("vectors");
    }
    kv.only(opt, &keys)?;
    let mq = match kv.get("mq") {
        None | Some("off" | "false" | "no" | "n") => false,
        Some("on" | "true" | "yes" | "y") => true,
        Some(v) => return Err(bad(opt, v, "mq= must be on or off")),
    };
    let host_mtu = kv
        .get("host_mtu")
        .map(|v| {
            number(v)
                .and_then(|m| u32::try_from(m).ok())
                .filter(|m| MTU_RANGE.contains(m))
                .map(|m| m as u16)
                .ok_or_else(|| {
                    bad(
                        opt,
                        v,
                        format!(
                            "host_mtu= must be a number in {}..={}",
                            MTU_RANGE.start(),
                            MTU_RANGE.end()
                        ),
                    )
                })
        })
        .transpose()?;
    let netdev = kv.get("netdev").ok_or_else(|| {
        bad(
            opt,
            kv.get("driver").unwrap_or_default(),
            "netdev= is required",
        )
    })?;
    let backend = objects.net.take(opt, netdev)?;
    if let Some(v) = kv.get("vectors") {
        // Casemate gives every queue its own MSI-X vector plus one for
        // configuration changes: QEMU's default for mq, 2 * queues + 2.
        let pairs = if mq { backend.queues() } else { 1 };
        let want = 2 * u64::from(pairs) + 2;
        if number(v) != Some(want) {
            return Err(bad(
                opt,
                v,
                format!("vectors= must be {want} here: one MSI-X vector per queue (2 per pair, and the control queue's) plus the configuration vector"),
            ));
        }
    }
    Ok(DeviceConfig::Net(NetConfig {
        id: kv.get("id").unwrap_or(netdev).to_string(),
        backend,
        mac: kv.get("mac").map(str::to_string),
        transport: Some(t),
        host_mtu,
        mq,
    }))
}

/// After every option: add the `-nic` and `-net` NICs, give NICs without
/// a MAC QEMU's default for their position, and refuse duplicate MACs and
/// `-netdev`s no NIC uses.
pub fn finish(devices: &mut Vec<DeviceConfig>, objects: &Objects) -> Result<(), CliError> {
    let net = &objects.net;
    devices.extend(net.nics.iter().cloned().map(DeviceConfig::Net));
    // Each `-net nic` without netdev= pairs with one `-net tap|bridge|user`;
    // a backend left without a NIC would silently do nothing.
    let plain = net
        .legacy_nics
        .iter()
        .filter(|(_, _, n)| n.is_none())
        .count();
    if plain != net.legacy_taps.len() {
        return Err(bad(
            "-net",
            "nic",
            format!(
                "{} '-net nic' and {} '-net tap|bridge|user': each NIC pairs with one, in order",
                plain,
                net.legacy_taps.len()
            ),
        ));
    }
    let mut taps = net.legacy_taps.iter();
    for (i, (mac, t, netdev)) in net.legacy_nics.iter().enumerate() {
        let backend = match netdev {
            Some(id) => net.take("-net", id)?,
            None => taps
                .next()
                .cloned()
                .ok_or_else(|| bad("-net", "nic", "no -net tap for it"))?,
        };
        devices.push(DeviceConfig::Net(NetConfig {
            id: format!("net{i}"),
            backend,
            mac: mac.clone(),
            transport: *t,
            host_mtu: None,
            mq: false,
        }));
    }
    if let Some((id, ..)) = net
        .netdevs
        .iter()
        .find(|(id, ..)| !net.used.borrow().contains(id))
    {
        return Err(bad(
            "-netdev",
            id,
            "no NIC uses this netdev (add -device virtio-net-pci,netdev=ID)",
        ));
    }
    let mut seen: Vec<[u8; 6]> = Vec::new();
    let mut n = 0;
    for d in devices.iter_mut() {
        let DeviceConfig::Net(c) = d else { continue };
        let mac = match &c.mac {
            Some(m) => parse_mac(m).ok_or_else(|| {
                bad(
                    "-device",
                    m,
                    "mac= is not six hex bytes like 52:54:00:12:34:56",
                )
            })?,
            None => default_mac(n),
        };
        if seen.contains(&mac) {
            return Err(bad(
                "-device",
                &format_mac(mac),
                format!("NIC {} has the same MAC as another NIC", c.id),
            ));
        }
        seen.push(mac);
        c.mac = Some(format_mac(mac));
        n += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{parse, Command};
    use super::*;

    fn run(args: &[&str]) -> Result<Vec<NetConfig>, CliError> {
        match parse(args.iter().map(|s| s.to_string()))? {
            Command::Run { config, .. } => Ok(config
                .devices
                .into_iter()
                .filter_map(|d| match d {
                    DeviceConfig::Net(n) => Some(n),
                    _ => None,
                })
                .collect()),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn tap(name: &str) -> NetBackendConfig {
        NetBackendConfig::Tap {
            ifname: Some(name.into()),
            fd: None,
            queues: None,
            fds: Vec::new(),
        }
    }

    #[test]
    fn netdev_with_device_and_default_macs() {
        let n = run(&[
            "-M",
            "q35",
            "-device",
            "virtio-net-pci,netdev=n0",
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=off",
            "-netdev",
            "tap,id=n1,fd=7",
            "-device",
            "virtio-net-pci,netdev=n1,id=second",
        ])
        .unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(
            n[0],
            NetConfig {
                id: "n0".into(),
                backend: tap("tap0"),
                mac: Some("52:54:00:12:34:56".into()),
                transport: Some(Transport::Pci),
                host_mtu: None,
                mq: false,
            }
        );
        assert_eq!(n[1].id, "second");
        assert_eq!(n[1].mac.as_deref(), Some("52:54:00:12:34:57"));
        assert_eq!(
            n[1].backend,
            NetBackendConfig::Tap {
                ifname: None,
                fd: Some(7),
                queues: None,
                fds: Vec::new(),
            }
        );
    }

    #[test]
    fn multiqueue_netdev_and_device() {
        let n = run(&[
            "-M",
            "q35",
            "-netdev",
            "tap,id=n0,ifname=tap0,queues=2,script=no,downscript=no,vhost=off",
            "-device",
            "virtio-net-pci,netdev=n0,mq=on,vectors=6",
            "-netdev",
            "tap,id=n1,fds=5:6:7",
            "-device",
            "virtio-net-pci,netdev=n1,mq=on",
        ])
        .unwrap();
        assert!(n[0].mq && n[1].mq);
        assert_eq!(n[0].backend.queues(), 2);
        assert_eq!(
            n[1].backend,
            NetBackendConfig::Tap {
                ifname: None,
                fd: None,
                queues: None,
                fds: vec![5, 6, 7],
            }
        );
        let err = |args: &[&str]| run(args).unwrap_err().to_string();
        fn dev(d: &str) -> Vec<&str> {
            vec![
                "-M",
                "q35",
                "-netdev",
                "tap,id=n0,ifname=t,queues=2",
                "-device",
                d,
            ]
        }
        use crate::config::device::DeviceKind;
        let single = run(&dev("virtio-net-pci,netdev=n0")).unwrap();
        assert!(single[0].check().unwrap_err().contains("needs mq=on"));
        for (d, want) in [
            (
                "virtio-net-pci,netdev=n0,mq=on,vectors=4",
                "vectors= must be 6",
            ),
            ("virtio-net-pci,netdev=n0,mq=maybe", "mq= must be on or off"),
        ] {
            let e = err(&dev(d));
            assert!(e.contains(want), "{d}: {e}");
        }
        for (nd, want) in [
            ("tap,id=n0,queues=0", "queues= must be a number in 1..=127"),
            ("tap,id=n0,queues=x", "queues= must be a number in 1..=127"),
            ("tap,id=n0,fds=3:x", "fds= must be descriptor numbers"),
        ] {
            let e = err(&[
                "-netdev",
                nd,
                "-device",
                "virtio-net-device,netdev=n0,mq=on",
            ]);
            assert!(e.contains(want), "{nd}: {e}");
        }
    }

    #[test]
    fn host_mtu_is_taken_in_range_and_refused_outside() {
        let dev = |m: &str| {
            run(&[
                "-netdev",
                "tap,id=n0,ifname=tap0",
                "-device",
                &format!("virtio-net-device,netdev=n0,host_mtu={m}"),
            ])
        };
        assert_eq!(dev("9000").unwrap()[0].host_mtu, Some(9000));
        assert_eq!(dev("0x44").unwrap()[0].host_mtu, Some(68));
        assert_eq!(dev("65535").unwrap()[0].host_mtu, Some(65535));
        for bad in ["67", "65536", "0", "-1", "jumbo", "99999999999999999999"] {
            let e = dev(bad).unwrap_err().to_string();
            assert!(
                e.contains("host_mtu= must be a number in 68..=65535"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn nic_and_legacy_net_pairs() {
        let n = run(&[
            "-nic",
            "tap,ifname=t1,script=no,model=virtio-net-device,mac=52:54:00:aa:bb:cc",
        ])
        .unwrap();
        assert_eq!(n[0].backend, tap("t1"));
        assert_eq!(n[0].transport, Some(Transport::Mmio));
        assert_eq!(n[0].mac.as_deref(), Some("52:54:00:aa:bb:cc"));
        let n = run(&[
            "-net",
            "nic,model=virtio",
            "-net",
            "tap,ifname=t2,script=no",
        ])
        .unwrap();
        assert_eq!((n[0].backend.clone(), n[0].transport), (tap("t2"), None));
        assert!(run(&["-net", "none"]).unwrap().is_empty());
        assert!(run(&["-nic", "none"]).unwrap().is_empty());
        assert!(run(&["-net", "nic"]).is_err(), "a NIC without a tap");
    }

    #[test]
    fn user_with_host_forwards() {
        let n = run(&[
            "-nic",
            "user,hostfwd=tcp::8080-:80,hostfwd=udp::5007-:7,model=virtio-net-device",
        ])
        .unwrap();
        let NetBackendConfig::User { hostfwd } = &n[0].backend else {
            panic!("{n:?}")
        };
        assert_eq!(hostfwd.len(), 2);
        assert!(hostfwd[1].udp && hostfwd[1].guest_port == 7);
        let n = run(&["-net", "nic", "-net", "user,hostfwd=tcp::2222-:22"]).unwrap();
        assert!(matches!(&n[0].backend, NetBackendConfig::User { hostfwd } if hostfwd.len() == 1));
    }

    #[test]
    fn bridge_as_qemu_spells_it() {
        let n = run(&[
            "-netdev",
            "bridge,id=b,br=cmbr0,helper=/opt/helper",
            "-device",
            "virtio-net-pci,netdev=b",
            "-nic",
            "bridge",
        ])
        .unwrap();
        assert_eq!(
            n[0].backend,
            NetBackendConfig::Bridge {
                br: "cmbr0".into(),
                helper: Some("/opt/helper".into())
            }
        );
        assert_eq!(
            n[1].backend,
            NetBackendConfig::Bridge {
                br: "br0".into(),
                helper: None
            }
        );
        let e = run(&["-netdev", "bridge,id=b,ifname=x"]).unwrap_err();
        assert!(e.to_string().contains("ifname"), "{e}");
    }

    #[test]
    fn refusals_say_why() {
        let cases: &[(&[&str], &str)] = &[
            (&["-nic", "tap,ifname=t,model=e1000"], "e1000"),
            (&["-net", "nic,model=rtl8139"], "rtl8139"),
            (
                &["-netdev", "tap,id=n,ifname=t,script=/etc/qemu-ifup"],
                "ifup",
            ),
            (&["-netdev", "tap,id=n,ifname=t,vhost=on"], "vhost"),
            (
                &["-netdev", "tap,id=n,ifname=t,queues=400"],
                "queues= must be a number in 1..=127",
            ),
            (
                &["-netdev", "user,id=n,hostfwd=tcp:1.2.3.4:1-:2"],
                "host address",
            ),
            (&["-netdev", "user,id=n,smb=/x"], "smb"),
            (&["-netdev", "tap,id=n,ifname=t"], "no NIC uses"),
            (&["-device", "virtio-net-pci,netdev=x"], "no -netdev"),
            (
                &[
                    "-netdev",
                    "tap,id=n,ifname=a",
                    "-netdev",
                    "tap,id=n,ifname=b",
                ],
                "Duplicate ID",
            ),
            (
                &[
                    "-netdev",
                    "tap,id=n,ifname=a",
                    "-device",
                    "virtio-net-pci,netdev=n",
                    "-device",
                    "virtio-net-pci,netdev=n,id=x",
                ],
                "already in use",
            ),
            (
                &[
                    "-nic",
                    "tap,ifname=a,mac=52:54:00:12:34:57",
                    "-nic",
                    "tap,ifname=b",
                ],
                "same MAC",
            ),
            (
                &["-nic", "tap,ifname=a,mac=52:54:00:12:34"],
                "six hex bytes",
            ),
        ];
        for (args, want) in cases {
            let e = run(args).unwrap_err().to_string();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }
}
