//! The current screen as a PNG file (8-bit RGB), for the QMP `screendump`
//! command and tests. Encoding is the `png` crate's; only the conversion
//! from the surface's BGRX pixels is here.

use std::io::BufWriter;
use std::path::Path;

use super::Surface;

#[derive(Debug, thiserror::Error)]
pub enum ScreendumpError {
    #[error("screendump: creating {path}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("screendump: writing {path}")]
    Encode {
        path: String,
        #[source]
        source: png::EncodingError,
    },
}

/// Write `width` x `height` BGRX pixels as an RGB PNG to `out`.
pub fn write_png<W: std::io::Write>(
    out: W,
    width: u32,
    height: u32,
    pixels: &[u32],
) -> Result<(), png::EncodingError> {
    let mut enc = png::Encoder::new(out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header()?;
    let rgb: Vec<u8> = pixels
        .iter()
        .flat_map(|p| {
            let [b, g, r, _] = p.to_le_bytes();
            [r, g, b]
        })
        .collect();
    w.write_image_data(&rgb)?;
    w.finish()
}

/// Write what `surface` shows now to `path` (created or truncated). The
/// pixels are copied out first so the device is never held up by the
/// file system.
pub fn screendump(surface: &Surface, path: &Path) -> Result<(), ScreendumpError> {
    let (w, h, px) = {
        let f = surface.lock();
        (f.width(), f.height(), f.pixels().to_vec())
    };
    let name = path.display().to_string();
    let file = std::fs::File::create(path).map_err(|source| ScreendumpError::Create {
        path: name.clone(),
        source,
    })?;
    write_png(BufWriter::new(file), w, h, &px)
        .map_err(|source| ScreendumpError::Encode { path: name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png_that_decodes_to_the_pixels() {
        let s = Surface::new().unwrap();
        s.lock().resize(3, 2);
        s.blit(0, 0, 3, 1, &[1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9, 0], 12);
        let dir = std::env::temp_dir().join(format!("cm-screendump-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.png");
        screendump(&s, &p).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (3, 2));
        assert_eq!(&buf[..9], &[3, 2, 1, 6, 5, 4, 9, 8, 7]);
        assert!(screendump(&s, &dir.join("no/such/dir.png")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
