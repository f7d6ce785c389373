//! Opening `vfio-pci` devices: each is checked against this host's sysfs
//! and /dev (`devices::vfio::kernel::plan`), which refuses with the reason
//! where VFIO is absent (this host), the device is not bound to vfio-pci or
//! its IOMMU group holds devices not assigned too. Driving an assignable
//! device through the kernel is not implemented yet: refused by name.

use std::path::Path;

use casemate_devices::vfio::kernel::{canonical_bdf, plan, HostDevice};

use crate::config::DeviceConfig;
use crate::resources::ResourceError;

pub fn open_all(devices: &[DeviceConfig]) -> Result<(), ResourceError> {
    let list: Vec<_> = devices.iter().filter_map(|d| d.host_assigned()).collect();
    let bdfs: Vec<String> = list
        .iter()
        .filter_map(|c| c.host.as_deref().and_then(|h| canonical_bdf(h).ok()))
        .collect();
    for c in list {
        let dev = match (&c.host, &c.sysfsdev) {
            (Some(h), _) => HostDevice::Bdf(h.clone()),
            (None, Some(p)) => HostDevice::Sysfs(p.clone()),
            // validate() refused this already.
            (None, None) => continue,
        };
        let p = plan(Path::new("/sys"), Path::new("/dev"), &dev, &bdfs).map_err(|source| {
            ResourceError::VfioPci {
                id: c.id.clone(),
                source,
            }
        })?;
        return Err(ResourceError::VfioPciNotYet {
            id: c.id.clone(),
            bdf: p.bdf,
        });
    }
    Ok(())
}
