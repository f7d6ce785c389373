//! The monitors' listening sockets, bound at start-up before the process
//! is confined (afterwards it may open no path and bind nothing). A unix
//! socket path left by an earlier run is replaced, as QEMU does.

use std::net::TcpListener;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use crate::config::{Endpoint, MonitorConfig, MonitorMode};

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("monitor socket {path}: cannot listen")]
    Unix {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("monitor socket {host}:{port}: cannot listen")]
    Tcp {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("monitor socket {0}: a file that is not a socket is in the way")]
    NotSocket(PathBuf),
}

/// A bound, non-blocking listening socket.
pub enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
    /// HMP on the standard streams (`-monitor stdio`).
    Stdio,
}

/// Bind every socket monitor; `stdio` ones are passed through.
pub fn open(monitors: &[MonitorConfig]) -> Result<Vec<(Listener, MonitorMode)>, ListenError> {
    monitors
        .iter()
        .map(|m| Ok((listen(&m.endpoint)?, m.mode)))
        .collect()
}

pub fn listen(e: &Endpoint) -> Result<Listener, ListenError> {
    match e {
        Endpoint::Stdio => Ok(Listener::Stdio),
        Endpoint::Unix(path) => {
            let err = |source| ListenError::Unix {
                path: path.clone(),
                source,
            };
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(err)?,
                Ok(_) => return Err(ListenError::NotSocket(path.clone())),
                Err(_) => {}
            }
            let l = UnixListener::bind(path).map_err(err)?;
            l.set_nonblocking(true).map_err(err)?;
            Ok(Listener::Unix(l))
        }
        Endpoint::Tcp { host, port } => {
            let err = |source| ListenError::Tcp {
                host: host.clone(),
                port: *port,
                source,
            };
            let l = TcpListener::bind((host.as_str(), *port)).map_err(err)?;
            l.set_nonblocking(true).map_err(err)?;
            Ok(Listener::Tcp(l))
        }
    }
}

/// The listening fd to poll (-1 for stdio).
pub fn raw_fd(l: &Listener) -> std::os::fd::RawFd {
    use std::os::fd::AsRawFd;
    match l {
        Listener::Unix(u) => u.as_raw_fd(),
        Listener::Tcp(t) => t.as_raw_fd(),
        Listener::Stdio => -1,
    }
}

/// One waiting client as a non-blocking fd, if any.
pub fn accept_fd(l: &Listener) -> Option<std::os::fd::OwnedFd> {
    let fd = match l {
        Listener::Unix(u) => u.accept().and_then(|(s, _)| {
            s.set_nonblocking(true)?;
            Ok(std::os::fd::OwnedFd::from(s))
        }),
        Listener::Tcp(t) => t.accept().and_then(|(s, _)| {
            s.set_nonblocking(true)?;
            Ok(std::os::fd::OwnedFd::from(s))
        }),
        Listener::Stdio => return None,
    };
    fd.map_err(|e| log::debug!("serial: accept failed: {e}"))
        .ok()
}
