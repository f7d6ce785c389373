//! Transport-independent virtio state: the device-status machine, feature
//! negotiation pages and per-queue configuration, written once and shared
//! by the MMIO (and later PCI) transports.

use super::status::*;
use super::{VirtioDevice, VIRTIO_F_VERSION_1};

/// A queue as the driver configured it, before the device starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueConfig {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
}

/// What a status write asks the transport to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    None,
    /// DRIVER_OK was set with a valid configuration: start the device.
    Activate,
    /// Status 0: reset the device (and stop its worker).
    Reset,
}

pub struct VirtioCommonState {
    pub status: u8,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub queues: Vec<QueueConfig>,
    pub config_generation: u32,
}

impl VirtioCommonState {
    pub fn new(dev: &dyn VirtioDevice) -> Self {
        let queues = dev
            .queue_max_sizes()
            .iter()
            .map(|&m| QueueConfig {
                max_size: m,
                size: m,
                ..Default::default()
            })
            .collect();
        Self {
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            config_generation: 0,
        }
    }

    /// The 32-bit page of offered features the driver selected.
    pub fn device_features_page(&self, dev: &dyn VirtioDevice) -> u32 {
        match self.device_features_sel {
            0 => dev.features() as u32,
            1 => (dev.features() >> 32) as u32,
            _ => 0,
        }
    }

    /// Features may only change between DRIVER and FEATURES_OK.
    pub fn set_driver_features_page(&mut self, v: u32) {
        if self.status & FEATURES_OK != 0 || self.status & DRIVER == 0 {
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32),
            _ => {}
        }
    }

    pub fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers are writable only before DRIVER_OK.
    pub fn queue_writable(&self) -> bool {
        self.status & DRIVER_OK == 0
    }

    /// Apply a status write, enforcing the order of virtio 1.x 3.1.1.
    pub fn set_status(&mut self, v: u8, dev: &mut dyn VirtioDevice) -> StatusChange {
        if v == 0 {
            self.reset();
            return StatusChange::Reset;
        }
        let old = self.status;
        // Bits can only be added, never cleared, short of a reset.
        if v & old != old {
            log::warn!(
                "{}: driver cleared status bits {old:#x} -> {v:#x}; ignored",
                dev.name()
            );
            return StatusChange::None;
        }
        let added = v & !old;
        if added & FEATURES_OK != 0 {
            let offered = dev.features();
            if self.driver_features & !offered != 0
                || self.driver_features & VIRTIO_F_VERSION_1 == 0
            {
                // Leave FEATURES_OK clear: the driver reads it back and fails.
                self.status = v & !FEATURES_OK;
                return StatusChange::None;
            }
            dev.ack_features(self.driver_features);
        }
        self.status = v;
        if added & DRIVER_OK != 0 && v & FEATURES_OK != 0 && v & FAILED == 0 {
            return StatusChange::Activate;
        }
        StatusChange::None
    }

    pub fn reset(&mut self) {
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            *q = QueueConfig {
                max_size: q.max_size,
                size: q.max_size,
                ..Default::default()
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testing::FakeDevice;

    #[test]
    fn negotiation_follows_the_spec_order() {
        let mut dev = FakeDevice::new(VIRTIO_F_VERSION_1 | 0b101);
        let mut s = VirtioCommonState::new(&dev);
        assert_eq!(s.set_status(ACKNOWLEDGE, &mut dev), StatusChange::None);
        s.set_driver_features_page(0b1);
        assert_eq!(s.driver_features, 0, "features before DRIVER are ignored");
        s.set_status(ACKNOWLEDGE | DRIVER, &mut dev);
        s.set_driver_features_page(0b100);
        s.driver_features_sel = 1;
        s.set_driver_features_page(1);
        s.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK, &mut dev);
        assert_ne!(s.status & FEATURES_OK, 0);
        assert_eq!(dev.acked, VIRTIO_F_VERSION_1 | 0b100);
        let all = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;
        assert_eq!(s.set_status(all, &mut dev), StatusChange::Activate);
        assert_eq!(s.set_status(0, &mut dev), StatusChange::Reset);
        assert_eq!(s.status, 0);
    }

    #[test]
    fn unoffered_or_legacy_features_keep_features_ok_clear() {
        let mut dev = FakeDevice::new(VIRTIO_F_VERSION_1 | 1);
        let mut s = VirtioCommonState::new(&dev);
        s.set_status(ACKNOWLEDGE | DRIVER, &mut dev);
        s.set_driver_features_page(0b10);
        s.driver_features_sel = 1;
        s.set_driver_features_page(1);
        s.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK, &mut dev);
        assert_eq!(s.status & FEATURES_OK, 0, "bit 1 was not offered");
        let mut s = VirtioCommonState::new(&dev);
        s.set_status(ACKNOWLEDGE | DRIVER, &mut dev);
        s.set_driver_features_page(1);
        s.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK, &mut dev);
        assert_eq!(
            s.status & FEATURES_OK,
            0,
            "no VERSION_1: legacy drivers are refused"
        );
        let change = s.set_status(ACKNOWLEDGE | DRIVER | DRIVER_OK, &mut dev);
        assert_eq!(
            change,
            StatusChange::None,
            "DRIVER_OK without FEATURES_OK starts nothing"
        );
    }
}
