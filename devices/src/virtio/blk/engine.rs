//! The block I/O engine: a small pool of threads (`cm-<dev>-ioN`) that run
//! parsed requests against the `DiskImage` in parallel, so that a queue
//! depth of 32 is served concurrently, then post completions back to the
//! worker through an eventfd.
//!
//! A departure from "devices never spawn threads": the pool is this
//! backend's asynchronous engine (io_uring would need no threads). It is
//! created at activation and joined when the worker is dropped, so a reset
//! returns only after every in-flight request has finished.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use casemate_disk::DiskImage;
use vm_memory::{Bytes, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::request::*;

/// How writes reach stable storage (`-drive cache=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// Host page cache; FLUSH makes data durable.
    Writeback,
    /// Like writeback but bypassing the page cache (O_DIRECT at open).
    None,
    /// Every write is durable before it completes.
    Writethrough,
    /// FLUSH is a no-op: fast, and unsafe across host crashes.
    Unsafe,
}

/// The largest request the engine bounces through host memory; the device
/// advertises limits (seg_max x size_max) that keep drivers below it.
pub const MAX_REQUEST: u64 = 32 << 20;

/// What a request needs from the device.
pub struct Executor {
    pub disk: Arc<dyn DiskImage>,
    pub mem: GuestMemoryMmap,
    pub cache: CacheMode,
    pub read_only: bool,
    pub id: [u8; ID_LEN],
    pub name: String,
}

impl Executor {
    /// Run `req`; returns the status code and the bytes written to the guest.
    pub fn run(&self, req: &Request) -> (u8, u32) {
        match self.execute(req) {
            Ok(written) => (S_OK, written),
            Err(why) => {
                log::debug!(
                    "{}: request type {} at sector {} failed: {why}",
                    self.name,
                    req.kind,
                    req.sector
                );
                (S_IOERR, 0)
            }
        }
    }

    fn execute(&self, req: &Request) -> Result<u32, String> {
        let offset = req.sector.wrapping_mul(SECTOR);
        let writes_disk = matches!(req.kind, T_OUT | T_DISCARD | T_WRITE_ZEROES);
        if writes_disk && self.read_only {
            return Err("device is read-only".into());
        }
        if req.data_len > MAX_REQUEST {
            return Err(format!(
                "{} bytes exceed the {MAX_REQUEST}-byte request limit",
                req.data_len
            ));
        }
        match req.kind {
            T_IN => {
                let mut buf = vec![0u8; req.data_len as usize];
                self.disk
                    .read_at(&mut buf, offset)
                    .map_err(|e| e.to_string())?;
                self.scatter(req, &buf)?;
                Ok(req.data_len as u32)
            }
            T_OUT => {
                let buf = self.gather(req)?;
                self.disk
                    .write_at(&buf, offset)
                    .map_err(|e| e.to_string())?;
                if self.cache == CacheMode::Writethrough {
                    self.disk.flush().map_err(|e| e.to_string())?;
                }
                Ok(0)
            }
            T_FLUSH if self.cache == CacheMode::Unsafe => Ok(0),
            T_FLUSH => self.disk.flush().map(|_| 0).map_err(|e| e.to_string()),
            T_GET_ID => {
                let n = (req.data_len as usize).min(ID_LEN);
                self.scatter(req, &self.id[..n])?;
                Ok(n as u32)
            }
            T_DISCARD | T_WRITE_ZEROES => {
                let segs = self.gather(req)?;
                for seg in segs.chunks_exact(SEGMENT_LEN as usize) {
                    let sector = u64::from_le_bytes(seg[0..8].try_into().unwrap_or_default());
                    let count = u64::from(u32::from_le_bytes(
                        seg[8..12].try_into().unwrap_or_default(),
                    ));
                    let start = sector
                        .checked_mul(SECTOR)
                        .ok_or("segment sector overflows")?;
                    let len = count * SECTOR;
                    let end = start.checked_add(len).ok_or("segment overflows")?;
                    if end > self.disk.virtual_size() {
                        return Err("segment runs past the end of the disk".into());
                    }
                    let r = if req.kind == T_DISCARD {
                        self.disk.discard(start, len)
                    } else {
                        self.disk.write_zeroes(start, len)
                    };
                    r.map_err(|e| e.to_string())?;
                }
                if self.cache == CacheMode::Writethrough {
                    self.disk.flush().map_err(|e| e.to_string())?;
                }
                Ok(0)
            }
            k => Err(format!("type {k} reached the engine")),
        }
    }

    fn gather(&self, req: &Request) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; req.data_len as usize];
        let mut at = 0usize;
        for b in &req.data {
            let end = at + b.len as usize;
            self.mem
                .read_slice(&mut buf[at..end], b.addr)
                .map_err(|e| e.to_string())?;
            at = end;
        }
        Ok(buf)
    }

    fn scatter(&self, req: &Request, mut data: &[u8]) -> Result<(), String> {
        for b in &req.data {
            if data.is_empty() {
                break;
            }
            let n = data.len().min(b.len as usize);
            self.mem
                .write_slice(&data[..n], b.addr)
                .map_err(|e| e.to_string())?;
            data = &data[n..];
        }
        Ok(())
    }
}

/// A request handed to the pool, and its completion.
pub struct Job {
    pub slot: usize,
    pub head: u16,
    pub req: Request,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    pub slot: usize,
    pub head: u16,
    pub len: u32,
}

pub struct Engine {
    tx: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    done: Arc<Mutex<Vec<Done>>>,
    pub done_evt: Arc<EventFd>,
}

impl Engine {
    pub fn new(exec: Arc<Executor>, threads: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let done = Arc::new(Mutex::new(Vec::new()));
        let done_evt = Arc::new(EventFd::new(EFD_NONBLOCK)?);
        let mut handles = Vec::new();
        for n in 0..threads.max(1) {
            let (rx, done, evt, exec) = (rx.clone(), done.clone(), done_evt.clone(), exec.clone());
            let h = std::thread::Builder::new()
                .name(format!("cm-{}-io{n}", exec.name))
                .spawn(move || serve(&rx, &exec, &done, &evt))?;
            handles.push(h);
        }
        Ok(Self {
            tx: Some(tx),
            threads: handles,
            done,
            done_evt,
        })
    }

    pub fn submit(&self, job: Job) {
        if let Some(tx) = &self.tx {
            // Send fails only once every pool thread is gone, i.e. never
            // while the engine lives.
            let _ = tx.send(job);
        }
    }

    pub fn take_done(&self) -> Vec<Done> {
        std::mem::take(&mut *self.done.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

fn serve(rx: &Mutex<Receiver<Job>>, exec: &Executor, done: &Mutex<Vec<Done>>, evt: &EventFd) {
    loop {
        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(j) => j,
            Err(_) => return,
        };
        let (status, written) = exec.run(&job.req);
        let len = match exec.mem.write_obj(status, job.req.status) {
            Ok(()) => written + 1,
            Err(_) => 0,
        };
        done.lock().unwrap_or_else(|p| p.into_inner()).push(Done {
            slot: job.slot,
            head: job.head,
            len,
        });
        let _ = evt.write(1);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
