//! The VNC server (`cm-vnc` thread, role `Vnc`): RFB 3.8 over TCP for any
//! number of clients up to `MAX_CLIENTS`, showing one `Surface`.
//!
//! Written here rather than taken from a crate: the RFB server crates on
//! crates.io (`vnc-rs` is a client; `rustvncserver`, `libvnc` bindings)
//! either run on tokio or start threads of their own, bind sockets on
//! their own, or wrap libvncserver in C; Casemate's model is one thread
//! per role under a seccomp filter that creates no sockets, fed a
//! listening socket opened at start-up. What the server needs of RFB is
//! small (handshake, three message types, Raw encoding), and its
//! protocol half (`client.rs`) is socket-free and unit-tested.
//!
//! One thread polls the surface's wake eventfd, the listener and every
//! client; all sockets are non-blocking. A client is sent an update only
//! once it asked and its previous update has left (`client.rs`), so a
//! slow client holds one frame at most and a vanished one is dropped on
//! its first error: neither can hold up the guest, which only ever locks
//! the surface to copy pixels in and writes an eventfd.

mod client;
mod pixel;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;

use casemate_devices::display::Surface;

use crate::threads::{spawn_with_role, Role};
use client::Client;
pub use client::KeyEvent;

/// Clients served at once; more wait in the listen backlog.
pub const MAX_CLIENTS: usize = 16;
const READ_CHUNK: usize = 16 << 10;

/// Where key events typed into a client go (the guest's keyboard).
pub trait KeySink: Send + Sync {
    fn key(&self, ev: KeyEvent);
}

struct Conn {
    stream: TcpStream,
    client: Client,
    peer: String,
}

/// Serve `surface` on `listener` on a new `cm-vnc` thread until the
/// process ends.
pub fn spawn(
    listener: TcpListener,
    surface: Arc<Surface>,
    keys: Option<Arc<dyn KeySink>>,
) -> std::io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    spawn_with_role(Role::Vnc, "cm-vnc".into(), move || {
        serve(&listener, &surface, keys.as_deref())
    })
}

fn serve(listener: &TcpListener, surface: &Surface, keys: Option<&dyn KeySink>) {
    let mut conns: Vec<Conn> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    loop {
        fds.clear();
        let pfd = |fd, events| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        fds.push(pfd(surface.wake_fd(), libc::POLLIN));
        // A full house leaves new connections in the backlog.
        let lfd = if conns.len() < MAX_CLIENTS {
            listener.as_raw_fd()
        } else {
            -1
        };
        fds.push(pfd(lfd, libc::POLLIN));
        for c in &conns {
            let mut ev = libc::POLLIN;
            if !c.client.pending().is_empty() {
                ev |= libc::POLLOUT;
            }
            fds.push(pfd(c.stream.as_raw_fd(), ev));
        }
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            log::error!("vnc: poll failed, the server stops: {e}");
            return;
        }
        if fds[0].revents != 0 {
            surface.drain_wake();
            let damage = surface.lock().take_damage();
            for c in &mut conns {
                for r in &damage {
                    c.client.add_damage(*r);
                }
            }
        }
        if fds[1].revents != 0 {
            accept_all(listener, &mut conns);
        }
        // Clients accepted just now have no pollfd yet: they get theirs
        // next round (the server's greeting goes out below).
        let polled: Vec<i16> = fds[2..].iter().map(|f| f.revents).collect();
        let mut i = 0;
        conns.retain_mut(|c| {
            let rev = polled.get(i).copied().unwrap_or(0);
            i += 1;
            match service(c, rev, surface, keys) {
                Ok(()) => true,
                Err(why) => {
                    log::info!("vnc: client {} leaves: {why}", c.peer);
                    false
                }
            }
        });
    }
}

fn accept_all(listener: &TcpListener, conns: &mut Vec<Conn>) {
    while conns.len() < MAX_CLIENTS {
        match listener.accept() {
            Ok((stream, addr)) => {
                if let Err(e) = stream
                    .set_nonblocking(true)
                    .and_then(|()| stream.set_nodelay(true))
                {
                    log::warn!("vnc: client {addr}: {e}");
                    continue;
                }
                log::info!("vnc: client {addr} connected");
                conns.push(Conn {
                    stream,
                    client: Client::new(),
                    peer: addr.to_string(),
                });
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                // ECONNABORTED, EMFILE, ...: try again on the next wake-up.
                log::warn!("vnc: accepting a client: {e}");
                return;
            }
        }
    }
}

/// Read what the client sent, answer it, and write what is queued.
fn service(
    c: &mut Conn,
    revents: i16,
    surface: &Surface,
    keys: Option<&dyn KeySink>,
) -> Result<(), String> {
    if revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
        return Err("socket error".into());
    }
    if revents & (libc::POLLIN | libc::POLLHUP) != 0 {
        let mut buf = [0u8; READ_CHUNK];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => return Err("connection closed".into()),
                Ok(n) => c
                    .client
                    .feed(&buf[..n], &surface.lock())
                    .map_err(|e| e.to_string())?,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        for k in c.client.keys.drain(..) {
            if let Some(s) = keys {
                s.key(k);
            }
        }
    }
    // Encoding (a pixel-format conversion per pixel) runs on a snapshot,
    // so the device drawing the next frame waits only for a copy.
    let snapshot = {
        let f = surface.lock();
        c.client.wants_update(&f).then(|| f.clone())
    };
    if let Some(f) = snapshot {
        c.client.update(&f);
    }
    while !c.client.pending().is_empty() {
        match c.stream.write(c.client.pending()) {
            Ok(0) => return Err("connection closed".into()),
            Ok(n) => c.client.consume(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}
