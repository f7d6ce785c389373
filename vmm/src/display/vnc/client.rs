//! One VNC client's side of RFB 3.8 (RFC 6143), without sockets: bytes
//! in (`feed`), bytes out (`out`), and the frame update it asked for
//! (`update`). Versions 3.3 and 3.7 are answered too (their security
//! handshake differs), since older clients still speak them. Security
//! type None only; Raw encoding, plus the DesktopSize pseudo-encoding so
//! a client follows the guest's mode changes.
//!
//! Bounded by construction: at most one update is ever queued (the next
//! is built only once the last has left), damage merges into at most
//! `MAX_RECTS` rectangles, cut text is skipped without being stored, and
//! key events keep the newest `MAX_KEYS`.

use casemate_devices::display::{add_damage, Frame, Rect};

use super::pixel::PixelFormat;

const VERSION: &[u8; 12] = b"RFB 003.008\n";
const SEC_NONE: u8 = 1;
const ENC_RAW: i32 = 0;
const ENC_DESKTOP_SIZE: i32 = -223;
/// Key events waiting for the keyboard (newest kept).
pub const MAX_KEYS: usize = 256;
/// The name a client shows for the VM.
const NAME: &[u8] = b"casemate";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Version,
    Security,
    Init,
    Normal,
}

/// Why a client is dropped.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("not an RFB client (version string {0:?})")]
    Version(String),
    #[error("security type {0} asked for; only None (1) is offered")]
    Security(u8),
    #[error("unknown message type {0}")]
    Message(u8),
    #[error("pixel format refused: {0}")]
    Format(&'static str),
}

/// A key event: pressed or released, and its X11 keysym.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEvent {
    pub down: bool,
    pub keysym: u32,
}

pub struct Client {
    state: State,
    minor: u8,
    inbuf: Vec<u8>,
    /// Bytes of a ClientCutText still to skip.
    skip: usize,
    /// Bytes waiting to be written, from `sent` on.
    out: Vec<u8>,
    sent: usize,
    format: PixelFormat,
    desktop_size: bool,
    /// A FramebufferUpdateRequest is outstanding.
    requested: bool,
    damage: Vec<Rect>,
    /// The size the client knows, and the surface generation it is from.
    size: (u32, u32),
    generation: u64,
    pub keys: Vec<KeyEvent>,
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

impl Client {
    /// A new connection: the server speaks first.
    pub fn new() -> Self {
        Self {
            state: State::Version,
            minor: 8,
            inbuf: Vec::new(),
            skip: 0,
            out: VERSION.to_vec(),
            sent: 0,
            format: PixelFormat::NATIVE,
            desktop_size: false,
            requested: false,
            damage: Vec::new(),
            size: (0, 0),
            generation: u64::MAX,
            keys: Vec::new(),
        }
    }

    /// Bytes to write now.
    pub fn pending(&self) -> &[u8] {
        &self.out[self.sent..]
    }

    /// `n` of the pending bytes were written.
    pub fn consume(&mut self, n: usize) {
        self.sent += n;
        if self.sent >= self.out.len() {
            self.out.clear();
            self.sent = 0;
        }
    }

    /// Whether the client is past the handshake.
    pub fn ready(&self) -> bool {
        self.state == State::Normal
    }

    /// The surface changed in `r`.
    pub fn add_damage(&mut self, r: Rect) {
        add_damage(&mut self.damage, r);
    }

    /// Take bytes from the client; `frame` is read for ServerInit.
    pub fn feed(&mut self, data: &[u8], frame: &Frame) -> Result<(), ProtoError> {
        let data = if self.skip > 0 {
            let n = self.skip.min(data.len());
            self.skip -= n;
            &data[n..]
        } else {
            data
        };
        self.inbuf.extend_from_slice(data);
        let mut at = 0;
        while let Some(n) = self.step(at, frame)? {
            at += n;
            if self.skip > 0 {
                let n = self.skip.min(self.inbuf.len() - at);
                self.skip -= n;
                at += n;
            }
        }
        self.inbuf.drain(..at);
        Ok(())
    }

    /// Handle one message starting at `at`; the bytes it took, or None
    /// when it is not complete yet.
    fn step(&mut self, at: usize, frame: &Frame) -> Result<Option<usize>, ProtoError> {
        let b = &self.inbuf[at..];
        let need = |n: usize| b.len() >= n;
        match self.state {
            State::Version => {
                if !need(12) {
                    return Ok(None);
                }
                let v = &b[..12];
                if !v.starts_with(b"RFB 003.") || v[11] != b'\n' {
                    return Err(ProtoError::Version(String::from_utf8_lossy(v).into()));
                }
                // RFC 6143 7.1.1: an unknown minor is treated as 3.3.
                self.minor = match &v[8..11] {
                    b"007" => 7,
                    m if m >= &b"008"[..] => 8,
                    _ => 3,
                };
                if self.minor == 3 {
                    self.out
                        .extend_from_slice(&u32::from(SEC_NONE).to_be_bytes());
                    self.state = State::Init;
                } else {
                    self.out.extend_from_slice(&[1, SEC_NONE]);
                    self.state = State::Security;
                }
                Ok(Some(12))
            }
            State::Security => {
                if !need(1) {
                    return Ok(None);
                }
                if b[0] != SEC_NONE {
                    return Err(ProtoError::Security(b[0]));
                }
                if self.minor >= 8 {
                    self.out.extend_from_slice(&0u32.to_be_bytes());
                }
                self.state = State::Init;
                Ok(Some(1))
            }
            State::Init => {
                if !need(1) {
                    return Ok(None);
                }
                // The shared flag is ignored: every client shares.
                self.size = (frame.width(), frame.height());
                self.generation = frame.generation();
                self.out
                    .extend_from_slice(&(frame.width() as u16).to_be_bytes());
                self.out
                    .extend_from_slice(&(frame.height() as u16).to_be_bytes());
                self.out.extend_from_slice(&PixelFormat::NATIVE.encode());
                self.out
                    .extend_from_slice(&(NAME.len() as u32).to_be_bytes());
                self.out.extend_from_slice(NAME);
                self.state = State::Normal;
                Ok(Some(1))
            }
            State::Normal => {
                let buf = std::mem::take(&mut self.inbuf);
                let r = self.message(&buf[at..]);
                self.inbuf = buf;
                r
            }
        }
    }

    fn message(&mut self, b: &[u8]) -> Result<Option<usize>, ProtoError> {
        if b.is_empty() {
            return Ok(None);
        }
        let len = match b[0] {
            0 => 20,
            2 if b.len() >= 4 => 4 + 4 * usize::from(u16_at(b, 2)),
            2 => return Ok(None),
            3 => 10,
            4 => 8,
            5 => 6,
            6 => 8,
            t => return Err(ProtoError::Message(t)),
        };
        if b.len() < len {
            return Ok(None);
        }
        match b[0] {
            0 => {
                let mut f = [0u8; 16];
                f.copy_from_slice(&b[4..20]);
                self.format = PixelFormat::decode(&f).map_err(ProtoError::Format)?;
            }
            2 => {
                self.desktop_size = (0..usize::from(u16_at(b, 2)))
                    .any(|i| u32_at(b, 4 + 4 * i) as i32 == ENC_DESKTOP_SIZE);
            }
            3 => {
                self.requested = true;
                if b[1] == 0 {
                    let r = Rect::new(
                        u32::from(u16_at(b, 2)),
                        u32::from(u16_at(b, 4)),
                        u32::from(u16_at(b, 6)),
                        u32::from(u16_at(b, 8)),
                    );
                    add_damage(&mut self.damage, r.clip(self.size.0, self.size.1));
                }
            }
            4 => {
                if self.keys.len() >= MAX_KEYS {
                    self.keys.remove(0);
                }
                self.keys.push(KeyEvent {
                    down: b[1] != 0,
                    keysym: u32_at(b, 4),
                });
            }
            // Pointer events: no pointing device yet.
            5 => {}
            6 => self.skip = u32_at(b, 4) as usize,
            _ => unreachable!("lengths are known only for the types above"),
        }
        Ok(Some(len))
    }

    /// Whether `update` would send something now: asked for, nothing
    /// still queued, and something to show.
    pub fn wants_update(&self, frame: &Frame) -> bool {
        self.ready()
            && self.requested
            && self.pending().is_empty()
            && (!self.damage.is_empty() || frame.generation() != self.generation)
    }

    /// Queue one FramebufferUpdate with the damage, from `frame`.
    pub fn update(&mut self, frame: &Frame) {
        let mut resize = false;
        if frame.generation() != self.generation {
            self.generation = frame.generation();
            self.damage.clear();
            if self.desktop_size {
                self.size = (frame.width(), frame.height());
                resize = true;
            }
            self.damage.push(Rect::new(0, 0, self.size.0, self.size.1));
        }
        // A client that cannot resize sees the part of the frame that fits.
        let (cw, ch) = (
            self.size.0.min(frame.width()),
            self.size.1.min(frame.height()),
        );
        let rects: Vec<Rect> = std::mem::take(&mut self.damage)
            .iter()
            .map(|r| r.clip(cw, ch))
            .filter(|r| !r.is_empty())
            .collect();
        let n = rects.len() + usize::from(resize);
        self.requested = false;
        self.out.extend_from_slice(&[0, 0]);
        self.out.extend_from_slice(&(n as u16).to_be_bytes());
        if resize {
            self.rect_header(Rect::new(0, 0, self.size.0, self.size.1), ENC_DESKTOP_SIZE);
        }
        let bpp = self.format.bytes_per_pixel();
        let px = frame.pixels();
        let fw = frame.width() as usize;
        for r in rects {
            self.rect_header(r, ENC_RAW);
            self.out.reserve(r.w as usize * r.h as usize * bpp);
            for y in r.y..r.y + r.h {
                let s = y as usize * fw + r.x as usize;
                for &p in &px[s..s + r.w as usize] {
                    self.format.put(p, &mut self.out);
                }
            }
        }
    }

    fn rect_header(&mut self, r: Rect, enc: i32) {
        for v in [r.x, r.y, r.w, r.h] {
            self.out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        self.out.extend_from_slice(&enc.to_be_bytes());
    }
}

#[cfg(test)]
mod tests;
