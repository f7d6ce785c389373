//! QEMU's control interfaces: QMP (JSON, for programs) and HMP (text, for
//! people), served on the sockets `-qmp`, `-monitor` and `-mon` name.
//!
//! Owns the `Hub` every thread shares with the monitors (run state, the
//! running boot's control channel and PCI root, pending events), the
//! wire format (`wire`), the command set both monitors share
//! (`commands`), the listening sockets (`listen`) and the server thread
//! (`server`, role `Qmp`). It does not own the vCPUs: `stop`/`cont` go
//! through `vstate::pause`; reset, power button and quit go to the
//! control thread as `CtlMsg::Host`. No well-kept crate serves QMP from
//! the VMM side (qapi-rs is a client), so the protocol is written here.

pub mod commands;
pub mod console;
pub mod hmp;
pub mod listen;
pub mod pci_info;
pub mod serial_link;
pub mod server;
pub mod tty;
pub mod wire;

use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

use casemate_devices::legacy::Serial;
use casemate_devices::pci::PciRoot;
use vmm_sys_util::eventfd::EventFd;

use crate::control::{CtlMsg, HostAction};
use crate::vstate::pause::Pause;

/// Something that can answer `screendump` (the display registers one).
pub trait Screendump: Send + Sync {
    /// Write the screen to `path` (PPM or `format`); Err is the message.
    fn screendump(&self, path: &str, format: Option<&str>) -> Result<(), String>;
}

/// What a boot publishes while it runs.
#[derive(Default)]
pub struct BootLinks {
    pub ctl: Option<Sender<CtlMsg>>,
    pub pci: Option<Arc<PciRoot>>,
    /// COM1, for console input.
    pub serial: Option<Arc<Mutex<Serial>>>,
}

/// Shared between the monitors, the builder and the control thread.
pub struct Hub {
    pub pause: Arc<Pause>,
    boot: Mutex<BootLinks>,
    /// Serialised events not yet handed to clients.
    events: Mutex<Vec<String>>,
    /// Wakes the server thread: events, or the end of the process.
    pub wake: EventFd,
    /// `quit` asked while no boot runs (between reboots).
    quit: std::sync::atomic::AtomicBool,
    /// A `system_reset` asked while no boot runs: the next boot gets it.
    reset_pending: std::sync::atomic::AtomicBool,
    screen: Mutex<Option<Arc<dyn Screendump>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    pub fn new(start_paused: bool) -> std::io::Result<Self> {
        Ok(Self {
            pause: Arc::new(Pause::new(start_paused)),
            boot: Mutex::new(BootLinks::default()),
            events: Mutex::new(Vec::new()),
            wake: EventFd::new(libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)?,
            quit: Default::default(),
            reset_pending: Default::default(),
            screen: Mutex::new(None),
        })
    }

    /// A boot starts (its links) or ends (the default: none).
    pub fn set_boot(&self, links: BootLinks) {
        let mut b = lock(&self.boot);
        *b = links;
        if let Some(ctl) = &b.ctl {
            use std::sync::atomic::Ordering;
            // What was asked while no boot ran is this boot's first message.
            if self.quit.load(Ordering::Acquire) {
                let _ = ctl.send(CtlMsg::Host(HostAction::Quit));
            } else if self.reset_pending.swap(false, Ordering::AcqRel) {
                let _ = ctl.send(CtlMsg::Host(HostAction::Reset));
            }
        }
    }

    pub fn serial(&self) -> Option<Arc<Mutex<Serial>>> {
        lock(&self.boot).serial.clone()
    }

    pub fn pci_root(&self) -> Option<Arc<PciRoot>> {
        lock(&self.boot).pci.clone()
    }

    /// Hand `action` to the running boot. Between boots (or before the
    /// first) a quit or reset waits for the next one; a power button
    /// press is lost, as the guest has not enabled the button yet.
    pub fn host(&self, action: HostAction) {
        use std::sync::atomic::Ordering;
        if action == HostAction::Quit {
            self.quit.store(true, Ordering::Release);
        }
        let b = lock(&self.boot);
        let sent = b
            .ctl
            .as_ref()
            .is_some_and(|c| c.send(CtlMsg::Host(action)).is_ok());
        if !sent && action == HostAction::Reset {
            self.reset_pending.store(true, Ordering::Release);
        }
    }

    /// A boot ended with `action` still unread in its channel: keep it for
    /// the next boot.
    pub fn requeue(&self, action: HostAction) {
        if action == HostAction::Reset {
            self.reset_pending
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Whether `quit` was asked (checked between boots).
    pub fn quit_asked(&self) -> bool {
        self.quit.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Queue event `name` with `data` for every negotiated QMP client.
    pub fn emit(&self, name: &str, data: Option<serde_json::Value>) {
        lock(&self.events).push(wire::event(name, data));
        let _ = self.wake.write(1);
    }

    /// The events queued since the last call.
    pub fn take_events(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.events))
    }

    /// The display's `screendump`, once it registers one.
    pub fn set_screendump(&self, s: Arc<dyn Screendump>) {
        *lock(&self.screen) = Some(s);
    }

    pub fn screendump(&self) -> Option<Arc<dyn Screendump>> {
        lock(&self.screen).clone()
    }
}
