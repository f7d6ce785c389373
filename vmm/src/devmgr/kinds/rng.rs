//! Registry entry for virtio-rng: opens the entropy source once and
//! builds `RngDevice` with QEMU's `max-bytes`/`period` limit at each boot.

use std::sync::Arc;
use std::time::Duration;

use casemate_devices::virtio::rng::{
    EntropySource, RateLimit, RngConfig as Model, RngDevice, RngSource,
};
use casemate_devices::virtio::VirtioDevice;

use super::{DeviceFactory, DeviceSpec};
use crate::config::{RngBackendConfig, RngConfig};
use crate::resources::{FdSets, ResourceError};

struct Rng {
    source: Arc<dyn EntropySource>,
    limit: Option<RateLimit>,
}

impl DeviceSpec for RngConfig {
    fn open(&self, fds: &FdSets) -> Result<Box<dyn DeviceFactory>, ResourceError> {
        let source = match &self.backend {
            RngBackendConfig::Random { filename } => {
                let file = fds.open("rng source", filename, false)?;
                RngSource::file(filename.clone(), file).map_err(|source| ResourceError::Open {
                    what: "rng source",
                    path: filename.clone(),
                    source,
                })?
            }
            RngBackendConfig::Builtin => RngSource::Getrandom,
        };
        Ok(Box::new(Rng {
            source: Arc::new(source),
            limit: self.max_bytes.map(|bytes| RateLimit {
                bytes,
                period: Duration::from_millis(self.period_ms),
            }),
        }))
    }
}

impl DeviceFactory for Rng {
    fn kind(&self) -> &'static str {
        "rng"
    }

    fn build(&self, name: String) -> Box<dyn VirtioDevice> {
        Box::new(RngDevice::new(Model {
            name,
            source: self.source.clone(),
            limit: self.limit,
        }))
    }
}
