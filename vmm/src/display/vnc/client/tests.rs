use casemate_devices::display::{Rect, Surface};

use super::*;

fn handshake(c: &mut Client, s: &Surface) {
    c.feed(b"RFB 003.008\n", &s.lock()).unwrap();
    c.feed(&[1], &s.lock()).unwrap();
    c.feed(&[1], &s.lock()).unwrap();
    let n = c.pending().len();
    c.consume(n);
}

#[test]
fn handshake_38_sends_server_init() {
    let s = Surface::new().unwrap();
    s.lock().resize(4, 3);
    let mut c = Client::new();
    assert_eq!(c.pending(), b"RFB 003.008\n");
    c.consume(12);
    // Split across reads: the version arrives in two pieces.
    c.feed(b"RFB 003", &s.lock()).unwrap();
    c.feed(b".008\n", &s.lock()).unwrap();
    assert_eq!(c.pending(), [1, 1]);
    c.consume(2);
    c.feed(&[1, 1], &s.lock()).unwrap();
    let p = c.pending();
    assert_eq!(&p[..4], &[0, 0, 0, 0], "security result ok");
    assert_eq!(&p[4..8], &[0, 4, 0, 3], "4x3");
    assert_eq!(&p[8..24], &PixelFormat::NATIVE.encode());
    assert!(c.ready());
}

#[test]
fn version_33_gets_the_type_as_a_word() {
    let s = Surface::new().unwrap();
    let mut c = Client::new();
    c.consume(12);
    c.feed(b"RFB 003.003\n", &s.lock()).unwrap();
    assert_eq!(c.pending(), [0, 0, 0, 1]);
}

#[test]
fn garbage_and_other_security_are_refused() {
    let s = Surface::new().unwrap();
    let mut c = Client::new();
    assert!(c.feed(b"GET / HTTP/1.1\r\n", &s.lock()).is_err());
    let mut c = Client::new();
    c.feed(b"RFB 003.008\n", &s.lock()).unwrap();
    assert!(matches!(
        c.feed(&[2], &s.lock()),
        Err(ProtoError::Security(2))
    ));
    let mut c = Client::new();
    handshake(&mut c, &s);
    assert!(c.feed(&[99], &s.lock()).is_err());
}

#[test]
fn full_update_carries_the_pixels() {
    let s = Surface::new().unwrap();
    s.lock().resize(2, 2);
    s.blit(
        0,
        0,
        2,
        2,
        &[1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9, 0, 10, 11, 12, 0],
        8,
    );
    let mut c = Client::new();
    handshake(&mut c, &s);
    let _ = s.lock().take_damage();
    assert!(!c.wants_update(&s.lock()), "nothing asked yet");
    c.feed(&[3, 0, 0, 0, 0, 0, 0, 2, 0, 2], &s.lock()).unwrap();
    let f = s.lock();
    assert!(c.wants_update(&f));
    c.update(&f);
    let p = c.pending();
    assert_eq!(&p[..4], &[0, 0, 0, 1]);
    assert_eq!(&p[4..16], &[0, 0, 0, 0, 0, 2, 0, 2, 0, 0, 0, 0]);
    assert_eq!(
        &p[16..],
        &[1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9, 0, 10, 11, 12, 0]
    );
    assert!(!c.wants_update(&f), "one update per request");
}

#[test]
fn a_slow_client_gets_one_update_and_merged_damage() {
    let s = Surface::new().unwrap();
    s.lock().resize(64, 64);
    let mut c = Client::new();
    handshake(&mut c, &s);
    c.feed(&[3, 0, 0, 0, 0, 0, 0, 64, 0, 64], &s.lock())
        .unwrap();
    c.update(&s.lock());
    let queued = c.pending().len();
    // The client reads nothing but keeps asking; the guest keeps drawing.
    for i in 0..10_000u32 {
        c.feed(&[3, 1, 0, 0, 0, 0, 0, 64, 0, 64], &s.lock())
            .unwrap();
        c.add_damage(Rect::new(i % 64, i / 200, 1, 1));
        assert!(!c.wants_update(&s.lock()));
    }
    assert_eq!(c.pending().len(), queued);
    assert!(c.damage.len() <= casemate_devices::display::MAX_RECTS);
}

#[test]
fn desktop_size_follows_a_resize() {
    let s = Surface::new().unwrap();
    let mut c = Client::new();
    handshake(&mut c, &s);
    // SetEncodings: raw, DesktopSize.
    let mut m = vec![2, 0, 0, 2];
    m.extend_from_slice(&0i32.to_be_bytes());
    m.extend_from_slice(&(-223i32).to_be_bytes());
    c.feed(&m, &s.lock()).unwrap();
    c.feed(&[3, 1, 0, 0, 0, 0, 0, 1, 0, 1], &s.lock()).unwrap();
    s.lock().resize(3, 1);
    c.update(&s.lock());
    let p = c.pending();
    assert_eq!(&p[..4], &[0, 0, 0, 2]);
    assert_eq!(&p[4..16], &[0, 0, 0, 0, 0, 3, 0, 1, 0xff, 0xff, 0xff, 0x21]);
    assert_eq!(p.len(), 4 + 12 + 12 + 3 * 4);
}

#[test]
fn cut_text_is_skipped_across_reads_and_keys_are_kept() {
    let s = Surface::new().unwrap();
    let mut c = Client::new();
    handshake(&mut c, &s);
    c.feed(&[6, 0, 0, 0, 0, 0, 0, 5, b'a', b'b'], &s.lock())
        .unwrap();
    c.feed(&[b'c', b'd', b'e', 4, 1, 0, 0, 0, 0, 0, 0x61], &s.lock())
        .unwrap();
    assert_eq!(
        c.keys,
        vec![KeyEvent {
            down: true,
            keysym: 0x61
        }]
    );
}
