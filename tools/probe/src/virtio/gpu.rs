//! virtio-gpu (device id 16) on either transport, 2D commands only: a
//! control queue (0) and a cursor queue (1). Each command is one chain
//! [request (device-readable), response (device-writable)] and the probe
//! waits for it, so one request and one response buffer serve all.

use super::queue::{Buf, Completion, Queue, RingMem};
use super::{Dma, Transport};
use crate::io::rdtsc;
use crate::tsc;

pub const F_EDID: u64 = 1 << 1;

pub const CMD_GET_DISPLAY_INFO: u32 = 0x0100;
pub const CMD_RESOURCE_CREATE_2D: u32 = 0x0101;
pub const CMD_RESOURCE_UNREF: u32 = 0x0102;
pub const CMD_SET_SCANOUT: u32 = 0x0103;
pub const CMD_RESOURCE_FLUSH: u32 = 0x0104;
pub const CMD_TRANSFER_TO_HOST_2D: u32 = 0x0105;
pub const CMD_RESOURCE_ATTACH_BACKING: u32 = 0x0106;
pub const CMD_RESOURCE_DETACH_BACKING: u32 = 0x0107;
pub const CMD_GET_EDID: u32 = 0x010a;
pub const CMD_UPDATE_CURSOR: u32 = 0x0300;
pub const CMD_MOVE_CURSOR: u32 = 0x0301;

pub const RESP_OK_NODATA: u32 = 0x1100;
pub const RESP_OK_DISPLAY_INFO: u32 = 0x1101;
pub const RESP_OK_EDID: u32 = 0x1104;
pub const RESP_ERR_UNSPEC: u32 = 0x1200;
pub const RESP_ERR_OUT_OF_MEMORY: u32 = 0x1201;
pub const RESP_ERR_INVALID_SCANOUT_ID: u32 = 0x1202;
pub const RESP_ERR_INVALID_RESOURCE_ID: u32 = 0x1203;
pub const RESP_ERR_INVALID_PARAMETER: u32 = 0x1205;

/// B8G8R8X8: bytes B, G, R, X in memory, `0x00RRGGBB` as a u32.
pub const FORMAT_BGRX: u32 = 2;

static CTRL_RING: RingMem = Dma::new();
static CURSOR_RING: RingMem = Dma::new();
static REQ: Dma<4096> = Dma::new();
static RESP: Dma<2048> = Dma::new();

pub struct Gpu {
    pub t: Transport,
    ctrl: Queue,
    cursor: Queue,
    pub features: u64,
}

fn put32(buf: u64, at: usize, v: u32) {
    // SAFETY: callers stay inside REQ (4096 bytes); no request is in flight.
    unsafe { core::ptr::write_volatile((buf as *mut u8).add(at) as *mut u32, v) };
}

impl Gpu {
    /// Reset, features (EDID if offered), both queues, DRIVER_OK.
    pub fn open(t: Transport) -> Result<Gpu, &'static str> {
        let (_, features) = t.start(F_EDID)?;
        let ctrl = Queue::new_in(&t, 0, 8, &CTRL_RING)?;
        let cursor = Queue::new_in(&t, 1, 8, &CURSOR_RING)?;
        t.driver_ok();
        Ok(Gpu { t, ctrl, cursor, features })
    }

    /// Send `kind` with the 32-bit `args` after the header (and `extra`
    /// words after them) on the control queue; wait for the response and
    /// return its type (0 when the device wrote none).
    pub fn cmd(&mut self, kind: u32, args: &[u32]) -> Result<u32, &'static str> {
        self.cmd_on(false, kind, args)
    }

    /// The same on the cursor queue (drivers read no response there).
    pub fn cursor_cmd(&mut self, kind: u32, args: &[u32]) -> Result<(), &'static str> {
        self.cmd_on(true, kind, args).map(|_| ())
    }

    fn cmd_on(&mut self, cursor: bool, kind: u32, args: &[u32]) -> Result<u32, &'static str> {
        let req = REQ.addr();
        let len = 24 + 4 * args.len();
        if len > REQ.len() {
            return Err("gpu-request-too-long");
        }
        // Header: type, flags, fence id (2 words), ctx id, ring idx + pad.
        for (i, v) in [kind, 0, 0, 0, 0, 0].iter().enumerate() {
            put32(req, 4 * i, *v);
        }
        for (i, v) in args.iter().enumerate() {
            put32(req, 24 + 4 * i, *v);
        }
        // SAFETY: RESP is the probe's buffer; nothing is in flight on it.
        unsafe { core::ptr::write_bytes(RESP.addr() as *mut u8, 0, RESP.len()) };
        let q = if cursor { &mut self.cursor } else { &mut self.ctrl };
        let head = q
            .submit(&[
                Buf { addr: req, len: len as u32, write: false },
                Buf { addr: RESP.addr(), len: RESP.len() as u32, write: true },
            ])
            .ok_or("gpu-queue-full")?;
        q.kick();
        let end = rdtsc() + tsc::us_to_ticks(5_000_000);
        loop {
            if let Some(Completion { head: h, known: true, .. }) = q.poll() {
                if h == head {
                    return Ok(self.resp_word(0));
                }
            }
            if rdtsc() > end {
                return Err("gpu-timeout");
            }
            core::hint::spin_loop();
        }
    }

    /// Word `i` of the last response.
    pub fn resp_word(&self, i: usize) -> u32 {
        // SAFETY: inside RESP, which the completed request wrote.
        unsafe { core::ptr::read_volatile((RESP.addr() as *const u32).add(i)) }
    }

    /// Byte `i` of the last response.
    pub fn resp_byte(&self, i: usize) -> u8 {
        // SAFETY: inside RESP (callers stay below 2048).
        unsafe { core::ptr::read_volatile((RESP.addr() as *const u8).add(i.min(RESP.len() - 1))) }
    }
}
