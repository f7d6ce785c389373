//! Keys typed into a VNC client, to the guest's keyboard: the VNC server
//! (one per process) reaches the current boot's i8042, which the builder
//! attaches here at each boot. X11 keysyms become set-1 scancodes
//! (`casemate_devices::legacy::keymap`); keys without a PC key, or typed
//! while no boot is attached, are dropped.

use std::sync::{Arc, Mutex};

use casemate_devices::legacy::{keymap, I8042};

use super::vnc::{KeyEvent, KeySink};

#[derive(Default)]
pub struct KeyboardLink {
    kbd: Mutex<Option<Arc<Mutex<I8042>>>>,
}

impl KeyboardLink {
    /// The boot's keyboard controller from now on (None: no keyboard).
    pub fn attach(&self, kbd: Option<Arc<Mutex<I8042>>>) {
        *self.kbd.lock().unwrap_or_else(|p| p.into_inner()) = kbd;
    }
}

impl KeySink for KeyboardLink {
    fn key(&self, ev: KeyEvent) {
        let Some(bytes) = keymap::set1(ev.keysym, ev.down) else {
            log::debug!("vnc: no PC key for keysym {:#x}", ev.keysym);
            return;
        };
        let kbd = self.kbd.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(k) = kbd {
            k.lock().unwrap_or_else(|p| p.into_inner()).key(&bytes);
        }
    }
}
