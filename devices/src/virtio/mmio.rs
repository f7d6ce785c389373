//! The virtio-mmio transport (version 2, modern only) as a `BusDevice`.
//!
//! Owns the register layout, queue selection and interrupt status. A
//! status write that starts or resets the device returns
//! `PlatformRequest::Virtio` with this transport's registry key; the
//! control thread then calls `VirtioLifecycle::lifecycle`. Queue
//! notifications normally arrive as ioeventfds the VMM registered on
//! `QUEUE_NOTIFY`; a write that reaches this device anyway is forwarded to
//! the same eventfd. Runs on vCPU threads.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_mmio as mm;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::common::{Activation, StatusChange, VirtioCommonState, VirtioLifecycle};
use super::{VirtioDevice, VirtioIrq, WorkerHost};
use crate::bus::{BusAction, BusDevice, DeviceKey};
use crate::irq::IrqLine;

/// Bytes of MMIO space per device (registers + config), as QEMU uses.
pub const MMIO_LEN: u64 = 0x200;
/// Offset of QueueNotify, where the VMM registers queue ioeventfds.
pub const QUEUE_NOTIFY: u64 = mm::VIRTIO_MMIO_QUEUE_NOTIFY as u64;

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR: u32 = 0x4d53_4143; // "CASM"
const INT_USED: u32 = mm::VIRTIO_MMIO_INT_VRING;
const INT_CONFIG: u32 = mm::VIRTIO_MMIO_INT_CONFIG;

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
    key: DeviceKey,
    dev: Box<dyn VirtioDevice>,
    state: VirtioCommonState,
    irq: Arc<MmioIrq>,
    life: Activation,
}

impl MmioTransport {
    /// `notify` holds one eventfd per queue, in queue order; `key` names
    /// this transport in the lifecycle requests it returns.
    pub fn new(
        dev: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        notify: Vec<EventFd>,
        line: Arc<dyn IrqLine>,
        key: DeviceKey,
    ) -> Self {
        let state = VirtioCommonState::new(dev.as_ref());
        Self {
            key,
            dev,
            state,
            irq: Arc::new(MmioIrq {
                status: AtomicU32::new(0),
                line,
            }),
            life: Activation::new(mem, notify),
        }
    }

    fn read_reg(&mut self, off: u64) -> u32 {
        const SHM_LEN_LOW: u32 = 0x0b0;
        const SHM_BASE_HIGH: u32 = 0x0bc;
        let q = self
            .state
            .queues
            .get(self.state.queue_sel as usize)
            .copied();
        let Ok(off) = u32::try_from(off) else {
            return 0;
        };
        match off {
            mm::VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            mm::VIRTIO_MMIO_VERSION => VERSION,
            mm::VIRTIO_MMIO_DEVICE_ID => self.dev.device_type(),
            mm::VIRTIO_MMIO_VENDOR_ID => VENDOR,
            mm::VIRTIO_MMIO_DEVICE_FEATURES => self.state.device_features_page(self.dev.as_ref()),
            mm::VIRTIO_MMIO_QUEUE_NUM_MAX => q.map_or(0, |q| q.max_size.into()),
            mm::VIRTIO_MMIO_QUEUE_READY => q.map_or(0, |q| q.ready.into()),
            mm::VIRTIO_MMIO_INTERRUPT_STATUS => self.irq.status.load(Ordering::SeqCst),
            mm::VIRTIO_MMIO_STATUS => self.life.status(self.state.status).into(),
            mm::VIRTIO_MMIO_CONFIG_GENERATION => self.state.config_generation,
            // SHMLenLow/High and SHMBaseLow/High (virtio 1.2, 4.2.2): all
            // ones says "no shared memory region" (Linux's virtio_gpu
            // fails its probe on a zero-length one).
            SHM_LEN_LOW..=SHM_BASE_HIGH => u32::MAX,
            _ => 0,
        }
    }

    fn write_reg(&mut self, off: u64, v: u32) -> BusAction {
        let writable = self.state.queue_writable();
        let lo = |x: u64| (x & !0xffff_ffff) | u64::from(v);
        let hi = |x: u64| (x & 0xffff_ffff) | (u64::from(v) << 32);
        let Ok(off) = u32::try_from(off) else {
            return BusAction::None;
        };
        match off {
            mm::VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.state.device_features_sel = v,
            mm::VIRTIO_MMIO_DRIVER_FEATURES => self.state.set_driver_features_page(v),
            mm::VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.state.driver_features_sel = v,
            mm::VIRTIO_MMIO_QUEUE_SEL => self.state.queue_sel = v,
            mm::VIRTIO_MMIO_QUEUE_NOTIFY => self.life.kick(v.into()),
            mm::VIRTIO_MMIO_INTERRUPT_ACK => {
                self.irq.status.fetch_and(!v, Ordering::SeqCst);
            }
            mm::VIRTIO_MMIO_STATUS => return self.set_status(v as u8),
            _ if !writable => log::debug!(
                "{}: queue register {off:#x} written after DRIVER_OK",
                self.dev.name()
            ),
            _ => {
                let Some(q) = self.state.selected_queue() else {
                    return BusAction::None;
                };
                match off {
                    mm::VIRTIO_MMIO_QUEUE_NUM => q.size = v as u16,
                    mm::VIRTIO_MMIO_QUEUE_READY => q.ready = v == 1,
                    mm::VIRTIO_MMIO_QUEUE_DESC_LOW => q.desc = lo(q.desc),
                    mm::VIRTIO_MMIO_QUEUE_DESC_HIGH => q.desc = hi(q.desc),
                    mm::VIRTIO_MMIO_QUEUE_AVAIL_LOW => q.avail = lo(q.avail),
                    mm::VIRTIO_MMIO_QUEUE_AVAIL_HIGH => q.avail = hi(q.avail),
                    mm::VIRTIO_MMIO_QUEUE_USED_LOW => q.used = lo(q.used),
                    mm::VIRTIO_MMIO_QUEUE_USED_HIGH => q.used = hi(q.used),
                    _ => {}
                }
            }
        }
        BusAction::None
    }

    fn set_status(&mut self, v: u8) -> BusAction {
        self.state
            .set_status(v, self.dev.as_mut())
            .request(self.key)
    }
}

impl VirtioLifecycle for MmioTransport {
    fn lifecycle(&mut self, change: StatusChange, host: &dyn WorkerHost) {
        let irq = self.irq.clone();
        let status = &self.irq.status;
        self.life.apply(
            change,
            self.dev.as_mut(),
            &self.state.queues,
            irq,
            host,
            || status.store(0, Ordering::SeqCst),
        );
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
            return self.write_reg(offset, u32::from_le_bytes(b));
        }
        BusAction::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::PlatformRequest;
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
            7,
        );
        (t, host)
    }

    /// A register write, with the control thread's part played by the
    /// test: a lifecycle request is carried out on `host` at once.
    fn w_with(t: &mut MmioTransport, host: &RecordingHost, off: u64, v: u32) -> BusAction {
        let a = t.write(off, &v.to_le_bytes());
        if let BusAction::Platform(PlatformRequest::Virtio { change, .. }) = a {
            t.lifecycle(change, host);
        }
        a
    }

    fn w(t: &mut MmioTransport, off: u64, v: u32) {
        let a = t.write(off, &v.to_le_bytes());
        assert!(
            !matches!(a, BusAction::Platform(_)),
            "unexpected request {a:?}"
        );
    }

    fn r(t: &mut MmioTransport, off: u64) -> u32 {
        let mut b = [0u8; 4];
        t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn bring_up(t: &mut MmioTransport, host: &RecordingHost, desc: u64) -> BusAction {
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
        w_with(
            t,
            host,
            0x70,
            (ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK).into(),
        )
    }

    #[test]
    fn identifies_and_starts_and_stops_the_worker() {
        let (mut t, host) = transport();
        assert_eq!(r(&mut t, 0), MAGIC);
        assert_eq!(r(&mut t, 4), 2);
        assert_eq!(r(&mut t, 0x34), 16);
        w(&mut t, 0x14, 1);
        assert_eq!(r(&mut t, 0x10), 1, "VERSION_1 in the high page");
        let start = PlatformRequest::Virtio {
            device: 7,
            change: StatusChange::Activate,
        };
        assert_eq!(bring_up(&mut t, &host, 0x1000), BusAction::Platform(start));
        assert_eq!(host.started(), 1);
        assert_eq!(r(&mut t, 0x70) as u8 & NEEDS_RESET, 0);
        let reset = PlatformRequest::Virtio {
            device: 7,
            change: StatusChange::Reset,
        };
        assert_eq!(w_with(&mut t, &host, 0x70, 0), BusAction::Platform(reset));
        assert_eq!(host.stopped(), 1);
        assert_eq!(r(&mut t, 0x70), 0);
    }

    #[test]
    fn no_shared_memory_region_reads_all_ones() {
        let (mut t, _) = transport();
        for off in [0xb0, 0xb4, 0xb8, 0xbc] {
            assert_eq!(r(&mut t, off), u32::MAX, "{off:#x}");
        }
        assert_eq!(r(&mut t, 0xc0), 0);
    }

    #[test]
    fn rings_outside_memory_mean_needs_reset_not_a_start() {
        let (mut t, host) = transport();
        bring_up(&mut t, &host, 0xffff_0000);
        assert_eq!(host.started(), 0);
        assert_ne!(r(&mut t, 0x70) as u8 & NEEDS_RESET, 0);
        w_with(&mut t, &host, 0x70, 0);
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
