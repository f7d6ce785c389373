//! X11 keysyms (what VNC KeyEvents carry) to PC scancode set 1, the codes
//! a guest reads from port 0x60 while the i8042 translates (its default,
//! and how Linux runs an AT keyboard). A US layout: a shifted symbol maps
//! to its unshifted key, since the client sends Shift as its own event.
//! Written here: the keymap crates on crates.io map evdev or USB HID
//! codes, not keysyms to set 1.

/// The make code of `keysym` (0xe0-prefixed keys as two bytes), or None
/// for a key the PC keyboard does not have.
pub fn set1_make(keysym: u32) -> Option<&'static [u8]> {
    let ascii = |c: u8| -> Option<&'static [u8]> {
        // Each key once, by its unshifted and shifted characters.
        const KEYS: &[(u8, u8, u8)] = &[
            (b'1', b'!', 0x02),
            (b'2', b'@', 0x03),
            (b'3', b'#', 0x04),
            (b'4', b'$', 0x05),
            (b'5', b'%', 0x06),
            (b'6', b'^', 0x07),
            (b'7', b'&', 0x08),
            (b'8', b'*', 0x09),
            (b'9', b'(', 0x0a),
            (b'0', b')', 0x0b),
            (b'-', b'_', 0x0c),
            (b'=', b'+', 0x0d),
            (b'q', b'Q', 0x10),
            (b'w', b'W', 0x11),
            (b'e', b'E', 0x12),
            (b'r', b'R', 0x13),
            (b't', b'T', 0x14),
            (b'y', b'Y', 0x15),
            (b'u', b'U', 0x16),
            (b'i', b'I', 0x17),
            (b'o', b'O', 0x18),
            (b'p', b'P', 0x19),
            (b'[', b'{', 0x1a),
            (b']', b'}', 0x1b),
            (b'a', b'A', 0x1e),
            (b's', b'S', 0x1f),
            (b'd', b'D', 0x20),
            (b'f', b'F', 0x21),
            (b'g', b'G', 0x22),
            (b'h', b'H', 0x23),
            (b'j', b'J', 0x24),
            (b'k', b'K', 0x25),
            (b'l', b'L', 0x26),
            (b';', b':', 0x27),
            (b'\'', b'"', 0x28),
            (b'`', b'~', 0x29),
            (b'\\', b'|', 0x2b),
            (b'z', b'Z', 0x2c),
            (b'x', b'X', 0x2d),
            (b'c', b'C', 0x2e),
            (b'v', b'V', 0x2f),
            (b'b', b'B', 0x30),
            (b'n', b'N', 0x31),
            (b'm', b'M', 0x32),
            (b',', b'<', 0x33),
            (b'.', b'>', 0x34),
            (b'/', b'?', 0x35),
            (b' ', b' ', 0x39),
        ];
        KEYS.iter()
            .find(|k| k.0 == c || k.1 == c)
            .map(|k| single(k.2))
    };
    match keysym {
        0x20..=0x7e => ascii(keysym as u8),
        0xff08 => Some(single(0x0e)), // BackSpace
        0xff09 => Some(single(0x0f)), // Tab
        0xff0d => Some(single(0x1c)), // Return
        0xff1b => Some(single(0x01)), // Escape
        0xffe1 => Some(single(0x2a)), // Shift_L
        0xffe2 => Some(single(0x36)), // Shift_R
        0xffe3 => Some(single(0x1d)), // Control_L
        0xffe5 => Some(single(0x3a)), // Caps_Lock
        0xffe9 => Some(single(0x38)), // Alt_L
        0xffbe..=0xffc7 => Some(single(0x3b + (keysym - 0xffbe) as u8)), // F1-F10
        0xffc8 => Some(single(0x57)), // F11
        0xffc9 => Some(single(0x58)), // F12
        0xffe4 => Some(&[0xe0, 0x1d]), // Control_R
        0xffea => Some(&[0xe0, 0x38]), // Alt_R
        0xff50 => Some(&[0xe0, 0x47]), // Home
        0xff51 => Some(&[0xe0, 0x4b]), // Left
        0xff52 => Some(&[0xe0, 0x48]), // Up
        0xff53 => Some(&[0xe0, 0x4d]), // Right
        0xff54 => Some(&[0xe0, 0x50]), // Down
        0xff55 => Some(&[0xe0, 0x49]), // Page_Up
        0xff56 => Some(&[0xe0, 0x51]), // Page_Down
        0xff57 => Some(&[0xe0, 0x4f]), // End
        0xff63 => Some(&[0xe0, 0x52]), // Insert
        0xffff => Some(&[0xe0, 0x53]), // Delete
        _ => None,
    }
}

/// Static one-byte slices for every set-1 code below 0x80.
fn single(code: u8) -> &'static [u8] {
    static ALL: [u8; 128] = {
        let mut a = [0u8; 128];
        let mut i = 0;
        while i < 128 {
            a[i] = i as u8;
            i += 1;
        }
        a
    };
    let i = usize::from(code & 0x7f);
    &ALL[i..=i]
}

/// The bytes for a press (`down`) or release of `keysym`: the make code,
/// or the break code (make | 0x80, after the same prefix).
pub fn set1(keysym: u32, down: bool) -> Option<Vec<u8>> {
    let make = set1_make(keysym)?;
    let mut v = make.to_vec();
    if !down {
        if let Some(last) = v.last_mut() {
            *last |= 0x80;
        }
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_shifted_symbols_and_extended_keys() {
        assert_eq!(set1(0x61, true).unwrap(), [0x1e]);
        assert_eq!(set1(0x41, false).unwrap(), [0x9e], "A is the a key");
        assert_eq!(set1(0x21, true).unwrap(), [0x02], "! is the 1 key");
        assert_eq!(set1(0xff0d, true).unwrap(), [0x1c]);
        assert_eq!(set1(0xff52, false).unwrap(), [0xe0, 0xc8]);
        assert_eq!(set1(0xffc9, true).unwrap(), [0x58]);
        assert_eq!(set1(0x1234_5678, true), None);
    }
}
