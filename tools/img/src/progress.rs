//! The `convert -p` progress line, qemu-img style `    (42.00/100%)`,
//! drawn on stderr only when stderr is a terminal.

use std::io::{IsTerminal, Write};

pub struct Progress {
    enabled: bool,
    total: u64,
    last: i64,
}

impl Progress {
    pub fn new(requested: bool, total: u64) -> Self {
        let enabled = requested && std::io::stderr().is_terminal();
        let mut p = Progress {
            enabled,
            total,
            last: -1,
        };
        p.update(0);
        p
    }

    /// Redraws when the percentage moved by at least 0.01.
    pub fn update(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        let pct = if self.total == 0 {
            10000
        } else {
            (done as u128 * 10000 / self.total as u128) as i64
        };
        if pct != self.last {
            self.last = pct;
            let mut e = std::io::stderr();
            let _ = write!(e, "    ({}.{:02}/100%)\r", pct / 100, pct % 100);
            let _ = e.flush();
        }
    }

    pub fn finish(&mut self) {
        if self.enabled {
            self.update(self.total);
            eprintln!();
        }
    }
}
