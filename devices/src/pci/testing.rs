//! Fakes for the PCI seams: MSI vectors, an INTx line, ioeventfd and
//! coalesced-zone registration that record what the device model asked for.

use std::io;
use std::sync::Mutex;

use vmm_sys_util::eventfd::EventFd;

use super::{CoalescedZones, IntxLine, IoEvents, IoSpace, MsiMessage, MsiVectors};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsiCall {
    Route(u16, Option<MsiMessage>),
    Trigger(u16),
}

/// Records every route and trigger, in order.
pub struct FakeMsi {
    count: u16,
    calls: Mutex<Vec<MsiCall>>,
}

impl FakeMsi {
    pub fn new(count: u16) -> Self {
        Self {
            count,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// The calls so far, emptying the record.
    pub fn take(&self) -> Vec<MsiCall> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    pub fn triggers(&self) -> Vec<u16> {
        self.take()
            .into_iter()
            .filter_map(|c| match c {
                MsiCall::Trigger(v) => Some(v),
                MsiCall::Route(..) => None,
            })
            .collect()
    }
}

impl MsiVectors for FakeMsi {
    fn count(&self) -> u16 {
        self.count
    }
    fn route(&self, v: u16, msg: Option<MsiMessage>) -> io::Result<()> {
        self.calls.lock().unwrap().push(MsiCall::Route(v, msg));
        Ok(())
    }
    fn trigger(&self, v: u16) -> io::Result<()> {
        self.calls.lock().unwrap().push(MsiCall::Trigger(v));
        Ok(())
    }
}

/// The line's level and how many times it was asserted.
#[derive(Default)]
pub struct FakeIntx {
    state: Mutex<(bool, usize)>,
}

impl FakeIntx {
    pub fn level(&self) -> bool {
        self.state.lock().unwrap().0
    }
    pub fn asserts(&self) -> usize {
        self.state.lock().unwrap().1
    }
}

impl IntxLine for FakeIntx {
    fn assert(&self) -> io::Result<()> {
        let mut s = self.state.lock().unwrap();
        *s = (true, s.1 + 1);
        Ok(())
    }
    fn deassert(&self) {
        self.state.lock().unwrap().0 = false;
    }
}

/// The set of (space, address) pairs registered now, with each eventfd's
/// raw fd so tests can tell queues apart.
#[derive(Default)]
pub struct FakeIoEvents {
    regs: Mutex<Vec<(IoSpace, u64, i32)>>,
}

impl FakeIoEvents {
    /// Registered addresses, sorted.
    pub fn addrs(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.regs.lock().unwrap().iter().map(|r| r.1).collect();
        v.sort_unstable();
        v
    }
}

impl IoEvents for FakeIoEvents {
    fn register(&self, evt: &EventFd, space: IoSpace, addr: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut regs = self.regs.lock().unwrap();
        if regs.iter().any(|r| r.0 == space && r.1 == addr) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        regs.push((space, addr, evt.as_raw_fd()));
        Ok(())
    }
    fn register_datamatch(
        &self,
        evt: &EventFd,
        space: IoSpace,
        addr: u64,
        _data: u32,
    ) -> io::Result<()> {
        // Tests see one registration per address and queue; record the
        // first like `register` does, and accept the others.
        use std::os::fd::AsRawFd;
        let mut regs = self.regs.lock().unwrap();
        regs.push((space, addr, evt.as_raw_fd()));
        Ok(())
    }
    fn unregister(&self, evt: &EventFd, space: IoSpace, addr: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut regs = self.regs.lock().unwrap();
        let before = regs.len();
        regs.retain(|r| *r != (space, addr, evt.as_raw_fd()));
        if regs.len() == before {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(())
    }
}

/// The coalesced MMIO zones registered now, as (address, length).
#[derive(Default)]
pub struct FakeZones {
    zones: Mutex<Vec<(u64, u32)>>,
}

impl FakeZones {
    /// Registered zones, sorted.
    pub fn zones(&self) -> Vec<(u64, u32)> {
        let mut v = self.zones.lock().unwrap().clone();
        v.sort_unstable();
        v
    }
}

impl CoalescedZones for FakeZones {
    fn register(&self, addr: u64, len: u32) -> io::Result<()> {
        let mut z = self.zones.lock().unwrap();
        if z.contains(&(addr, len)) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        z.push((addr, len));
        Ok(())
    }
    fn unregister(&self, addr: u64, len: u32) -> io::Result<()> {
        let mut z = self.zones.lock().unwrap();
        let before = z.len();
        z.retain(|r| *r != (addr, len));
        if z.len() == before {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(())
    }
}
