//! Report lines on COM1: `probe: [topic] key=value key=value ...\r\n`. A line is built
//! in a buffer and written in one go. Values holding a space, `"`, `\` or a
//! non-printable byte are quoted: `"` and `\` get a backslash, other bytes
//! outside 0x20..0x7e are written as `\xHH`.

use core::fmt::{self, Write};

const CAP: usize = 1024;

pub struct Line {
    buf: [u8; CAP],
    len: usize,
}

impl Line {
    pub fn new() -> Line {
        let mut l = Line { buf: [0; CAP], len: 0 };
        l.raw(b"probe:");
        l
    }

    /// A line led by a bare topic word, e.g. `probe: exits n=...`.
    pub fn topic(word: &str) -> Line {
        let mut l = Line::new();
        l.raw(b" ");
        l.raw(word.as_bytes());
        l
    }

    fn raw(&mut self, s: &[u8]) {
        // Leave room for the line ending; overlong lines are cut, not lost.
        let room = CAP - 2 - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn key(&mut self, key: &str) {
        self.raw(b" ");
        self.raw(key.as_bytes());
        self.raw(b"=");
    }

    pub fn kv_u(&mut self, key: &str, v: u64) -> &mut Line {
        self.key(key);
        let _ = write!(self, "{}", v);
        self
    }

    pub fn kv_hex(&mut self, key: &str, v: u64) -> &mut Line {
        self.key(key);
        let _ = write!(self, "{:#x}", v);
        self
    }

    /// A value that never needs quoting (caller's promise: a plain word).
    pub fn kv_word(&mut self, key: &str, v: &str) -> &mut Line {
        self.key(key);
        self.raw(v.as_bytes());
        self
    }

    /// Arbitrary bytes, quoted and escaped as the contract says when needed.
    pub fn kv_str(&mut self, key: &str, v: &[u8]) -> &mut Line {
        self.key(key);
        let plain = !v.is_empty() && v.iter().all(|&b| b > 0x20 && b < 0x7f && b != b'"' && b != b'\\');
        if plain {
            self.raw(v);
            return self;
        }
        self.raw(b"\"");
        for &b in v {
            match b {
                b'"' | b'\\' => self.raw(&[b'\\', b]),
                0x20..=0x7e => self.raw(&[b]),
                _ => {
                    let _ = write!(self, "\\x{:02x}", b);
                }
            }
        }
        self.raw(b"\"");
        self
    }

    /// Comma-separated decimal list, e.g. `apic_ids=0,1,2`.
    pub fn kv_list(&mut self, key: &str, v: &[u32]) -> &mut Line {
        self.key(key);
        for (i, x) in v.iter().enumerate() {
            if i > 0 {
                self.raw(b",");
            }
            let _ = write!(self, "{}", x);
        }
        self
    }

    pub fn emit(&mut self) {
        self.raw_end();
        crate::serial::write(&self.buf[..self.len]);
    }

    fn raw_end(&mut self) {
        self.buf[self.len] = b'\r';
        self.buf[self.len + 1] = b'\n';
        self.len += 2;
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.raw(s.as_bytes());
        Ok(())
    }
}

/// Collects formatted text into a fixed buffer (e.g. a panic message) so
/// it can then be quoted with `kv_str`.
pub struct TextBuf {
    pub buf: [u8; 256],
    pub len: usize,
}

impl TextBuf {
    pub fn new() -> TextBuf {
        TextBuf { buf: [0; 256], len: 0 }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Write for TextBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
