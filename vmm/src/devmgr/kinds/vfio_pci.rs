//! Opening `vfio-pci` devices, once per process: each is checked against
//! this host's sysfs and /dev (`devices::vfio::kernel::plan`), which
//! refuses with the reason where VFIO is absent (this host), the device is
//! not bound to vfio-pci or its IOMMU group holds devices not assigned
//! too; then opened through `vfio-ioctls` (`KernelVfio`). Placing it is
//! the same as for vfio-user (`devmgr::pci::vfio`).

use std::path::Path;

use std::sync::Arc;

use casemate_devices::vfio::kernel::{canonical_bdf, plan, HostDevice, KernelVfio};

use crate::config::DeviceConfig;
use crate::resources::ResourceError;

/// One opened device per `vfio-pci` entry of `devices`, in order.
pub fn open_all(devices: &[DeviceConfig]) -> Result<Vec<Arc<KernelVfio>>, ResourceError> {
    let list: Vec<_> = devices.iter().filter_map(|d| d.host_assigned()).collect();
    let bdfs: Vec<String> = list
        .iter()
        .filter_map(|c| c.host.as_deref().and_then(|h| canonical_bdf(h).ok()))
        .collect();
    let mut opened = Vec::new();
    for c in list {
        let dev = match (&c.host, &c.sysfsdev) {
            (Some(h), _) => HostDevice::Bdf(h.clone()),
            (None, Some(p)) => HostDevice::Sysfs(p.clone()),
            // validate() refused this already.
            (None, None) => {
                return Err(ResourceError::VfioPciNotYet {
                    id: c.id.clone(),
                    bdf: "(none)".into(),
                })
            }
        };
        let p = plan(Path::new("/sys"), Path::new("/dev"), &dev, &bdfs).map_err(|source| {
            ResourceError::VfioPci {
                id: c.id.clone(),
                source,
            }
        })?;
        let dir = Path::new("/sys/bus/pci/devices").join(&p.bdf);
        let dev = KernelVfio::open(&dir).map_err(|source| ResourceError::VfioPciOpen {
            id: c.id.clone(),
            bdf: p.bdf.clone(),
            source,
        })?;
        opened.push(Arc::new(dev));
    }
    Ok(opened)
}
