//! A small RFB (VNC) client for tests, written against RFC 6143 and not
//! against Casemate's server: version 3.8, security None, a 32-bit
//! pixel format of its own choosing (little-endian with red in the low
//! byte, the opposite of what servers offer, so a server that ignores
//! SetPixelFormat shows wrong colours), Raw encoding plus DesktopSize.
//! Not big-endian: QEMU 7.2 ignores the byte order when the shifts are
//! its own (seen here), which would make the peer comparison fail. It returns the screen as `0x00RRGGBB`
//! pixels, and writes PNGs for a person to look at.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

/// A captured screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Screen {
    pub width: u32,
    pub height: u32,
    /// Row-major `0x00RRGGBB`.
    pub pixels: Vec<u32>,
}

impl Screen {
    pub fn at(&self, x: u32, y: u32) -> u32 {
        self.pixels[(y * self.width + x) as usize]
    }

    /// Write as an 8-bit RGB PNG.
    pub fn write_png(&self, path: &Path) {
        let f = std::fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut enc = png::Encoder::new(std::io::BufWriter::new(f), self.width, self.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().expect("png header");
        let rgb: Vec<u8> = self
            .pixels
            .iter()
            .flat_map(|p| [(p >> 16) as u8, (p >> 8) as u8, *p as u8])
            .collect();
        w.write_image_data(&rgb).expect("png data");
    }
}

pub struct RfbClient {
    s: TcpStream,
    pub width: u32,
    pub height: u32,
    pub name: String,
    pixels: Vec<u32>,
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl RfbClient {
    /// Connect to `addr` (`127.0.0.1:5901`), do the handshake, set the
    /// pixel format and encodings. Every read times out after 30 s.
    pub fn connect(addr: &str) -> std::io::Result<Self> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut c = Self {
            s,
            width: 0,
            height: 0,
            name: String::new(),
            pixels: Vec::new(),
        };
        let v = c.read_n(12)?;
        if !v.starts_with(b"RFB 003.") {
            return Err(std::io::Error::other(format!("not RFB: {v:?}")));
        }
        c.s.write_all(b"RFB 003.008\n")?;
        let n = c.read_n(1)?[0] as usize;
        if n == 0 {
            let len = be32(&c.read_n(4)?) as usize;
            let why = c.read_n(len)?;
            return Err(std::io::Error::other(
                String::from_utf8_lossy(&why).into_owned(),
            ));
        }
        let types = c.read_n(n)?;
        if !types.contains(&1) {
            return Err(std::io::Error::other(format!(
                "no None security: {types:?}"
            )));
        }
        c.s.write_all(&[1])?;
        if be32(&c.read_n(4)?) != 0 {
            return Err(std::io::Error::other("security handshake failed"));
        }
        c.s.write_all(&[1])?; // shared
        let init = c.read_n(24)?;
        c.width = u32::from(be16(&init[0..]));
        c.height = u32::from(be16(&init[2..]));
        let nlen = be32(&init[20..]) as usize;
        c.name = String::from_utf8_lossy(&c.read_n(nlen)?).into_owned();
        c.pixels = vec![0; (c.width * c.height) as usize];
        // SetPixelFormat: 32 bpp, depth 24, little-endian, true colour,
        // max 255 each, shifts r=0 g=8 b=16: each pixel arrives as
        // RR GG BB 00 on the wire, unlike the servers' BB GG RR 00.
        let mut m = vec![
            0u8, 0, 0, 0, 32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 0, 8, 16, 0, 0, 0,
        ];
        // SetEncodings: Raw, DesktopSize.
        m.extend_from_slice(&[2, 0, 0, 2]);
        m.extend_from_slice(&0i32.to_be_bytes());
        m.extend_from_slice(&(-223i32).to_be_bytes());
        c.s.write_all(&m)?;
        Ok(c)
    }

    fn read_n(&mut self, n: usize) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b)?;
        Ok(b)
    }

    /// Ask for an update (`incremental` or the whole screen).
    pub fn request(&mut self, incremental: bool) -> std::io::Result<()> {
        let mut m = vec![3u8, incremental as u8, 0, 0, 0, 0];
        m.extend_from_slice(&(self.width as u16).to_be_bytes());
        m.extend_from_slice(&(self.height as u16).to_be_bytes());
        self.s.write_all(&m)
    }

    /// Read one FramebufferUpdate (skipping other server messages) and
    /// apply it; returns the number of pixel rectangles it carried.
    pub fn read_update(&mut self) -> std::io::Result<usize> {
        loop {
            let t = self.read_n(1)?[0];
            match t {
                0 => break,
                // Bell.
                2 => continue,
                // ServerCutText.
                3 => {
                    let h = self.read_n(7)?;
                    let len = be32(&h[3..]) as usize;
                    self.read_n(len)?;
                }
                _ => return Err(std::io::Error::other(format!("server message {t}"))),
            }
        }
        let h = self.read_n(3)?;
        let n = be16(&h[1..]);
        let mut rects = 0;
        for _ in 0..n {
            let r = self.read_n(12)?;
            let (x, y, w, h) = (
                u32::from(be16(&r[0..])),
                u32::from(be16(&r[2..])),
                u32::from(be16(&r[4..])),
                u32::from(be16(&r[6..])),
            );
            match be32(&r[8..]) as i32 {
                0 => {
                    if x + w > self.width || y + h > self.height {
                        return Err(std::io::Error::other("rectangle outside the screen"));
                    }
                    let data = self.read_n((w * h * 4) as usize)?;
                    for row in 0..h {
                        for col in 0..w {
                            let i = ((row * w + col) * 4) as usize;
                            let [r, g, b] = [data[i], data[i + 1], data[i + 2]];
                            self.pixels[((y + row) * self.width + x + col) as usize] =
                                u32::from(r) << 16 | u32::from(g) << 8 | u32::from(b);
                        }
                    }
                    rects += 1;
                }
                -223 => {
                    self.width = w;
                    self.height = h;
                    self.pixels = vec![0; (w * h) as usize];
                }
                e => return Err(std::io::Error::other(format!("encoding {e}"))),
            }
        }
        Ok(rects)
    }

    /// The whole screen as it is now: a full (non-incremental) request
    /// and its answer.
    pub fn capture(&mut self) -> std::io::Result<Screen> {
        self.request(false)?;
        while self.read_update()? == 0 {
            // A DesktopSize-only update: ask again at the new size.
            self.request(false)?;
        }
        Ok(self.screen())
    }

    /// Capture, then follow incremental updates until `want` holds for
    /// the screen or `limit` passes (a server such as QEMU's refreshes
    /// on its own timer, so the first answer may predate the guest's
    /// last flush). Returns the last screen either way.
    pub fn capture_until(
        &mut self,
        want: impl Fn(&Screen) -> bool,
        limit: Duration,
    ) -> std::io::Result<Screen> {
        let end = std::time::Instant::now() + limit;
        let mut s = self.capture()?;
        while !want(&s) {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            self.s.set_read_timeout(Some(left))?;
            self.request(true)?;
            match self.read_update() {
                Ok(_) => s = self.screen(),
                // Nothing changed before the limit: the screen stays.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
        }
        Ok(s)
    }

    /// What the client holds now.
    pub fn screen(&self) -> Screen {
        Screen {
            width: self.width,
            height: self.height,
            pixels: self.pixels.clone(),
        }
    }

    /// Send a key press and release (X11 keysym).
    pub fn key(&mut self, keysym: u32) -> std::io::Result<()> {
        for down in [1u8, 0] {
            let mut m = vec![4u8, down, 0, 0];
            m.extend_from_slice(&keysym.to_be_bytes());
            self.s.write_all(&m)?;
        }
        Ok(())
    }

    /// The raw stream (for tests that misbehave on purpose).
    pub fn stream(&mut self) -> &mut TcpStream {
        &mut self.s
    }
}

/// A VNC display number whose port (5900 + N) was free a moment ago:
/// the kernel's pick of an ephemeral port, which lies above 5900.
pub fn free_display() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    let port = l.local_addr().expect("local address").port();
    assert!(port > 5900, "ephemeral port {port} below 5900");
    port - 5900
}
