//! The VM's display as the host sees it: the surface a graphics device
//! draws (`casemate_devices::display`) served over VNC (`vnc/`), and
//! screenshots of it. Owns the VNC listener (bound at start-up, before
//! the sandbox closes) and the server thread; not the devices.

pub mod keyboard;
pub mod vnc;

use std::net::TcpListener;
use std::sync::Arc;

use casemate_devices::display::Surface;

use crate::config::DisplayConfig;

#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error("-vnc {addr}: cannot listen")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the display surface")]
    Surface(#[source] std::io::Error),
    #[error("starting the VNC server thread")]
    Thread(#[source] std::io::Error),
}

/// The display's host resources, opened once per run.
pub struct Display {
    pub surface: Arc<Surface>,
    listener: Option<TcpListener>,
}

impl Display {
    /// Bind the VNC listener `config` asks for; None for no display.
    /// `surface` is the graphics device's, else a blank one is shown.
    pub fn open(
        config: &DisplayConfig,
        surface: Option<Arc<Surface>>,
    ) -> Result<Option<Self>, DisplayError> {
        let DisplayConfig::Vnc { host, display } = config else {
            return Ok(None);
        };
        let port = 5900 + u32::from(*display);
        let addr = format!("{host}:{port}");
        let bind = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            addr.clone()
        };
        let listener =
            TcpListener::bind(&bind).map_err(|source| DisplayError::Listen { addr, source })?;
        let surface = match surface {
            Some(s) => s,
            None => Arc::new(Surface::new().map_err(DisplayError::Surface)?),
        };
        Ok(Some(Self {
            surface,
            listener: Some(listener),
        }))
    }

    /// Write the current screen to `path` as a PNG: what QMP's
    /// `screendump` will call. The caller's thread needs to be allowed
    /// to create `path` (Landlock and its seccomp role).
    pub fn screendump(
        &self,
        path: &std::path::Path,
    ) -> Result<(), casemate_devices::display::screendump::ScreendumpError> {
        casemate_devices::display::screendump::screendump(&self.surface, path)
    }

    /// Start serving (once; later calls do nothing).
    pub fn start(&mut self, keys: Option<Arc<dyn vnc::KeySink>>) -> Result<(), DisplayError> {
        if let Some(l) = self.listener.take() {
            vnc::spawn(l, self.surface.clone(), keys).map_err(DisplayError::Thread)?;
        }
        Ok(())
    }
}

/// QMP's `screendump` on this display. A confined VMM opens no path after
/// start-up (Landlock grants none, and the monitor thread's seccomp role
/// has no `openat`), so it refuses with the reason instead of trying;
/// with `-sandbox off` it writes the PNG. Passing the file as an fd
/// (QMP `add-fd`, `/dev/fdset/N`) would lift that; not built yet.
pub struct QmpScreendump {
    surface: Arc<Surface>,
    confined: bool,
}

impl QmpScreendump {
    pub fn new(display: &Display, sandbox: &crate::config::SandboxConfig) -> Self {
        use crate::config::{LandlockMode, SeccompMode};
        Self {
            surface: display.surface.clone(),
            confined: sandbox.seccomp != SeccompMode::Off || sandbox.landlock != LandlockMode::Off,
        }
    }
}

impl crate::qmp::Screendump for QmpScreendump {
    fn screendump(&self, path: &str, format: Option<&str>) -> Result<(), String> {
        if !matches!(format, None | Some("png")) {
            return Err(format!(
                "screendump format '{}' is not supported: Casemate writes png",
                format.unwrap_or_default()
            ));
        }
        if self.confined {
            return Err(format!(
                "cannot write {path}: this VMM is confined (seccomp, Landlock) and opens no path \
                 after start-up; run it with -sandbox off to take screendumps"
            ));
        }
        casemate_devices::display::screendump::screendump(&self.surface, std::path::Path::new(path))
            .map_err(|e| format!("{path}: {e}"))
    }
}
