//! `DisplayConfig`: where the VM's screen is shown (`-display none|vnc=`,
//! `-vnc`). Casemate is headless: the only display is a VNC server.

use serde::{Deserialize, Serialize};

/// Display numbers above this would put the port past 65535.
pub const MAX_VNC_DISPLAY: u16 = 65535 - 5900;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DisplayConfig {
    /// No display (`-display none`, `-nographic`, the default).
    #[default]
    None,
    /// A VNC server on `host`, TCP port 5900 + `display`.
    Vnc { host: String, display: u16 },
}
