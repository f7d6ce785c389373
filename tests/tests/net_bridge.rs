//! Two VMs on one Linux bridge, inside a test namespace: through
//! `-netdev bridge` (QEMU's `qemu-bridge-helper` makes each tap and passes
//! it over a socket) and through `-netdev tap` on taps the test attached
//! to the bridge itself. The probe guests only answer, so the host end of
//! the bridge (10.0.2.2/24, in the namespace only) pings and UDP-echoes
//! both; guest A also ARPs for guest B, a frame between the two VMs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use casemate_tests::netns::{finish, ping, udp_echoes, NetNs};
use casemate_tests::{bin, Report};

const A: [u8; 4] = [10, 0, 2, 15];
const B: [u8; 4] = [10, 0, 2, 16];
const HELPER: &str = "/usr/lib/qemu/qemu-bridge-helper";

/// The helper reads only `/etc/qemu/bridge.conf` (the path is compiled
/// in; it has no option for another file) and Casemate ships no helper of
/// its own. So the test never edits the host's `/etc`: each VMM it starts
/// through the helper runs in a private mount namespace where `/etc` is an
/// overlay of the host's, whose upper layer (a directory the test owns)
/// holds `qemu/bridge.conf` with the test's `allow` lines. The helper, a
/// child of that VMM, reads that file; the host sees nothing and nothing
/// is left to restore.
struct TestAcl {
    dir: PathBuf,
}

impl TestAcl {
    fn allow(test: &str, bridges: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("cm-acl-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("upper/qemu")).expect("acl upper dir");
        std::fs::create_dir_all(dir.join("work")).expect("acl work dir");
        let text: String = bridges.iter().map(|b| format!("allow {b}\n")).collect();
        std::fs::write(dir.join("upper/qemu/bridge.conf"), text).expect("test ACL");
        TestAcl { dir }
    }

    /// `casemate ARGS` in `ns`, seeing the test's ACL as the helper's.
    fn casemate(&self, ns: &NetNs, args: &[&str]) -> Child {
        let overlay = format!(
            "lowerdir=/etc,upperdir={},workdir={}",
            self.dir.join("upper").display(),
            self.dir.join("work").display()
        );
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t overlay overlay -o "$0" /etc && exec "$@""#)
            .arg(overlay)
            .args(["ip", "netns", "exec", &ns.name])
            .arg(bin("casemate"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare casemate")
    }
}

impl Drop for TestAcl {
    fn drop(&mut self) {
        // The overlay's work dir holds a root-only "work" subdirectory;
        // remove_dir_all takes it as root.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Guests A and B on `cmbr0` (host end 10.0.2.2), each with its netdev,
/// started by `launch`: both answer the host's UDP and pings while both run.
fn two_vms(ns: &NetNs, launch: &dyn Fn(&[&str]) -> Child, netdev_a: &str, netdev_b: &str) {
    let vm = |netdev: &str, mac: &str, ip: &str, peer: &str| {
        launch(&[
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
    let acl = TestAcl::allow("helper", &["cmbr0"]);
    let launch = |args: &[&str]| acl.casemate(&ns, args);
    two_vms(
        &ns,
        &launch,
        "bridge,id=n0,br=cmbr0",
        "bridge,id=n0,br=cmbr0",
    );

    // A bridge the ACL does not allow: the helper's own reason.
    let refused = |netdev: &str| {
        let out = finish(
            acl.casemate(
                &ns,
                &["-netdev", netdev, "-device", "virtio-net-device,netdev=n0"],
            ),
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
        &|args: &[&str]| ns.casemate(args),
        "tap,id=n0,ifname=tapa,script=no,downscript=no",
        "tap,id=n0,ifname=tapb,script=no,downscript=no",
    );
}
