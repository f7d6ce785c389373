//! Two VMs on one Linux bridge, inside a test namespace: through
//! `-netdev bridge` (QEMU's `qemu-bridge-helper` makes each tap and passes
//! it over a socket) and through `-netdev tap` on taps the test attached
//! to the bridge itself. The probe guests only answer, so the host end of
//! the bridge (10.0.2.2/24, in the namespace only) pings and UDP-echoes
//! both; guest A also ARPs for guest B, a frame between the two VMs.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use casemate_tests::netns::{finish, ping, udp_echoes, NetNs};
use casemate_tests::Report;

const A: [u8; 4] = [10, 0, 2, 15];
const B: [u8; 4] = [10, 0, 2, 16];
const HELPER: &str = "/usr/lib/qemu/qemu-bridge-helper";
const CONF: &str = "/etc/qemu/bridge.conf";

/// The helper reads only `/etc/qemu/bridge.conf` (it has no option for
/// another file): this guard appends `allow` lines for the test's bridges
/// and puts the file (and `/etc/qemu`) back as they were on drop. The lock
/// keeps two tests from editing it at once.
struct BridgeConf {
    saved: Option<Vec<u8>>,
    made_dir: bool,
    _lock: std::sync::MutexGuard<'static, ()>,
}

static CONF_LOCK: Mutex<()> = Mutex::new(());

impl BridgeConf {
    fn allow(bridges: &[&str]) -> Self {
        let lock = CONF_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let saved = std::fs::read(CONF).ok();
        let made_dir = !Path::new("/etc/qemu").exists();
        std::fs::create_dir_all("/etc/qemu").expect("/etc/qemu");
        let mut text = saved.clone().unwrap_or_default();
        if !text.is_empty() && !text.ends_with(b"\n") {
            text.push(b'\n');
        }
        for b in bridges {
            text.extend(format!("allow {b}\n").bytes());
        }
        std::fs::write(CONF, text).expect(CONF);
        BridgeConf {
            saved,
            made_dir,
            _lock: lock,
        }
    }
}

impl Drop for BridgeConf {
    fn drop(&mut self) {
        match &self.saved {
            Some(t) => drop(std::fs::write(CONF, t)),
            None => drop(std::fs::remove_file(CONF)),
        }
        if self.made_dir {
            let _ = std::fs::remove_dir("/etc/qemu");
        }
    }
}

/// Guests A and B on `cmbr0` (host end 10.0.2.2), each with its netdev:
/// both answer the host's UDP and pings while both run.
fn two_vms(ns: &NetNs, netdev_a: &str, netdev_b: &str) {
    let vm = |netdev: &str, mac: &str, ip: &str, peer: &str| {
        ns.casemate(&[
            "-netdev",
            netdev,
            "-device",
            &format!("virtio-net-device,netdev=n0,mac={mac}"),
            "-append",
            &format!("probe=net ip={ip} peer={peer} ms=6000"),
        ])
    };
    let a = vm(netdev_a, "52:54:00:12:34:56", "10.0.2.15", "10.0.2.16");
    let b = vm(netdev_b, "52:54:00:12:34:57", "10.0.2.16", "10.0.2.15");
    let (udp, pings) = ns.enter(|| {
        let udp = (
            udp_echoes(A, 3, Duration::from_secs(5)),
            udp_echoes(B, 3, Duration::from_secs(5)),
        );
        let pings = (
            (1..=2).filter(|&s| ping(A, s)).count(),
            (1..=2).filter(|&s| ping(B, s)).count(),
        );
        (udp, pings)
    });
    // While both run, the bridge has (at least) their two taps.
    let ports = Command::new("ip")
        .args(["-n", &ns.name, "-o", "link", "show", "master", "cmbr0"])
        .output()
        .expect("ip link show master");
    let ports = String::from_utf8_lossy(&ports.stdout).lines().count();
    for (name, child) in [("A", a), ("B", b)] {
        let out = finish(child, Duration::from_secs(30));
        let r = Report::parse(&String::from_utf8_lossy(&out.stdout));
        assert!(
            out.status.success(),
            "VM {name}: {}\n{}",
            r.raw,
            String::from_utf8_lossy(&out.stderr)
        );
        r.assert_ok();
        println!("VM {name}: {}", r.raw.trim_end().replace('\n', " | "));
    }
    println!("bridge ports {ports}, udp {udp:?}, pings {pings:?}");
    assert_eq!(udp, (3, 3));
    assert_eq!(pings, (2, 2));
    assert_eq!(ports, 2, "the two VMs' taps on cmbr0");
}

#[test]
fn two_vms_on_one_bridge_through_the_helper() {
    let test = "two_vms_on_one_bridge_through_the_helper";
    if !Path::new(HELPER).exists() {
        assert!(!casemate_tests::in_ci(), "{test}: needs {HELPER} in CI");
        println!("SKIP {test}: no {HELPER} (apt-get install qemu-system-x86)");
        return;
    }
    let Some(ns) = NetNs::new(test) else {
        return;
    };
    ns.bridge("cmbr0", "10.0.2.2/24");
    ns.bridge("cmbr1", "10.0.3.2/24");
    let _conf = BridgeConf::allow(&["cmbr0"]);
    two_vms(&ns, "bridge,id=n0,br=cmbr0", "bridge,id=n0,br=cmbr0");

    // A bridge the ACL does not allow: the helper's own reason.
    let refused = |netdev: &str| {
        let out = finish(
            ns.casemate(&["-netdev", netdev, "-device", "virtio-net-device,netdev=n0"]),
            Duration::from_secs(20),
        );
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = refused("bridge,id=n0,br=cmbr1");
    println!("not allowed: {e}");
    assert!(e.contains("cmbr1") && e.contains("access denied"), "{e}");
    let e = refused("bridge,id=n0,br=cmbr0,helper=/nonexistent/helper");
    println!("no helper: {e}");
    assert!(
        e.contains("/nonexistent/helper") && e.contains("not installed"),
        "{e}"
    );
}

#[test]
fn two_vms_on_taps_the_test_attached_to_a_bridge() {
    let Some(ns) = NetNs::new("two_vms_on_taps_the_test_attached_to_a_bridge") else {
        return;
    };
    ns.bridge("cmbr0", "10.0.2.2/24");
    for t in ["tapa", "tapb"] {
        ns.tap(t);
        ns.ip(&["link", "set", t, "master", "cmbr0"]);
    }
    two_vms(
        &ns,
        "tap,id=n0,ifname=tapa,script=no,downscript=no",
        "tap,id=n0,ifname=tapb,script=no,downscript=no",
    );
}
