//! Where COM1's bytes go, opened once per `casemate` run so that a guest
//! reboot keeps appending to the same file instead of truncating it.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use super::DevError;
use crate::config::SerialConfig;
use crate::qmp::serial_link::SerialLink;

pub enum Console {
    Stdout,
    File(PathBuf, File),
    None,
    /// A socket's client or a pty (`qmp::serial_link`).
    Link(Arc<SerialLink>),
}

impl Console {
    pub fn open(c: &SerialConfig) -> Result<Self, DevError> {
        Ok(match c {
            SerialConfig::Stdio => Console::Stdout,
            SerialConfig::None => Console::None,
            SerialConfig::File(path) => {
                let f = File::create(path).map_err(|source| DevError::SerialFile {
                    path: path.clone(),
                    source,
                })?;
                Console::File(path.clone(), f)
            }
            SerialConfig::Socket(e) => Console::Link(SerialLink::listen(e)?),
            SerialConfig::Pty => Console::Link(SerialLink::pty()?),
        })
    }

    /// The socket or pty link, for the monitor thread to serve.
    pub fn link(&self) -> Option<Arc<SerialLink>> {
        match self {
            Console::Link(l) => Some(l.clone()),
            _ => None,
        }
    }

    /// A writer for this boot's serial device.
    pub fn writer(&self) -> Result<Box<dyn Write + Send>, DevError> {
        Ok(match self {
            Console::Stdout => Box::new(super::stdout::StdoutWriter::stdout()),
            Console::None => Box::new(std::io::sink()),
            Console::Link(l) => Box::new(l.writer()),
            Console::File(path, f) => {
                Box::new(f.try_clone().map_err(|source| DevError::SerialFile {
                    path: path.clone(),
                    source,
                })?)
            }
        })
    }
}
