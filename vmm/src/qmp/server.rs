//! The monitor thread (`cm-qmp`, role `Qmp`): one poll loop over the
//! listening sockets, every connected client and the hub's wake-up
//! eventfd. Sockets are non-blocking and every buffer is bounded (a value
//! up to `wire::MAX_MESSAGE`, an HMP line up to `MAX_LINE`, replies not
//! yet read up to `MAX_OUT`): a client that sends garbage, floods or
//! stops reading is answered, trimmed or dropped, and never holds up the
//! VM or the other clients. A client's fd is closed when it leaves.
//!
//! With the console on stdio, the same loop reads the keyboard
//! (`console`): keys go to COM1 no faster than its receive FIFO drains
//! (stdin is not read while earlier keys wait, so nothing piles up here),
//! and `Ctrl-A c` puts the monitor on the terminal. With COM1 on a
//! socket or a pty (`serial_link`), the loop also accepts that client and
//! feeds its input to COM1 the same way.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::commands::{self, VmInfo};
use super::console::{Action, Console};
use super::listen::Listener;
use super::serial_link::SerialLink;
use super::wire::{self, Piece, QmpError, Splitter};
use super::{hmp, Hub};
use crate::config::MonitorMode;
use crate::threads::{spawn_with_role, Role};

/// Replies and events a client has not read yet; past this it is dropped.
const MAX_OUT: usize = 8 << 20;
/// The longest HMP command line.
const MAX_LINE: usize = 64 << 10;
/// Clients at once; later ones are closed at once.
const MAX_CLIENTS: usize = 256;
/// Bytes read from one client per wake-up, so one cannot starve others.
const READ_CHUNK: usize = 64 << 10;
/// Keys read at once: about what COM1's FIFO holds.
const KEYS_CHUNK: usize = 64;
/// How often keys waiting for room in COM1's FIFO are offered again
/// (the UART has no "drained" notification to wait on).
const KEYS_RETRY_MS: i32 = 5;

/// Keyboard input for the guest's console.
#[derive(Default)]
struct ConsoleIn {
    state: Console,
    /// Keys read but not yet taken by COM1 (at most `KEYS_CHUNK`).
    pending: Vec<u8>,
    eof: bool,
}

/// COM1's socket or pty peer and its input not yet taken by COM1.
struct LinkIn {
    link: Arc<SerialLink>,
    pending: Vec<u8>,
}

enum Io {
    Unix(UnixStream),
    Tcp(TcpStream),
    Stdio,
}

impl Io {
    fn read_fd(&self) -> RawFd {
        match self {
            Io::Unix(s) => s.as_raw_fd(),
            Io::Tcp(s) => s.as_raw_fd(),
            Io::Stdio => libc::STDIN_FILENO,
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Unix(s) => s.read(buf),
            Io::Tcp(s) => s.read(buf),
            Io::Stdio => read_stdin(buf),
        }
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Io::Unix(s) => s.write(buf),
            Io::Tcp(s) => s.write(buf),
            Io::Stdio => {
                let mut out = std::io::stdout().lock();
                out.write_all(buf)?;
                out.flush()?;
                Ok(buf.len())
            }
        }
    }
}

struct Client {
    io: Io,
    mode: MonitorMode,
    split: Splitter,
    line: Vec<u8>,
    /// HMP: the current line grew too long and is being skipped.
    skipping: bool,
    negotiated: bool,
    out: Vec<u8>,
    /// Stop reading (EOF or error); dropped once its output is written.
    eof: bool,
    dead: bool,
}

impl Client {
    fn new(io: Io, mode: MonitorMode) -> Self {
        let mut c = Self {
            io,
            mode,
            split: Splitter::default(),
            line: Vec::new(),
            skipping: false,
            negotiated: false,
            out: Vec::new(),
            eof: false,
            dead: false,
        };
        match mode {
            MonitorMode::Control => c.send_line(&wire::greeting()),
            MonitorMode::Readline => c.push(hmp::banner().as_bytes()),
        }
        c
    }

    fn push(&mut self, b: &[u8]) {
        if self.out.len() + b.len() > MAX_OUT {
            log::debug!("monitor: a client does not read its replies; dropping it");
            self.dead = true;
            return;
        }
        self.out.extend_from_slice(b);
    }

    fn send_line(&mut self, s: &str) {
        self.push(s.as_bytes());
        self.push(b"\r\n");
    }

    /// Write what is pending without blocking.
    fn flush(&mut self) {
        while !self.out.is_empty() && !self.dead {
            match self.io.write(&self.out) {
                Ok(0) => self.dead = true,
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => self.dead = true,
            }
        }
    }
}

/// The running monitor thread.
pub struct Monitors {
    hub: Arc<Hub>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Monitors {
    /// Deliver the last events, close every client and end the thread.
    pub fn finish(self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.hub.wake.write(1);
        let _ = self.thread.join();
    }
}

/// Start the monitor thread over `listeners`.
pub fn start(
    hub: Arc<Hub>,
    info: VmInfo,
    listeners: Vec<(Listener, MonitorMode)>,
    console: bool,
    link: Option<Arc<SerialLink>>,
) -> std::io::Result<Monitors> {
    let stop = Arc::new(AtomicBool::new(false));
    let (h, s) = (hub.clone(), stop.clone());
    let thread = spawn_with_role(Role::Qmp, "cm-qmp".into(), move || {
        Server {
            hub: h,
            info,
            stop: s,
            clients: Vec::new(),
            console: console.then(ConsoleIn::default),
            link: link.map(|link| LinkIn {
                link,
                pending: Vec::new(),
            }),
        }
        .run(listeners)
    })?;
    Ok(Monitors { hub, stop, thread })
}

struct Server {
    hub: Arc<Hub>,
    info: VmInfo,
    stop: Arc<AtomicBool>,
    clients: Vec<Client>,
    console: Option<ConsoleIn>,
    link: Option<LinkIn>,
}

impl Server {
    fn run(mut self, listeners: Vec<(Listener, MonitorMode)>) {
        let mut sockets = Vec::new();
        for (l, mode) in listeners {
            match l {
                // With the console on stdio, its monitor is `Ctrl-A c`.
                Listener::Stdio if self.console.is_some() => {}
                Listener::Stdio => self.clients.push(Client::new(Io::Stdio, mode)),
                l => sockets.push((l, mode)),
            }
        }
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let mut fds = vec![pollfd(self.hub.wake.as_raw_fd(), libc::POLLIN)];
            for (l, _) in &sockets {
                let fd = match l {
                    Listener::Unix(u) => u.as_raw_fd(),
                    Listener::Tcp(t) => t.as_raw_fd(),
                    Listener::Stdio => -1,
                };
                fds.push(pollfd(fd, libc::POLLIN));
            }
            for c in &self.clients {
                let mut ev = 0;
                if !c.eof {
                    ev |= libc::POLLIN;
                }
                if !c.out.is_empty() && !matches!(c.io, Io::Stdio) {
                    ev |= libc::POLLOUT;
                }
                fds.push(pollfd(if ev == 0 { -1 } else { c.io.read_fd() }, ev));
            }
            let (keys_fd, mut timeout) = match &self.console {
                Some(k) if !k.pending.is_empty() => (-1, KEYS_RETRY_MS),
                Some(k) if !k.eof => (libc::STDIN_FILENO, -1),
                _ => (-1, -1),
            };
            fds.push(pollfd(keys_fd, libc::POLLIN));
            let link_fd = self.link.as_ref().map_or(-1, |l| {
                if !l.pending.is_empty() {
                    timeout = KEYS_RETRY_MS;
                }
                l.link.poll_fd(l.pending.is_empty())
            });
            fds.push(pollfd(link_fd, libc::POLLIN));
            // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("monitor: poll failed, monitors stop: {e}");
                return;
            }
            if fds[0].revents != 0 {
                let _ = self.hub.wake.read();
            }
            self.deliver_events();
            if self.stop.load(Ordering::Acquire) {
                self.clients.iter_mut().for_each(Client::flush);
                return;
            }
            for (i, (l, mode)) in sockets.iter().enumerate() {
                if fds[1 + i].revents != 0 {
                    self.accept(l, *mode);
                }
            }
            let link_ready = fds.pop().is_some_and(|k| k.revents != 0);
            self.link_input(link_ready, &mut buf);
            let keys_ready = fds.pop().is_some_and(|k| k.revents != 0);
            self.keys(keys_ready);
            let first_client = 1 + sockets.len();
            for i in 0..fds.len() - first_client {
                let rev = fds[first_client + i].revents;
                if rev & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                    self.read_client(i, &mut buf);
                }
            }
            self.clients.iter_mut().for_each(Client::flush);
            // Dropping a client closes its socket.
            self.clients
                .retain(|c| !c.dead && !(c.eof && (c.out.is_empty() || matches!(c.io, Io::Stdio))));
        }
    }

    fn accept(&mut self, l: &Listener, mode: MonitorMode) {
        // Drain the backlog; a full table closes newcomers at once.
        loop {
            let io = match l {
                Listener::Unix(u) => u.accept().map(|(s, _)| Io::Unix(s)),
                Listener::Tcp(t) => t.accept().map(|(s, _)| Io::Tcp(s)),
                Listener::Stdio => return,
            };
            let io = match io {
                Ok(io) => io,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("monitor: accept failed: {e}");
                    return;
                }
            };
            let nonblocking = match &io {
                Io::Unix(s) => s.set_nonblocking(true),
                Io::Tcp(s) => s.set_nonblocking(true),
                Io::Stdio => Ok(()),
            };
            if nonblocking.is_err() || self.clients.len() >= MAX_CLIENTS {
                log::debug!(
                    "monitor: refusing a client ({} connected)",
                    self.clients.len()
                );
                continue;
            }
            self.clients.push(Client::new(io, mode));
        }
    }

    fn read_client(&mut self, i: usize, buf: &mut [u8]) {
        let n = match self.clients[i].io.read(buf) {
            Ok(0) => {
                self.clients[i].eof = true;
                return;
            }
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                return
            }
            Err(_) => {
                self.clients[i].dead = true;
                return;
            }
        };
        match self.clients[i].mode {
            MonitorMode::Control => {
                let mut pieces = Vec::new();
                self.clients[i].split.feed(&buf[..n], &mut pieces);
                for p in pieces {
                    self.qmp_piece(i, p);
                }
            }
            MonitorMode::Readline => {
                for &b in &buf[..n] {
                    self.hmp_byte(i, b);
                }
            }
        }
    }

    fn qmp_piece(&mut self, i: usize, p: Piece) {
        let parse_error = |what: &str| Err(QmpError::generic(format!("JSON parse error, {what}")));
        let (result, id) = match p {
            Piece::Garbage => (parse_error("invalid keyword"), None),
            Piece::TooLong => (parse_error("message too long"), None),
            Piece::Value(text) => match serde_json::from_slice(&text) {
                Err(e) => (parse_error(&e.to_string()), None),
                Ok(v) => match wire::request(v) {
                    Err((e, id)) => (Err(e), id),
                    Ok(req) => {
                        let r = self.execute(i, &req.execute, &req.arguments);
                        (r, req.id)
                    }
                },
            },
        };
        // Events a command raised (STOP, RESUME, POWERDOWN) come first, as
        // in QEMU, where they are sent while the command runs.
        self.deliver_events();
        let line = wire::reply(&result, id.as_ref());
        self.clients[i].send_line(&line);
    }

    fn execute(
        &mut self,
        i: usize,
        name: &str,
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<serde_json::Value, QmpError> {
        let c = &mut self.clients[i];
        if name == "qmp_capabilities" {
            if c.negotiated {
                return Err(QmpError::not_found(
                    "Capabilities negotiation is already complete, command ignored",
                ));
            }
            if let Some(k) = args.keys().find(|k| *k != "enable") {
                return Err(QmpError::generic(format!("Parameter '{k}' is unexpected")));
            }
            match args.get("enable") {
                None => {}
                Some(serde_json::Value::Array(a)) if a.is_empty() => {}
                Some(serde_json::Value::Array(a)) => {
                    return Err(QmpError::generic(format!(
                        "Capability '{}' not available",
                        a[0].as_str().unwrap_or("?")
                    )))
                }
                Some(_) => {
                    return Err(QmpError::generic(
                        "Invalid parameter type for 'enable', expected: array",
                    ))
                }
            }
            c.negotiated = true;
            return Ok(serde_json::json!({}));
        }
        if !c.negotiated {
            return Err(QmpError::not_found(
                "Expecting capabilities negotiation with 'qmp_capabilities'",
            ));
        }
        commands::execute(&self.hub, &self.info, name, args)
    }

    fn hmp_byte(&mut self, i: usize, b: u8) {
        let c = &mut self.clients[i];
        if b != b'\n' {
            if c.line.len() >= MAX_LINE {
                c.skipping = true;
                c.line.clear();
            }
            if !c.skipping {
                c.line.push(b);
            }
            return;
        }
        let line = std::mem::take(&mut c.line);
        let text = if std::mem::take(&mut c.skipping) {
            "command line too long\r\n".to_string()
        } else {
            let s = String::from_utf8_lossy(&line);
            hmp::execute(&self.hub, &self.info, s.trim())
        };
        self.deliver_events();
        let c = &mut self.clients[i];
        c.push(text.as_bytes());
        c.push(hmp::PROMPT.as_bytes());
    }

    /// Offer the link's waiting input to COM1, then accept or read when
    /// `ready` (input is read only once COM1 took the earlier bytes).
    fn link_input(&mut self, ready: bool, buf: &mut [u8]) {
        let Some(l) = self.link.as_mut() else {
            return;
        };
        if !l.pending.is_empty() {
            if let Some(serial) = self.hub.serial() {
                let n = serial
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .enqueue_input(&l.pending);
                l.pending.drain(..n);
            }
        }
        if ready && l.pending.is_empty() {
            let n = l.link.ready(&mut buf[..KEYS_CHUNK]);
            l.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Offer waiting keys to COM1, then read more when `ready`.
    fn keys(&mut self, ready: bool) {
        let Some(k) = self.console.as_mut() else {
            return;
        };
        if !k.pending.is_empty() {
            if let Some(serial) = self.hub.serial() {
                let n = serial
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .enqueue_input(&k.pending);
                k.pending.drain(..n);
            }
        }
        if !ready || !k.pending.is_empty() {
            return;
        }
        let mut buf = [0u8; KEYS_CHUNK];
        let n = match read_stdin(&mut buf) {
            Ok(0) => {
                k.eof = true;
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
            Err(e) => {
                log::debug!("console: stdin: {e}; no more input");
                k.eof = true;
                return;
            }
        };
        let mut actions = Vec::new();
        k.state.feed(&buf[..n], &mut actions);
        for a in actions {
            self.console_action(a);
        }
    }

    fn console_action(&mut self, a: Action) {
        let out = |s: &str| {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(s.as_bytes());
            let _ = o.flush();
        };
        match a {
            Action::Guest(b) => {
                if let Some(k) = self.console.as_mut() {
                    k.pending.extend_from_slice(&b);
                }
                // Offer them at once; the rest waits for room.
                self.keys(false);
            }
            Action::Out(s) => out(&s),
            Action::MonitorShown => out(&hmp::banner()),
            Action::Monitor(line) => {
                let text = hmp::execute(&self.hub, &self.info, line.trim());
                self.deliver_events();
                out(&text);
                out(hmp::PROMPT);
            }
            Action::Quit => {
                self.hub.host(crate::control::HostAction::Quit);
            }
        }
    }

    /// Hand queued events to every negotiated QMP client.
    fn deliver_events(&mut self) {
        for e in self.hub.take_events() {
            for c in self
                .clients
                .iter_mut()
                .filter(|c| c.negotiated && c.mode == MonitorMode::Control)
            {
                c.send_line(&e);
            }
        }
    }
}

/// Read fd 0 directly: std's `Stdin` buffers, and bytes in its buffer
/// are invisible to poll.
fn read_stdin(buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: reads at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}
