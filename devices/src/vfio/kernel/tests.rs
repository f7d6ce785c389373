//! `plan` on recorded sysfs and /dev trees in a temp dir.

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use super::*;

/// A fake /sys and /dev: devices with a driver and an IOMMU group.
struct Tree {
    root: PathBuf,
}

impl Tree {
    fn new(tag: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("casemate-vfio-sysfs-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        std::fs::create_dir_all(root.join("sys/devices/pci0000:00")).unwrap();
        std::fs::create_dir_all(root.join("sys/kernel/iommu_groups")).unwrap();
        std::fs::create_dir_all(root.join("sys/bus/pci/drivers")).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        Self { root }
    }
    fn sys(&self) -> PathBuf {
        self.root.join("sys")
    }
    fn dev(&self) -> PathBuf {
        self.root.join("dev")
    }
    fn vfio(&self) {
        std::fs::create_dir_all(self.dev().join("vfio/devices")).unwrap();
    }
    /// A device `bdf` bound to `driver` in `group`.
    fn device(&self, bdf: &str, driver: Option<&str>, group: Option<u32>) {
        let d = self.sys().join("devices/pci0000:00").join(bdf);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config"), [0u8; 64]).unwrap();
        symlink(&d, self.sys().join("bus/pci/devices").join(bdf)).unwrap();
        if let Some(drv) = driver {
            let dd = self.sys().join("bus/pci/drivers").join(drv);
            std::fs::create_dir_all(&dd).unwrap();
            symlink(&dd, d.join("driver")).unwrap();
        }
        if let Some(g) = group {
            let gd = self.sys().join("kernel/iommu_groups").join(g.to_string());
            std::fs::create_dir_all(gd.join("devices")).unwrap();
            symlink(&gd, d.join("iommu_group")).unwrap();
            symlink(&d, gd.join("devices").join(bdf)).unwrap();
        }
    }
    fn group_node(&self, g: u32) {
        std::fs::write(self.dev().join("vfio").join(g.to_string()), b"").unwrap();
    }
    fn cdev(&self, bdf: &str, name: &str) {
        let d = self.sys().join("devices/pci0000:00").join(bdf);
        std::fs::create_dir_all(d.join("vfio-dev").join(name)).unwrap();
        std::fs::write(self.dev().join("vfio/devices").join(name), b"").unwrap();
    }
    fn plan(&self, d: &str, assigned: &[&str]) -> Result<KernelPlan, KernelError> {
        let a: Vec<String> = assigned.iter().map(|s| s.to_string()).collect();
        plan(&self.sys(), &self.dev(), &HostDevice::Bdf(d.into()), &a)
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[test]
fn bdfs_take_both_spellings_and_refuse_nonsense() {
    assert_eq!(canonical_bdf("01:00.0").unwrap(), "0000:01:00.0");
    assert_eq!(canonical_bdf("0001:3b:1f.7").unwrap(), "0001:3b:1f.7");
    for bad in [
        "",
        "01:00",
        "01:20.0",
        "01:00.8",
        "g1:00.0",
        "1:2:3:4.0",
        "100:00.0",
    ] {
        assert!(
            matches!(canonical_bdf(bad), Err(KernelError::BadBdf(_))),
            "{bad}"
        );
    }
}

#[test]
fn no_dev_vfio_is_refused_first_with_the_reason() {
    let t = Tree::new("novfio");
    t.device("0000:01:00.0", Some("vfio-pci"), Some(5));
    let e = t.plan("01:00.0", &[]).unwrap_err();
    assert!(matches!(e, KernelError::NoVfio { .. }));
    assert!(e.to_string().contains("has no VFIO"), "{e}");
}

#[test]
fn a_device_on_another_driver_or_none_is_refused() {
    let t = Tree::new("driver");
    t.vfio();
    t.device("0000:01:00.0", Some("nvme"), Some(5));
    t.device("0000:02:00.0", None, Some(6));
    let e = t.plan("01:00.0", &[]).unwrap_err();
    assert_eq!(
        e,
        KernelError::NotVfio {
            bdf: "0000:01:00.0".into(),
            driver: "nvme".into()
        }
    );
    assert!(e.to_string().contains("bind it to vfio-pci"));
    let e = t.plan("02:00.0", &[]).unwrap_err();
    assert!(e.to_string().contains("bound to no driver"), "{e}");
    assert!(matches!(
        t.plan("03:00.0", &[]),
        Err(KernelError::NoDevice(_))
    ));
}

#[test]
fn a_group_with_unassigned_devices_is_refused_until_all_are_assigned() {
    let t = Tree::new("group");
    t.vfio();
    t.device("0000:01:00.0", Some("vfio-pci"), Some(7));
    t.device("0000:01:00.1", Some("vfio-pci"), Some(7));
    t.group_node(7);
    let e = t.plan("01:00.0", &[]).unwrap_err();
    assert_eq!(
        e,
        KernelError::GroupShared {
            bdf: "0000:01:00.0".into(),
            group: 7,
            others: vec!["0000:01:00.1".into()]
        }
    );
    let p = t
        .plan("01:00.0", &["0000:01:00.0", "0000:01:00.1"])
        .unwrap();
    assert_eq!(p.group, 7);
    assert_eq!(p.group_node, t.dev().join("vfio/7"));
    assert_eq!(p.cdev, None, "no iommufd cdev here");
}

#[test]
fn no_group_and_a_missing_group_node_are_refused() {
    let t = Tree::new("nogroup");
    t.vfio();
    t.device("0000:01:00.0", Some("vfio-pci"), None);
    t.device("0000:02:00.0", Some("vfio-pci"), Some(9));
    assert!(matches!(
        t.plan("01:00.0", &[]),
        Err(KernelError::NoGroup { .. })
    ));
    let e = t.plan("02:00.0", &[]).unwrap_err();
    assert!(matches!(e, KernelError::NoGroupNode { .. }), "{e}");
}

#[test]
fn the_iommufd_cdev_is_preferred_where_present_and_sysfsdev_works() {
    let t = Tree::new("cdev");
    t.vfio();
    t.device("0000:01:00.0", Some("vfio-pci"), Some(3));
    t.group_node(3);
    t.cdev("0000:01:00.0", "vfio0");
    let p = plan(
        &t.sys(),
        &t.dev(),
        &HostDevice::Sysfs(t.sys().join("bus/pci/devices/0000:01:00.0")),
        &[],
    )
    .unwrap();
    assert_eq!(p.bdf, "0000:01:00.0");
    assert_eq!(p.cdev, Some(t.dev().join("vfio/devices/vfio0")));
}
