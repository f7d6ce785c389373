//! virtio-rng (entropy device, type 4) on either transport: no features of
//! its own, one request queue (`requestq`) of device-writable buffers that
//! the device fills with random bytes and returns with the count written.

use super::queue::{Buf, Completion, Queue};
use super::{Dma, Transport};
use crate::io::rdtsc;
use crate::tsc;

/// Where the device writes; one page caps a request.
pub static BYTES: Dma<4096> = Dma::new();

pub struct Rng {
    pub t: Transport,
    pub q: Queue,
    pub features: u64,
}

impl Rng {
    /// Reset, feature handshake (VERSION_1 only), queue 0 with a few
    /// entries (one request is ever in flight), DRIVER_OK.
    pub fn open(t: Transport) -> Result<Rng, &'static str> {
        let (_, features) = t.start(0)?;
        let q = Queue::new(&t, 0, 8)?;
        t.driver_ok();
        Ok(Rng { t, q, features })
    }

    /// Posts one buffer of `n` bytes (capped at `BYTES`), poisoned with
    /// 0xa5 first, and waits up to `timeout_us` for it. Returns the byte
    /// count the device reports in the used element (capped at `n`).
    pub fn fill(&mut self, n: usize, timeout_us: u64) -> Result<usize, &'static str> {
        let n = n.min(BYTES.len());
        // SAFETY: BYTES is the probe's buffer; no request on it is in flight.
        unsafe { core::ptr::write_bytes(BYTES.addr() as *mut u8, 0xa5, n) };
        let head = self
            .q
            .submit(&[Buf { addr: BYTES.addr(), len: n as u32, write: true }])
            .ok_or("rng-queue-full")?;
        self.q.kick();
        let end = rdtsc() + tsc::us_to_ticks(timeout_us);
        loop {
            if let Some(Completion { head: h, len, known: true }) = self.q.poll() {
                if h == head {
                    return Ok((len as usize).min(n));
                }
            }
            if rdtsc() > end {
                return Err("rng-timeout");
            }
            core::hint::spin_loop();
        }
    }

    /// The first `n` bytes of the buffer (after `fill`).
    pub fn bytes(&self, n: usize) -> &[u8] {
        // SAFETY: BYTES is static and the device is done with it (the
        // request completed); n is capped at its length.
        unsafe { core::slice::from_raw_parts(BYTES.addr() as *const u8, n.min(BYTES.len())) }
    }
}
