//! Report lines on the console: `init: [topic [event]] key=value ...`, the
//! probe's format (tools/probe/CONTRACT.md) with its own prefix. A line is
//! built in a buffer and written with one write(2): every system call costs
//! milliseconds on the emulated host kernel. Values holding a space, `"`,
//! `\` or a non-printable byte are quoted (`\"`, `\\`, `\xHH`).

use core::fmt::{self, Write};

use crate::sys;

const CAP: usize = 1024;

pub struct Line {
    buf: [u8; CAP],
    len: usize,
}

impl Line {
    /// A line led by one or more bare words, e.g. `init: blk wrote`.
    pub fn topic(words: &str) -> Line {
        let mut l = Line { buf: [0; CAP], len: 0 };
        l.raw(b"init: ");
        l.raw(words.as_bytes());
        l
    }

    fn raw(&mut self, s: &[u8]) {
        // Room for the newline stays free; an overlong line is cut, not lost.
        let n = s.len().min(CAP - 1 - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
    }

    fn key(&mut self, key: &str) {
        self.raw(b" ");
        self.raw(key.as_bytes());
        self.raw(b"=");
    }

    pub fn u(mut self, key: &str, v: u64) -> Line {
        self.key(key);
        let _ = write!(self, "{v}");
        self
    }

    /// A value the caller knows to be one plain word.
    pub fn word(mut self, key: &str, v: &str) -> Line {
        self.key(key);
        self.raw(v.as_bytes());
        self
    }

    /// Any bytes, quoted when needed.
    pub fn text(mut self, key: &str, v: &[u8]) -> Line {
        self.key(key);
        let plain = !v.is_empty()
            && v.iter()
                .all(|&b| (0x21..0x7f).contains(&b) && b != b'"' && b != b'\\');
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
                    let _ = write!(self, "\\x{b:02x}");
                }
            }
        }
        self.raw(b"\"");
        self
    }

    /// Writes the line to the console (fd 1).
    pub fn emit(mut self) {
        self.buf[self.len] = b'\n';
        let _ = sys::write(1, &self.buf[..self.len + 1]);
    }
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.raw(s.as_bytes());
        Ok(())
    }
}
