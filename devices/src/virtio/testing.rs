//! Fakes for virtio unit tests: a device that records what it was told and
//! a worker host that records starts and stops.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{StartContext, StartError, VirtioDevice, Worker, WorkerError, WorkerHost};

pub struct FakeDevice {
    features: u64,
    pub acked: u64,
}

impl FakeDevice {
    pub fn new(features: u64) -> Self {
        Self { features, acked: 0 }
    }
}

struct IdleWorker;

impl Worker for IdleWorker {
    fn fds(&self) -> Vec<(std::os::fd::RawFd, u32)> {
        Vec::new()
    }
    fn on_event(&mut self, _token: u32) -> Result<(), WorkerError> {
        Ok(())
    }
}

impl VirtioDevice for FakeDevice {
    fn device_type(&self) -> u32 {
        0x7f
    }
    fn name(&self) -> &str {
        "fake0"
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16]
    }
    fn features(&self) -> u64 {
        self.features
    }
    fn ack_features(&mut self, f: u64) {
        self.acked = f;
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0x5a);
    }
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    fn activate(&mut self, _ctx: StartContext) -> Result<Box<dyn Worker>, StartError> {
        Ok(Box::new(IdleWorker))
    }
    fn reset(&mut self) {
        self.acked = 0;
    }
}

#[derive(Default)]
pub struct RecordingHost {
    starts: AtomicUsize,
    stops: AtomicUsize,
}

impl RecordingHost {
    pub fn started(&self) -> usize {
        self.starts.load(Ordering::SeqCst)
    }
    pub fn stopped(&self) -> usize {
        self.stops.load(Ordering::SeqCst)
    }
}

impl WorkerHost for RecordingHost {
    fn start(&self, _name: String, _worker: Box<dyn Worker>) -> std::io::Result<u64> {
        Ok(self.starts.fetch_add(1, Ordering::SeqCst) as u64)
    }
    fn stop(&self, _id: u64) {
        self.stops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Counts used-buffer interrupts, for worker tests.
#[derive(Default)]
pub struct CountingVirtioIrq(pub AtomicUsize);

impl super::VirtioIrq for CountingVirtioIrq {
    fn signal_used(&self, _queue: u16) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn signal_config(&self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CountingVirtioIrq {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Split-ring descriptors for `chains`, each a list of (guest address,
/// length, device-writable), linked in order from index 0, as a mock
/// queue's `add_desc_chains` takes them.
pub fn chain_descriptors(
    chains: &[Vec<(u64, u32, bool)>],
) -> Vec<virtio_queue::desc::RawDescriptor> {
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::split::Descriptor;
    let mut raw = Vec::new();
    for chain in chains {
        let base = raw.len() as u16;
        for (i, &(addr, len, w)) in chain.iter().enumerate() {
            let mut flags = if w { VRING_DESC_F_WRITE as u16 } else { 0 };
            if i + 1 < chain.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            raw.push(Descriptor::new(addr, len, flags, base + i as u16 + 1).into());
        }
    }
    raw
}
