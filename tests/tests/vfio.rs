//! Kernel VFIO assignment (`-device vfio-pci`): the refusal this host
//! gives (it has no VFIO), and the hardware tier, ignored by default,
//! that takes a device bound to vfio-pci from `CASEMATE_VFIO_BDF`.

use std::path::Path;

use casemate_tests::{boot_probe, casemate};

#[test]
fn vfio_pci_is_refused_with_this_hosts_reason() {
    let out = casemate(&["-M", "q35", "-device", "vfio-pci,host=00:1f.7"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    if Path::new("/dev/vfio").exists() {
        assert!(err.contains("vfio-pci"), "{err}");
    } else {
        assert!(err.contains("/dev/vfio does not exist"), "{err}");
        assert!(err.contains("has no VFIO"), "{err}");
    }
    let out = casemate(&["-M", "q35", "-device", "vfio-pci,host=1:2:3:4"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a PCI address"), "{err}");
}

#[test]
#[ignore = "needs a host PCI device bound to vfio-pci, named by CASEMATE_VFIO_BDF"]
fn host_device_is_seen_by_the_probe() {
    let Ok(bdf) = std::env::var("CASEMATE_VFIO_BDF") else {
        println!("SKIP host_device_is_seen_by_the_probe: CASEMATE_VFIO_BDF is not set");
        return;
    };
    if !Path::new("/dev/vfio").exists() {
        println!(
            "SKIP host_device_is_seen_by_the_probe: /dev/vfio is absent (no VFIO in this \
             host's kernel), cannot assign {bdf}"
        );
        return;
    }
    let dev = format!("vfio-pci,host={bdf}");
    let (r, out) = boot_probe(&[
        "-M",
        "q35",
        "-m",
        "128M",
        "-device",
        &dev,
        "-append",
        "probe=hello",
    ]);
    r.assert_ok();
    let console = String::from_utf8_lossy(&out.stdout);
    assert!(console.contains("probe: pci bdf=00:02.0"), "{console}");
}
