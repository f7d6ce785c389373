//! The common configuration structure (virtio 1.x, 4.1.4.3) at the start of
//! BAR 0: feature pages, MSI-X vector numbers, device status and the
//! selected queue's registers. Reads serialise the whole structure so any
//! width sees consistent bytes; writes take effect only at a field's
//! natural width (32-bit halves or all 64 bits for the ring addresses), as
//! drivers must use. The status machine itself is `VirtioCommonState`.

use super::VirtioPciTransport;
use crate::bus::BusAction;

const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const CONFIG_MSIX_VECTOR: u64 = 0x10;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const CONFIG_GENERATION: u64 = 0x15;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE: u64 = 0x18;
const QUEUE_MSIX_VECTOR: u64 = 0x1a;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_NOTIFY_OFF: u64 = 0x1e;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;
/// Bytes of the structure (virtio 1.0 fields; later additions read zero).
const LEN: usize = 0x38;
const END: u64 = LEN as u64;

impl VirtioPciTransport {
    fn snapshot(&self) -> [u8; LEN] {
        let s = &self.state;
        let sel = usize::from(s.queue_sel as u16);
        let q = s.queues.get(s.queue_sel as usize).copied();
        let driver_page = match s.driver_features_sel {
            0 => s.driver_features as u32,
            1 => (s.driver_features >> 32) as u32,
            _ => 0,
        };
        let mut b = [0u8; LEN];
        let mut put = |at: u64, v: &[u8]| {
            let at = at as usize;
            b[at..at + v.len()].copy_from_slice(v);
        };
        put(DEVICE_FEATURE_SELECT, &s.device_features_sel.to_le_bytes());
        put(
            DEVICE_FEATURE,
            &s.device_features_page(self.dev.as_ref()).to_le_bytes(),
        );
        put(DRIVER_FEATURE_SELECT, &s.driver_features_sel.to_le_bytes());
        put(DRIVER_FEATURE, &driver_page.to_le_bytes());
        put(CONFIG_MSIX_VECTOR, &self.irq.config_vector().to_le_bytes());
        put(NUM_QUEUES, &(s.queues.len() as u16).to_le_bytes());
        put(DEVICE_STATUS, &[self.life.status(s.status)]);
        put(CONFIG_GENERATION, &[s.config_generation as u8]);
        put(QUEUE_SELECT, &(s.queue_sel as u16).to_le_bytes());
        if let Some(q) = q {
            put(QUEUE_SIZE, &q.size.to_le_bytes());
            put(QUEUE_MSIX_VECTOR, &self.irq.queue_vector(sel).to_le_bytes());
            put(QUEUE_ENABLE, &u16::from(q.ready).to_le_bytes());
            put(QUEUE_NOTIFY_OFF, &(sel as u16).to_le_bytes());
            put(QUEUE_DESC, &q.desc.to_le_bytes());
            put(QUEUE_DRIVER, &q.avail.to_le_bytes());
            put(QUEUE_DEVICE, &q.used.to_le_bytes());
        }
        b
    }

    pub(super) fn common_read(&self, offset: u64, data: &mut [u8]) {
        // `data` was zeroed by the caller; bytes past the structure stay so.
        let snap = self.snapshot();
        for (i, d) in data.iter_mut().enumerate() {
            let at = usize::try_from(offset).ok().and_then(|o| o.checked_add(i));
            if let Some(&v) = at.and_then(|at| snap.get(at)) {
                *d = v;
            }
        }
    }

    pub(super) fn common_write(&mut self, offset: u64, data: &[u8]) -> BusAction {
        let mut raw = [0u8; 8];
        let Some(dst) = raw.get_mut(..data.len()) else {
            return BusAction::None;
        };
        dst.copy_from_slice(data);
        let v = u64::from_le_bytes(raw);
        match (offset, data.len()) {
            (DEVICE_FEATURE_SELECT, 4) => self.state.device_features_sel = v as u32,
            (DRIVER_FEATURE_SELECT, 4) => self.state.driver_features_sel = v as u32,
            (DRIVER_FEATURE, 4) => self.state.set_driver_features_page(v as u32),
            (CONFIG_MSIX_VECTOR, 2) => self.irq.set_config_vector(v as u16),
            (DEVICE_STATUS, 1) => return self.set_status(v as u8),
            (QUEUE_SELECT, 2) => self.state.queue_sel = v as u32,
            (QUEUE_MSIX_VECTOR, 2) => self
                .irq
                .set_queue_vector(self.state.queue_sel as usize, v as u16),
            (QUEUE_SIZE | QUEUE_ENABLE | QUEUE_DESC..END, _) => {
                self.queue_write(offset, data.len(), v)
            }
            _ => log::debug!(
                "{}: ignoring a {}-byte common config write at {offset:#x}",
                self.name,
                data.len()
            ),
        }
        BusAction::None
    }

    /// Registers of the selected queue, writable only before DRIVER_OK.
    fn queue_write(&mut self, offset: u64, len: usize, v: u64) {
        if !self.state.queue_writable() {
            log::debug!(
                "{}: queue register {offset:#x} written after DRIVER_OK",
                self.name
            );
            return;
        }
        let Some(q) = self.state.selected_queue() else {
            return;
        };
        let ring = match offset & !7 {
            QUEUE_DESC => Some(&mut q.desc),
            QUEUE_DRIVER => Some(&mut q.avail),
            QUEUE_DEVICE => Some(&mut q.used),
            _ => None,
        };
        match (offset, len, ring) {
            (QUEUE_SIZE, 2, _) => q.size = v as u16,
            // Only 1 is meaningful; 0 would be a queue reset, not offered.
            (QUEUE_ENABLE, 2, _) if v == 1 => q.ready = true,
            (o, 8, Some(r)) if o % 8 == 0 => *r = v,
            (o, 4, Some(r)) if o % 8 == 0 => *r = (*r & !0xffff_ffff) | v,
            (o, 4, Some(r)) if o % 8 == 4 => *r = (*r & 0xffff_ffff) | (v << 32),
            _ => {}
        }
    }

    fn set_status(&mut self, v: u8) -> BusAction {
        self.state
            .set_status(v, self.dev.as_mut())
            .request(self.key)
    }
}
