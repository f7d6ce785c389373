//! Registry entry for virtio-net: opens the tap once per process (by name,
//! the inherited fd, or from QEMU's bridge helper) or starts passt and builds `NetDevice` on it at each boot, so a
//! guest reboot keeps the same tap.

use std::sync::Arc;

use casemate_devices::virtio::net::bridge;
use casemate_devices::virtio::net::passt::{Forward, Passt};
use casemate_devices::virtio::net::tap::{Tap, TapError};
use casemate_devices::virtio::net::{NetBackend, NetConfig as Model, NetDevice};
use casemate_devices::virtio::VirtioDevice;

use super::{DeviceFactory, DeviceSpec};
use crate::config::{NetBackendConfig, NetConfig};
use crate::resources::{FdSets, ResourceError};

struct Net {
    backend: Arc<dyn NetBackend>,
    /// A multiqueue tap's other queues, one pair each.
    more: Vec<Arc<dyn NetBackend>>,
    mac: Option<[u8; 6]>,
    mtu: Option<u16>,
    mq: bool,
}

/// A tap by name, with `queues` queues; one this process made gets the
/// `host_mtu` (a tap that already existed keeps its owner's settings, as
/// with QEMU).
fn open_tap(ifname: &str, queues: u16, mtu: Option<u16>) -> Result<Vec<Tap>, TapError> {
    let taps = if queues > 1 {
        Tap::open_queues(ifname, queues)?
    } else {
        vec![Tap::open(ifname)?]
    };
    if let Some(m) = mtu.filter(|_| taps[0].created()) {
        taps[0].set_mtu(m)?;
    }
    Ok(taps)
}

fn shared(taps: Vec<Tap>) -> Vec<Arc<dyn NetBackend>> {
    taps.into_iter()
        .map(|t| Arc::new(t) as Arc<dyn NetBackend>)
        .collect()
}

impl DeviceSpec for NetConfig {
    fn open(&self, fds: &FdSets) -> Result<Box<dyn DeviceFactory>, ResourceError> {
        let err = |source| ResourceError::Net {
            id: self.id.clone(),
            source,
        };
        let mut all: Vec<Arc<dyn NetBackend>> = match &self.backend {
            NetBackendConfig::Tap { fd: Some(fd), .. } => {
                vec![Arc::new(
                    Tap::from_fd(fds.dup_fd("-netdev tap", *fd)?).map_err(err)?,
                )]
            }
            NetBackendConfig::Tap { fds: inherited, .. } if !inherited.is_empty() => {
                let mut taps = Vec::new();
                for fd in inherited {
                    taps.push(Tap::from_fd(fds.dup_fd("-netdev tap,fds=", *fd)?).map_err(err)?);
                }
                shared(taps)
            }
            NetBackendConfig::Tap { ifname, .. } => shared(
                open_tap(
                    ifname.as_deref().unwrap_or(""),
                    self.backend.queues(),
                    self.host_mtu,
                )
                .map_err(err)?,
            ),
            // Also here, before any sandbox: passt is a child process.
            NetBackendConfig::User { hostfwd } => {
                let fwd: Vec<Forward> = hostfwd
                    .iter()
                    .map(|h| Forward {
                        udp: h.udp,
                        host_port: h.host_port,
                        guest_port: h.guest_port,
                    })
                    .collect();
                vec![Arc::new(Passt::start(&self.id, &fwd).map_err(
                    |source| ResourceError::Passt {
                        id: self.id.clone(),
                        source,
                    },
                )?)]
            }
            // Here, before any sandbox: the helper is a forked process.
            NetBackendConfig::Bridge { br, helper } => vec![Arc::new(
                bridge::open(br, helper.as_deref().map(std::path::Path::new)).map_err(
                    |source| ResourceError::Bridge {
                        id: self.id.clone(),
                        source,
                    },
                )?,
            )],
        };
        let tap = all.remove(0);
        log::info!("net {}: {}", self.id, tap.name());
        Ok(Box::new(Net {
            backend: tap,
            more: all,
            mac: self.mac.as_deref().and_then(crate::config::net::parse_mac),
            mtu: self.host_mtu,
            mq: self.mq,
        }))
    }
}

impl DeviceFactory for Net {
    fn kind(&self) -> &'static str {
        "net"
    }

    fn build(&self, name: String) -> Box<dyn VirtioDevice> {
        // Without a MAC in the config (the CLI always sets one), QEMU's
        // default for the NIC's position, which the name carries (`net1`).
        let n = name.trim_start_matches("net").parse().unwrap_or(0);
        let mac = self
            .mac
            .unwrap_or_else(|| crate::config::net::default_mac(n));
        Box::new(NetDevice::new(Model {
            name,
            mac,
            backend: self.backend.clone(),
            mtu: self.mtu,
            mq: self.mq,
            more: self.more.clone(),
        }))
    }
}
