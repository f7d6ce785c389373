//! The VM's GSI routing table and the MSI-X vectors built on it.
//!
//! KVM_SET_GSI_ROUTING replaces the whole table, so this module keeps the
//! table KVM starts with (PIC and IOAPIC pins) and adds one MSI route per
//! device vector, each on its own GSI above the IOAPIC's pins with one
//! irqfd. Masking and pending bits live in the device model; this module
//! only moves routes and fires irqfds.

use std::io;
use std::sync::{Arc, Mutex};

use casemate_devices::pci::{MsiMessage, MsiVectors};
use kvm_bindings::{
    kvm_irq_routing_entry, KvmIrqRouting, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::vm::VmError;
use crate::arch::layout::IOAPIC_PINS;

/// KVM's limit on routing entries (KVM_MAX_IRQ_ROUTES).
const MAX_ROUTES: usize = 4096;

struct Table {
    /// GSIs above the IOAPIC pins, for MSI routes.
    ids: vm_allocator::IdAllocator,
    msi: Vec<(u32, MsiMessage)>,
}

/// The routing table, shared by every device's vectors.
pub struct GsiRouter {
    vm: Arc<VmFd>,
    table: Mutex<Table>,
}

fn irqchip(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    e
}

/// The table KVM installs with its irqchip: GSI 0-15 on the PICs and the
/// IOAPIC, 16-23 on the IOAPIC only.
fn default_routes() -> Vec<kvm_irq_routing_entry> {
    let mut v = Vec::new();
    for gsi in 0..u32::from(IOAPIC_PINS) {
        if gsi < 8 {
            v.push(irqchip(gsi, KVM_IRQCHIP_PIC_MASTER, gsi));
        } else if gsi < 16 {
            v.push(irqchip(gsi, KVM_IRQCHIP_PIC_SLAVE, gsi - 8));
        }
        v.push(irqchip(gsi, KVM_IRQCHIP_IOAPIC, gsi));
    }
    v
}

fn msi_route(gsi: u32, m: MsiMessage) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi.address_lo = m.addr as u32;
    e.u.msi.address_hi = (m.addr >> 32) as u32;
    e.u.msi.data = m.data;
    e
}

/// What KVM_SET_GSI_ROUTING gets: the irqchip pins, then every MSI route.
fn table_entries(msi: &[(u32, MsiMessage)]) -> Vec<kvm_irq_routing_entry> {
    let mut entries = default_routes();
    entries.extend(msi.iter().map(|&(g, m)| msi_route(g, m)));
    entries
}

impl GsiRouter {
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self {
            vm,
            table: Mutex::new(Table {
                // The range is valid by construction (24 < 4095).
                ids: vm_allocator::IdAllocator::new(u32::from(IOAPIC_PINS), MAX_ROUTES as u32 - 1)
                    .expect("static GSI range"),
                msi: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn alloc(&self, n: u16) -> Result<Vec<u32>, VmError> {
        let mut t = self.lock();
        let mut got = Vec::with_capacity(n.into());
        for _ in 0..n {
            match t.ids.allocate_id() {
                Ok(g) => got.push(g),
                Err(_) => {
                    for g in got {
                        let _ = t.ids.free_id(g);
                    }
                    return Err(VmError::GsisExhausted { wanted: n });
                }
            }
        }
        Ok(got)
    }

    /// Route `gsi` to `msg`, or remove its route; pushes the whole table.
    fn set(&self, gsi: u32, msg: Option<MsiMessage>) -> io::Result<()> {
        match msg {
            Some(m) => log::debug!(
                "MSI route: GSI {gsi} -> address {:#x} data {:#x}",
                m.addr,
                m.data
            ),
            None => log::debug!("MSI route: GSI {gsi} removed"),
        }
        let mut t = self.lock();
        t.msi.retain(|(g, _)| *g != gsi);
        if let Some(m) = msg {
            t.msi.push((gsi, m));
        }
        let entries = table_entries(&t.msi);
        let routing = KvmIrqRouting::from_entries(&entries)
            .map_err(|e| io::Error::other(format!("GSI routing table: {e:?}")))?;
        self.vm
            .set_gsi_routing(&routing)
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }
}

/// One device's MSI-X vectors: a GSI and an irqfd each.
pub struct KvmMsiVectors {
    router: Arc<GsiRouter>,
    gsis: Vec<u32>,
    irqfds: Vec<EventFd>,
}

impl KvmMsiVectors {
    pub fn new(router: Arc<GsiRouter>, vm: &VmFd, count: u16) -> Result<Self, VmError> {
        let gsis = router.alloc(count)?;
        let mut irqfds = Vec::new();
        for &gsi in &gsis {
            let evt = EventFd::new(EFD_NONBLOCK).map_err(|e| VmError::EventFd("MSI-X", e))?;
            vm.register_irqfd(&evt, gsi)
                .map_err(|e| VmError::Kvm("register_irqfd (MSI-X)", e))?;
            irqfds.push(evt);
        }
        Ok(Self {
            router,
            gsis,
            irqfds,
        })
    }
}

impl MsiVectors for KvmMsiVectors {
    fn count(&self) -> u16 {
        self.gsis.len() as u16
    }

    fn route(&self, v: u16, msg: Option<MsiMessage>) -> io::Result<()> {
        let gsi = self.gsis.get(usize::from(v)).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("no MSI-X vector {v}"))
        })?;
        self.router.set(*gsi, msg)
    }

    fn trigger(&self, v: u16) -> io::Result<()> {
        match self.irqfds.get(usize::from(v)) {
            Some(e) => e.write(1),
            None => Ok(()),
        }
    }
}

/// An assigned device fires the irqfds itself (see `devices::vfio`).
impl casemate_devices::vfio::MsiIrqfds for KvmMsiVectors {
    fn irqfd(&self, v: u16) -> io::Result<&EventFd> {
        self.irqfds.get(usize::from(v)).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("no MSI vector {v}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_matches_kvms() {
        let r = default_routes();
        // 16 PIC entries plus 24 IOAPIC pins.
        assert_eq!(r.len(), 40);
        assert!(r.iter().all(|e| e.type_ == KVM_IRQ_ROUTING_IRQCHIP));
    }

    #[test]
    fn msi_routes_follow_the_irqchip_pins() {
        let m = MsiMessage {
            addr: 0xfee0_1000,
            data: 0x41,
        };
        let t = table_entries(&[(24, m), (25, m)]);
        assert_eq!(t.len(), 42);
        let tail: Vec<(u32, u32)> = t[40..].iter().map(|e| (e.gsi, e.type_)).collect();
        assert_eq!(
            tail,
            vec![(24, KVM_IRQ_ROUTING_MSI), (25, KVM_IRQ_ROUTING_MSI)]
        );
    }
}
