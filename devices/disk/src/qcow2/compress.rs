//! Compressed clusters: inflating the raw deflate stream qemu writes into one
//! full cluster. Read-only: Casemate never writes compressed clusters, and a
//! write to one reallocates it uncompressed.

use flate2::{Decompress, FlushDecompress};

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
    use flate2::{Compress, Compression, FlushCompress};

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
}
