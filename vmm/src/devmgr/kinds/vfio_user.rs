//! Opening a `vfio-user-pci` device: the connection to its server, once
//! per process (the device process outlives a guest reboot, like a disk
//! image). Placing it is `devmgr::vfio`.

use std::sync::Arc;
use std::time::Duration;

use casemate_devices::vfio::user::VfioUserDevice;

use crate::config::VfioUserConfig;
use crate::resources::ResourceError;

/// How long one request to the server may take before the device is
/// declared gone (a server that stops answering must not wedge a vCPU
/// for longer).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

pub fn connect(c: &VfioUserConfig) -> Result<Arc<VfioUserDevice>, ResourceError> {
    VfioUserDevice::connect(&c.socket, REPLY_TIMEOUT)
        .map(Arc::new)
        .map_err(|source| ResourceError::VfioUser {
            id: c.id.clone(),
            path: c.socket.clone(),
            source,
        })
}
