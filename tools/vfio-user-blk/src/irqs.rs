//! The served function's interrupt and notification seams, as this
//! process implements them: each MSI-X vector and INTx fire the eventfd
//! the client passed over the socket; routes are the client's business
//! (its hypervisor routes the irqfds); queue notifications arrive as
//! region writes, which the transport turns into kicks, so ioeventfd
//! registration has nothing to do.

use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use casemate_devices::pci::{IntxLine, IoEvents, IoSpace, MsiMessage, MsiVectors};
use vmm_sys_util::eventfd::EventFd;

fn signal(f: &Mutex<Option<File>>) -> io::Result<()> {
    let mut g = f.lock().unwrap_or_else(|p| p.into_inner());
    match g.as_mut() {
        Some(f) => f.write_all(&1u64.to_ne_bytes()),
        None => Ok(()),
    }
}

/// MSI-X vectors: the client's eventfd per vector, when it gave one.
pub struct Vectors {
    fds: Vec<Mutex<Option<File>>>,
}

impl Vectors {
    pub fn new(count: u16) -> Self {
        Self {
            fds: (0..count).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// Give vector `v` the eventfd `fd` (None: take it away). Unknown
    /// vectors are refused.
    pub fn set(&self, v: u32, fd: Option<File>) -> io::Result<()> {
        let slot = usize::try_from(v)
            .ok()
            .and_then(|v| self.fds.get(v))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        *slot.lock().unwrap_or_else(|p| p.into_inner()) = fd;
        Ok(())
    }

    pub fn clear(&self) {
        for f in &self.fds {
            *f.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    pub fn any(&self) -> bool {
        self.fds
            .iter()
            .any(|f| f.lock().unwrap_or_else(|p| p.into_inner()).is_some())
    }
}

impl MsiVectors for Vectors {
    fn count(&self) -> u16 {
        self.fds.len() as u16
    }
    fn route(&self, _v: u16, _msg: Option<MsiMessage>) -> io::Result<()> {
        Ok(())
    }
    fn trigger(&self, v: u16) -> io::Result<()> {
        match self.fds.get(usize::from(v)) {
            Some(f) => signal(f),
            None => Ok(()),
        }
    }
}

/// INTA#: the client's trigger eventfd and the level the device holds.
#[derive(Default)]
pub struct Intx {
    pub trigger: Mutex<Option<File>>,
    level: AtomicBool,
}

impl Intx {
    pub fn high(&self) -> bool {
        self.level.load(Ordering::Acquire)
    }
    pub fn raise(&self) {
        let _ = signal(&self.trigger);
    }
}

impl IntxLine for Intx {
    fn assert(&self) -> io::Result<()> {
        self.level.store(true, Ordering::Release);
        signal(&self.trigger)
    }
    fn deassert(&self) {
        self.level.store(false, Ordering::Release);
    }
}

/// See the module doc.
pub struct NoIoEvents;

impl IoEvents for NoIoEvents {
    fn register(&self, _evt: &EventFd, _space: IoSpace, _addr: u64) -> io::Result<()> {
        Ok(())
    }
    fn register_datamatch(
        &self,
        _evt: &EventFd,
        _space: IoSpace,
        _addr: u64,
        _data: u32,
    ) -> io::Result<()> {
        Ok(())
    }
    fn unregister(&self, _evt: &EventFd, _space: IoSpace, _addr: u64) -> io::Result<()> {
        Ok(())
    }
}
