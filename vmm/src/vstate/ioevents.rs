//! `IoEvents` over KVM_IOEVENTFD: lets a PCI device move its notification
//! addresses when the guest moves its BAR; `CoalescedZones` over
//! KVM's coalesced MMIO zones, which move the same way.

use std::io;
use std::sync::Arc;

use casemate_devices::pci::{IoEvents, IoSpace};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

pub struct KvmIoEvents(pub Arc<VmFd>);

fn address(space: IoSpace, addr: u64) -> IoEventAddress {
    match space {
        IoSpace::Pio => IoEventAddress::Pio(addr),
        IoSpace::Mmio => IoEventAddress::Mmio(addr),
    }
}

/// `CoalescedZones` over KVM_(UN)REGISTER_COALESCED_MMIO (MMIO only).
pub struct KvmCoalescedZones(pub Arc<VmFd>);

impl casemate_devices::pci::CoalescedZones for KvmCoalescedZones {
    fn register(&self, addr: u64, len: u32) -> io::Result<()> {
        self.0
            .register_coalesced_mmio(IoEventAddress::Mmio(addr), len)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }

    fn unregister(&self, addr: u64, len: u32) -> io::Result<()> {
        self.0
            .unregister_coalesced_mmio(IoEventAddress::Mmio(addr), len)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}

impl IoEvents for KvmIoEvents {
    fn register(&self, evt: &EventFd, space: IoSpace, addr: u64) -> io::Result<()> {
        // No data match and length 0: any write of any width notifies.
        self.0
            .register_ioevent(evt, &address(space, addr), NoDatamatch)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }

    fn register_datamatch(
        &self,
        evt: &EventFd,
        space: IoSpace,
        addr: u64,
        data: u32,
    ) -> io::Result<()> {
        self.0
            .register_ioevent(evt, &address(space, addr), data)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }

    fn unregister(&self, evt: &EventFd, space: IoSpace, addr: u64) -> io::Result<()> {
        self.0
            .unregister_ioevent(evt, &address(space, addr), NoDatamatch)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}
