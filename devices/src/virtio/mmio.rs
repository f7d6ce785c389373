//! The virtio-mmio transport (version 2, modern only) as a `BusDevice`.
//!
//! Owns the register layout, queue selection, interrupt status and the
//! activation/reset of its device's worker through the `WorkerHost`. Queue
//! notifications normally arrive as ioeventfds the VMM registered on
//! `QUEUE_NOTIFY`; a write that reaches this device anyway is forwarded to
//! the same eventfd. Runs on vCPU threads.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::common::{Activation, VirtioCommonState};
use super::{VirtioDevice, VirtioIrq, WorkerHost};
use crate::bus::{BusAction, BusDevice};
use crate::irq::IrqLine;

/// Bytes of MMIO space per device (registers + config), as QEMU uses.
pub const MMIO_LEN: u64 = 0x200;
/// Offset of QueueNotify, where the VMM registers queue ioeventfds.
pub const QUEUE_NOTIFY: u64 = 0x50;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR: u32 = 0x4d53_4143; // "CASM"
const INT_USED: u32 = 1;
const INT_CONFIG: u32 = 2;

/// ISR bits plus the line they raise.
pub struct MmioIrq {
    status: AtomicU32,
    line: Arc<dyn IrqLine>,
}

impl VirtioIrq for MmioIrq {
    fn signal_used(&self, _queue: u16) -> std::io::Result<()> {
        self.status.fetch_or(INT_USED, Ordering::SeqCst);
        self.line.trigger()
    }
    fn signal_config(&self) -> std::io::Result<()> {
        self.status.fetch_or(INT_CONFIG, Ordering::SeqCst);
        self.line.trigger()
    }
}

pub struct MmioTransport {
    dev: Box<dyn VirtioDevice>,
    state: VirtioCommonState,
    irq: Arc<MmioIrq>,
    life: Activation,
}

impl MmioTransport {
    /// `notify` holds one eventfd per queue, in queue order.
    pub fn new(
        dev: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        notify: Vec<EventFd>,
        line: Arc<dyn IrqLine>,
        host: Arc<dyn WorkerHost>,
    ) -> Self {
        let state = VirtioCommonState::new(dev.as_ref());
        Self {
            dev,
            state,
            irq: Arc::new(MmioIrq {
                status: AtomicU32::new(0),
                line,
            }),
            life: Activation::new(mem, notify, host),
        }
    }

    fn read_reg(&mut self, off: u64) -> u32 {
        let q = self
            .state
            .queues
            .get(self.state.queue_sel as usize)
            .copied();
        match off {
            0x00 => MAGIC,
            0x04 => VERSION,
            0x08 => self.dev.device_type(),
            0x0c => VENDOR,
            0x10 => self.state.device_features_page(self.dev.as_ref()),
            0x34 => q.map_or(0, |q| q.max_size.into()),
            0x44 => q.map_or(0, |q| q.ready.into()),
            0x60 => self.irq.status.load(Ordering::SeqCst),
            0x70 => self.life.status(self.state.status).into(),
            0xfc => self.state.config_generation,
            _ => 0,
        }
    }

    fn write_reg(&mut self, off: u64, v: u32) {
        let writable = self.state.queue_writable();
        let lo = |x: u64| (x & !0xffff_ffff) | u64::from(v);
        let hi = |x: u64| (x & 0xffff_ffff) | (u64::from(v) << 32);
        match off {
            0x14 => self.state.device_features_sel = v,
            0x20 => self.state.set_driver_features_page(v),
            0x24 => self.state.driver_features_sel = v,
            0x30 => self.state.queue_sel = v,
            QUEUE_NOTIFY => self.life.kick(v.into()),
            0x64 => {
                self.irq.status.fetch_and(!v, Ordering::SeqCst);
            }
            0x70 => self.set_status(v as u8),
            _ if !writable => log::debug!(
                "{}: queue register {off:#x} written after DRIVER_OK",
                self.dev.name()
            ),
            _ => {
                let Some(q) = self.state.selected_queue() else {
                    return;
                };
                match off {
                    0x38 => q.size = v as u16,
                    0x44 => q.ready = v == 1,
                    0x80 => q.desc = lo(q.desc),
                    0x84 => q.desc = hi(q.desc),
                    0x90 => q.avail = lo(q.avail),
                    0x94 => q.avail = hi(q.avail),
                    0xa0 => q.used = lo(q.used),
                    0xa4 => q.used = hi(q.used),
                    _ => {}
                }
            }
        }
    }

    fn set_status(&mut self, v: u8) {
        let change = self.state.set_status(v, self.dev.as_mut());
        let irq = self.irq.clone();
        self.life
            .apply(change, self.dev.as_mut(), &self.state.queues, irq, || {
                self.irq.status.store(0, Ordering::SeqCst)
            });
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= 0x100 {
            self.dev.read_config(offset - 0x100, data);
            return;
        }
        // Registers are 32-bit; other widths or misaligned reads see zero.
        data.fill(0);
        if data.len() == 4 && offset.is_multiple_of(4) {
            data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        if offset >= 0x100 {
            self.dev.write_config(offset - 0x100, data);
        } else if let (Ok(b), true) = (<[u8; 4]>::try_from(data), offset.is_multiple_of(4)) {
            self.write_reg(offset, u32::from_le_bytes(b));
        }
        BusAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irq::testing::CountingIrq;
    use crate::virtio::status::NEEDS_RESET;
    use crate::virtio::status::*;
    use crate::virtio::testing::{FakeDevice, RecordingHost};
    use crate::virtio::VIRTIO_F_VERSION_1;
    use vm_memory::GuestAddress;

    fn transport() -> (MmioTransport, Arc<RecordingHost>) {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let host = Arc::new(RecordingHost::default());
        let dev = FakeDevice::new(VIRTIO_F_VERSION_1);
        let notify = vec![EventFd::new(0).unwrap()];
        let t = MmioTransport::new(
            Box::new(dev),
            mem,
            notify,
            Arc::new(CountingIrq::default()),
            host.clone(),
        );
        (t, host)
    }

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        t.write(off, &v.to_le_bytes());
    }

    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn bring_up(t: &mut MmioTransport, desc: u64) {
        w(t, 0x70, (ACKNOWLEDGE | DRIVER).into());
        w(t, 0x24, 1);
        w(t, 0x20, 1);
        w(t, 0x70, (ACKNOWLEDGE | DRIVER | FEATURES_OK).into());
        w(t, 0x30, 0);
        w(t, 0x38, 16);
        w(t, 0x80, desc as u32);
        w(t, 0x90, 0x2000);
        w(t, 0xa0, 0x3000);
        w(t, 0x44, 1);
        w(
            t,
            0x70,
            (ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK).into(),
        );
    }

    #[test]
    fn identifies_and_starts_and_stops_the_worker() {
        let (mut t, host) = transport();
        assert_eq!(r(&mut t, 0), MAGIC);
        assert_eq!(r(&mut t, 4), 2);
        assert_eq!(r(&mut t, 0x34), 16);
        w(&mut t, 0x14, 1);
        assert_eq!(r(&mut t, 0x10), 1, "VERSION_1 in the high page");
        bring_up(&mut t, 0x1000);
        assert_eq!(host.started(), 1);
        assert_eq!(r(&mut t, 0x70) as u8 & NEEDS_RESET, 0);
        w(&mut t, 0x70, 0);
        assert_eq!(host.stopped(), 1);
        assert_eq!(r(&mut t, 0x70), 0);
    }

    #[test]
    fn rings_outside_memory_mean_needs_reset_not_a_start() {
        let (mut t, host) = transport();
        bring_up(&mut t, 0xffff_0000);
        assert_eq!(host.started(), 0);
        assert_ne!(r(&mut t, 0x70) as u8 & NEEDS_RESET, 0);
        w(&mut t, 0x70, 0);
        assert_eq!(r(&mut t, 0x70), 0, "reset clears NEEDS_RESET");
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let (mut t, _) = transport();
        let mut b = [0xaa; 2];
        t.read(0x00, &mut b);
        assert_eq!(b, [0, 0]);
        t.write(0x71, &[1]);
        w(&mut t, 0x30, 99);
        w(&mut t, 0x38, 8);
        assert_eq!(r(&mut t, 0x34), 0, "no such queue");
        w(&mut t, QUEUE_NOTIFY, 7);
    }
}
