//! The probe's command line: space-separated words, `key=value` or bare.
//! `probe=NAME` picks the probe (default `hello`), `exit=debug` asks for an
//! isa-debug-exit write before power-off; other words are probe arguments.

pub struct Args<'a> {
    line: &'a [u8],
}

impl<'a> Args<'a> {
    pub fn new(line: &'a [u8]) -> Args<'a> {
        Args { line }
    }

    fn words(&self) -> impl Iterator<Item = &'a [u8]> {
        self.line
            .split(|&b| b == b' ' || b == b'\t' || b == b'\n' || b == b'\r')
            .filter(|w| !w.is_empty())
    }

    /// Value of the last `key=value` word with this key.
    pub fn get(&self, key: &str) -> Option<&'a [u8]> {
        let key = key.as_bytes();
        let mut found = None;
        for w in self.words() {
            if w.len() > key.len() && w.starts_with(key) && w[key.len()] == b'=' {
                found = Some(&w[key.len() + 1..]);
            }
        }
        found
    }

    pub fn probe(&self) -> &'a [u8] {
        self.get("probe").unwrap_or(b"hello")
    }

    pub fn exit_debug(&self) -> bool {
        self.get("exit") == Some(b"debug".as_slice())
    }

    /// Numeric argument: absent -> Ok(default), unparsable -> Err.
    pub fn number(&self, key: &str, default: u64) -> Result<u64, ()> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_u64(v).ok_or(()),
        }
    }
}

/// Decimal, or hexadecimal with a `0x` prefix.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    let (digits, radix) = match s {
        [b'0', b'x' | b'X', rest @ ..] => (rest, 16),
        _ => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        let d = (c as char).to_digit(radix)? as u64;
        v = v.checked_mul(radix as u64)?.checked_add(d)?;
    }
    Some(v)
}
