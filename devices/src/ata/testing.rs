//! An in-memory `DiskImage` for the ATA tests.

use std::sync::{Arc, Mutex};

use casemate_disk::{DiskError, DiskImage, Format};

#[derive(Debug)]
pub struct MemDisk {
    pub data: Mutex<Vec<u8>>,
    pub read_only: bool,
}

pub fn mem_disk(size: u64) -> Arc<MemDisk> {
    Arc::new(MemDisk {
        data: Mutex::new((0..size).map(|i| (i / 512) as u8 ^ (i as u8)).collect()),
        read_only: false,
    })
}

impl MemDisk {
    pub fn bytes(&self, off: u64, len: usize) -> Vec<u8> {
        self.data.lock().unwrap()[off as usize..off as usize + len].to_vec()
    }
}

fn range(off: u64, len: usize, size: usize) -> Result<std::ops::Range<usize>, DiskError> {
    let end = off as usize + len;
    if end > size {
        return Err(DiskError::Unsupported {
            what: "access past the end",
            format: "mem",
        });
    }
    Ok(off as usize..end)
}

impl DiskImage for MemDisk {
    fn virtual_size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        let d = self.data.lock().unwrap();
        buf.copy_from_slice(&d[range(offset, buf.len(), d.len())?]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        let mut d = self.data.lock().unwrap();
        let r = range(offset, buf.len(), d.len())?;
        d[r].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&self) -> Result<(), DiskError> {
        Ok(())
    }
    fn discard(&self, _offset: u64, _len: u64) -> Result<(), DiskError> {
        Ok(())
    }
    fn write_zeroes(&self, _offset: u64, _len: u64) -> Result<(), DiskError> {
        Ok(())
    }
    fn is_read_only(&self) -> bool {
        self.read_only
    }
    fn format(&self) -> Format {
        Format::Raw
    }
    fn resize(&self, _new_size: u64) -> Result<(), DiskError> {
        Ok(())
    }
}
