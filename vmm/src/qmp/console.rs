//! The console on the standard streams: what the user types goes to
//! COM1, except QEMU's `Ctrl-A` escapes (its mux chardev's keys):
//! `C-a x` quits, `C-a h` prints the help, `C-a c` switches between the
//! guest's console and the monitor (HMP), `C-a C-a` sends one `C-a`.
//! A pure state machine: it returns what to do, and the monitor thread
//! (`server`) does it.

const ESCAPE: u8 = 0x01;

pub const HELP: &str = "\
C-a h    print this help\r
C-a x    exit emulator\r
C-a c    switch between console and monitor\r
C-a C-a  sends C-a\r
";

/// What a keystroke asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Bytes for the guest's serial port.
    Guest(Vec<u8>),
    /// Text for the terminal.
    Out(String),
    /// A complete monitor command line.
    Monitor(String),
    /// The monitor was switched to (print its banner and prompt).
    MonitorShown,
    Quit,
}

#[derive(Default)]
pub struct Console {
    escaped: bool,
    monitor: bool,
    line: Vec<u8>,
}

/// The longest monitor line kept; longer input is cut.
const MAX_LINE: usize = 4096;

impl Console {
    pub fn in_monitor(&self) -> bool {
        self.monitor
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Action>) {
        let mut guest = Vec::new();
        for &b in bytes {
            if self.escaped {
                self.escaped = false;
                match b {
                    ESCAPE => self.byte(b, &mut guest, out),
                    b'x' => {
                        flush(&mut guest, out);
                        out.push(Action::Out("QEMU: Terminated\r\n".into()));
                        out.push(Action::Quit);
                    }
                    b'h' | b'?' => {
                        flush(&mut guest, out);
                        out.push(Action::Out(HELP.into()));
                    }
                    b'c' => {
                        flush(&mut guest, out);
                        self.monitor = !self.monitor;
                        self.line.clear();
                        if self.monitor {
                            out.push(Action::MonitorShown);
                        } else {
                            out.push(Action::Out("\r\n".into()));
                        }
                    }
                    // As QEMU: an unknown escape is dropped.
                    _ => {}
                }
            } else if b == ESCAPE {
                self.escaped = true;
            } else {
                self.byte(b, &mut guest, out);
            }
        }
        flush(&mut guest, out);
    }

    fn byte(&mut self, b: u8, guest: &mut Vec<u8>, out: &mut Vec<Action>) {
        if !self.monitor {
            guest.push(b);
            return;
        }
        // The monitor's line editing: the terminal is raw, so it echoes.
        match b {
            b'\r' | b'\n' => {
                let line = String::from_utf8_lossy(&self.line).into_owned();
                self.line.clear();
                out.push(Action::Out("\r\n".into()));
                out.push(Action::Monitor(line));
            }
            0x7f | 0x08 if self.line.pop().is_some() => {
                out.push(Action::Out("\x08 \x08".into()));
            }
            0x20..=0x7e if self.line.len() < MAX_LINE => {
                self.line.push(b);
                out.push(Action::Out((b as char).to_string()));
            }
            _ => {}
        }
    }
}

fn flush(guest: &mut Vec<u8>, out: &mut Vec<Action>) {
    if !guest.is_empty() {
        out.push(Action::Guest(std::mem::take(guest)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(c: &mut Console, b: &[u8]) -> Vec<Action> {
        let mut out = Vec::new();
        c.feed(b, &mut out);
        out
    }

    #[test]
    fn escapes_follow_qemus_mux() {
        let mut c = Console::default();
        assert_eq!(feed(&mut c, b"ls\r"), vec![Action::Guest(b"ls\r".to_vec())]);
        assert_eq!(
            feed(&mut c, b"a\x01\x01b"),
            vec![Action::Guest(b"a\x01b".to_vec())]
        );
        // An escape split across reads still counts.
        assert_eq!(feed(&mut c, b"\x01"), vec![]);
        assert_eq!(feed(&mut c, b"z"), vec![], "unknown escape dropped");
        assert_eq!(feed(&mut c, b"\x01h"), vec![Action::Out(HELP.into())]);
        let out = feed(&mut c, b"q\x01x");
        assert_eq!(out[0], Action::Guest(b"q".to_vec()));
        assert_eq!(out[2], Action::Quit);
    }

    #[test]
    fn ctrl_a_c_switches_to_the_monitor_and_back() {
        let mut c = Console::default();
        assert_eq!(feed(&mut c, b"\x01c"), vec![Action::MonitorShown]);
        assert!(c.in_monitor());
        let out = feed(&mut c, b"info stx\x7fatus\r");
        assert!(
            out.contains(&Action::Monitor("info status".into())),
            "{out:?}"
        );
        assert_eq!(feed(&mut c, b"\x01c"), vec![Action::Out("\r\n".into())]);
        assert_eq!(feed(&mut c, b"k"), vec![Action::Guest(b"k".to_vec())]);
    }
}
