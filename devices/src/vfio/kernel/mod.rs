//! The kernel backend's host side: finding an assigned device in sysfs and
//! refusing clearly what cannot be assigned (no VFIO in the kernel, a
//! device not bound to vfio-pci, an IOMMU group with devices this VM does
//! not also take), and choosing how to open it (the group node under
//! /dev/vfio, or the iommufd cdev under /dev/vfio/devices where the kernel
//! has one).
//!
//! Both roots are parameters, so tests run on a recorded tree in a temp
//! dir. `plan` is the part a host without VFIO (this one) can exercise;
//! `KernelVfio` (`device`) then opens and drives the device through
//! `vfio-ioctls`.

mod device;

use std::path::{Path, PathBuf};

pub use device::KernelVfio;

/// Which device: `host=BUS:DEV.FN` (segment 0 unless given) or
/// `sysfsdev=PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostDevice {
    Bdf(String),
    Sysfs(PathBuf),
}

/// How to open an assignable device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelPlan {
    /// `DDDD:BB:DD.F`.
    pub bdf: String,
    pub group: u32,
    /// `/dev/vfio/<group>`.
    pub group_node: PathBuf,
    /// `/dev/vfio/devices/vfioN` where the kernel offers iommufd cdevs.
    pub cdev: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    #[error(
        "{dev}/vfio does not exist: this host's kernel has no VFIO (CONFIG_VFIO, \
         vfio-pci loaded) to assign devices with"
    )]
    NoVfio { dev: PathBuf },
    #[error("'{0}' is not a PCI address (BUS:DEV.FN or DOMAIN:BUS:DEV.FN)")]
    BadBdf(String),
    #[error("no PCI device at {0}")]
    NoDevice(PathBuf),
    #[error(
        "{bdf} is bound to {driver}, not vfio-pci: unbind it and bind it to vfio-pci \
         (driver_override) first"
    )]
    NotVfio { bdf: String, driver: String },
    #[error("{bdf} has no IOMMU group: the host runs without an IOMMU (or it is off)")]
    NoGroup { bdf: String },
    #[error(
        "{bdf}: IOMMU group {group} also holds {others:?}, not assigned to this VM: \
         a group is assigned whole"
    )]
    GroupShared {
        bdf: String,
        group: u32,
        others: Vec<String>,
    },
    #[error("{bdf}: {node} is missing although the device is bound to vfio-pci")]
    NoGroupNode { bdf: String, node: PathBuf },
}

/// `BUS:DEV.FN` or `DOMAIN:BUS:DEV.FN` in canonical `DDDD:BB:DD.F` form.
pub fn canonical_bdf(s: &str) -> Result<String, KernelError> {
    let bad = || KernelError::BadBdf(s.to_string());
    let parts: Vec<&str> = s.split(':').collect();
    let (dom, bus, devfn) = match parts.as_slice() {
        [b, df] => ("0", *b, *df),
        [d, b, df] => (*d, *b, *df),
        _ => return Err(bad()),
    };
    let (dev, func) = devfn.split_once('.').ok_or_else(bad)?;
    let hex = |v: &str, max: u32| {
        u32::from_str_radix(v, 16)
            .ok()
            .filter(|&n| n <= max && !v.is_empty() && v.len() <= 4)
            .ok_or_else(bad)
    };
    let (d, b, dv, f) = (
        hex(dom, 0xffff)?,
        hex(bus, 0xff)?,
        hex(dev, 0x1f)?,
        hex(func, 7)?,
    );
    Ok(format!("{d:04x}:{b:02x}:{dv:02x}.{f:x}"))
}

fn link_name(p: &Path) -> Option<String> {
    std::fs::read_link(p)
        .ok()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// Check that `dev` can be assigned and say how to open it. `sys` and
/// `devfs` are `/sys` and `/dev` (temp dirs in tests); `assigned` lists
/// the canonical BDFs of every device this VM assigns (a group must be
/// taken whole).
pub fn plan(
    sys: &Path,
    devfs: &Path,
    dev: &HostDevice,
    assigned: &[String],
) -> Result<KernelPlan, KernelError> {
    let vfio = devfs.join("vfio");
    if !vfio.is_dir() {
        return Err(KernelError::NoVfio {
            dev: devfs.to_path_buf(),
        });
    }
    let dir = match dev {
        HostDevice::Bdf(b) => sys.join("bus/pci/devices").join(canonical_bdf(b)?),
        HostDevice::Sysfs(p) => p.clone(),
    };
    if !dir.join("config").exists() {
        return Err(KernelError::NoDevice(dir));
    }
    let bdf = std::fs::canonicalize(&dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    let driver = link_name(&dir.join("driver")).unwrap_or_else(|| "no driver".into());
    if driver != "vfio-pci" {
        return Err(KernelError::NotVfio { bdf, driver });
    }
    let group: u32 = link_name(&dir.join("iommu_group"))
        .and_then(|g| g.parse().ok())
        .ok_or_else(|| KernelError::NoGroup { bdf: bdf.clone() })?;
    let mut others: Vec<String> = std::fs::read_dir(dir.join("iommu_group/devices"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|d| *d != bdf && !assigned.contains(d))
                .collect()
        })
        .unwrap_or_default();
    if !others.is_empty() {
        others.sort();
        return Err(KernelError::GroupShared { bdf, group, others });
    }
    let group_node = vfio.join(group.to_string());
    if !group_node.exists() {
        return Err(KernelError::NoGroupNode {
            bdf,
            node: group_node,
        });
    }
    let cdev = std::fs::read_dir(dir.join("vfio-dev"))
        .ok()
        .and_then(|mut rd| rd.find_map(|e| e.ok()))
        .map(|e| vfio.join("devices").join(e.file_name()))
        .filter(|p| p.exists());
    Ok(KernelPlan {
        bdf,
        group,
        group_node,
        cdev,
    })
}

#[cfg(test)]
mod tests;
