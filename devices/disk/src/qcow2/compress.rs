//! Compressed clusters: inflating the raw deflate stream qemu writes into one
//! full cluster, and deflating one the way qemu does (`convert -c`). A guest
//! write to a compressed cluster reallocates it uncompressed.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

/// qemu's deflate window (`deflateInit2(..., -12, ...)` in qcow2-threads.c):
/// qemu inflates with the same 4 KiB window, so a stream that reaches
/// further back would not decompress there.
const WINDOW_BITS: u8 = 12;

/// Deflates one full cluster as raw deflate with qemu's window; `None` when
/// the result is not smaller than the cluster (qemu then stores it as is).
pub fn deflate_cluster(data: &[u8]) -> Option<Vec<u8>> {
    let mut c = Compress::new_with_window_bits(Compression::default(), false, WINDOW_BITS);
    let mut out = vec![0u8; data.len()];
    match c.compress(data, &mut out, FlushCompress::Finish) {
        Ok(flate2::Status::StreamEnd) => {
            out.truncate(c.total_out() as usize);
            (out.len() < data.len()).then_some(out)
        }
        _ => None,
    }
}

use super::QcowError;

/// Inflates `data` (raw deflate, no zlib header) into exactly `cluster_size` bytes.
pub fn inflate_cluster(data: &[u8], cluster_size: usize, host: u64) -> Result<Vec<u8>, QcowError> {
    let mut out = vec![0u8; cluster_size];
    let mut d = Decompress::new(false);
    let bad = QcowError::BadCompressed { offset: host };
    // The stream may be followed by padding; stopping at a full cluster is fine.
    d.decompress(data, &mut out, FlushDecompress::Finish)
        .map_err(|_| bad.clone())?;
    if d.total_out() != cluster_size as u64 {
        return Err(bad);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflates_raw_deflate_and_rejects_garbage() {
        let src: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let mut c = Compress::new(Compression::default(), false);
        let mut z = vec![0u8; 8192];
        c.compress(&src, &mut z, FlushCompress::Finish).unwrap();
        z.truncate(c.total_out() as usize);
        z.extend_from_slice(&[0u8; 100]);
        assert_eq!(inflate_cluster(&z, 4096, 0).unwrap(), src);
        assert!(inflate_cluster(&[0xff; 64], 4096, 0).is_err());
        assert!(inflate_cluster(&z[..10], 4096, 0).is_err());
    }

    #[test]
    fn deflate_round_trips_and_gives_up_on_noise() {
        // Repeats 8 KiB apart: only a window over 4 KiB could use them.
        let src: Vec<u8> = (0..65536u32).map(|i| (i % 8191 % 253) as u8).collect();
        let z = deflate_cluster(&src).expect("compressible");
        assert!(z.len() < src.len());
        assert_eq!(inflate_cluster(&z, src.len(), 0).unwrap(), src);
        let mut x = 0x12345678u32;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert_eq!(deflate_cluster(&noise), None);
    }
}
