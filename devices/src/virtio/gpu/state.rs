//! virtio-gpu 2D state: resources (host copies of the guest's images),
//! their backing pages in guest RAM, the one scanout, the cursor, and
//! the command handlers. Every value from the guest is checked here and
//! a bad one answers that request with an error response
//! (`RESP_ERR_*`); nothing the guest sends can panic the VMM, make it
//! touch memory outside guest RAM, or grow host memory past
//! `max_hostmem` (resource images plus backing lists count against it,
//! as QEMU's `max_hostmem`).

use std::collections::HashMap;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::edid::edid;
use super::protocol::*;
use crate::display::{Rect, Surface, MAX_DIM};

/// Backing entries one ATTACH_BACKING may carry (QEMU's limit).
pub const MAX_BACKING_ENTRIES: u32 = 16384;
/// Resources alive at once, whatever their size.
pub const MAX_RESOURCES: usize = 16384;
/// Host bytes a resource costs beyond its pixels (for the cap).
const RESOURCE_OVERHEAD: u64 = 256;
/// Bytes a backing entry costs on the host.
const ENTRY_COST: u64 = 16;
/// Guest errors logged per device before going quiet.
const MAX_LOGGED: u32 = 8;

struct Resource {
    width: u32,
    height: u32,
    /// Byte offsets of red, green and blue in a pixel.
    layout: [usize; 3],
    /// `width * height * 4` bytes, rows of `width * 4`.
    data: Vec<u8>,
    /// (guest address, length) pieces, and each piece's offset.
    backing: Vec<(GuestAddress, u32)>,
    starts: Vec<u64>,
    backing_len: u64,
}

impl Resource {
    fn cost(&self) -> u64 {
        self.data.len() as u64 + RESOURCE_OVERHEAD + self.backing.len() as u64 * ENTRY_COST
    }

    /// Fill `dst` from the backing at byte `offset`; false if the range
    /// is past the backing's end or a piece cannot be read.
    fn read_backing(&self, mem: &GuestMemoryMmap, offset: u64, dst: &mut [u8]) -> bool {
        let end = offset.checked_add(dst.len() as u64);
        if end.is_none_or(|e| e > self.backing_len) {
            return false;
        }
        let mut i = self.starts.partition_point(|&s| s <= offset) - 1;
        let mut off = offset - self.starts[i];
        let mut done = 0;
        while done < dst.len() {
            let (addr, len) = self.backing[i];
            let n = ((u64::from(len) - off) as usize).min(dst.len() - done);
            let Some(a) = addr.0.checked_add(off) else {
                return false;
            };
            if mem
                .read_slice(&mut dst[done..done + n], GuestAddress(a))
                .is_err()
            {
                return false;
            }
            done += n;
            i += 1;
            off = 0;
        }
        true
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    pub resource: u32,
    pub hot: (u32, u32),
    pub pos: (u32, u32),
}

/// A failed request: the response type and why, for the log.
struct Fail(u32, &'static str);

type Answer = Result<Vec<u8>, Fail>;

fn short(_: Short) -> Fail {
    Fail(RESP_ERR_UNSPEC, "request shorter than its command")
}

/// See the module doc.
pub struct GpuState {
    name: String,
    xres: u32,
    yres: u32,
    edid: bool,
    max_hostmem: u64,
    hostmem: u64,
    resources: HashMap<u32, Resource>,
    scanout: Option<(u32, GpuRect)>,
    pub cursor: Cursor,
    surface: Arc<Surface>,
    logged: u32,
}

impl GpuState {
    pub fn new(
        name: String,
        (xres, yres): (u32, u32),
        max_hostmem: u64,
        edid: bool,
        surface: Arc<Surface>,
    ) -> Self {
        Self {
            name,
            xres,
            yres,
            edid,
            max_hostmem,
            hostmem: 0,
            resources: HashMap::new(),
            scanout: None,
            cursor: Cursor::default(),
            surface,
            logged: 0,
        }
    }

    /// Host bytes held for the guest now.
    pub fn hostmem(&self) -> u64 {
        self.hostmem
    }

    pub fn resource_count(&self) -> usize {
        self.resources.len()
    }

    fn note(&mut self, kind: u32, f: &Fail) {
        if self.logged < MAX_LOGGED {
            self.logged += 1;
            log::warn!(
                "{}: command {kind:#x} refused ({:#x}): {}",
                self.name,
                f.0,
                f.1
            );
        }
    }

    /// Handle one control-queue request; the response bytes.
    pub fn control(&mut self, mem: &GuestMemoryMmap, req: &[u8]) -> Vec<u8> {
        let mut r = Reader::new(req);
        let hdr = match Hdr::read(&mut r) {
            Ok(h) => h,
            Err(_) => {
                let f = Fail(RESP_ERR_UNSPEC, "request shorter than its header");
                self.note(0, &f);
                return Hdr::default().response(f.0);
            }
        };
        let res = match hdr.kind {
            CMD_GET_DISPLAY_INFO => Ok(self.display_info(&hdr)),
            CMD_GET_EDID => self.get_edid(&hdr, &mut r),
            CMD_RESOURCE_CREATE_2D => self.create_2d(&mut r),
            CMD_RESOURCE_UNREF => self.unref(&mut r),
            CMD_RESOURCE_ATTACH_BACKING => self.attach_backing(mem, &mut r),
            CMD_RESOURCE_DETACH_BACKING => self.detach_backing(&mut r),
            CMD_SET_SCANOUT => self.set_scanout(&mut r),
            CMD_TRANSFER_TO_HOST_2D => self.transfer(mem, &mut r),
            CMD_RESOURCE_FLUSH => self.flush(&mut r),
            CMD_GET_CAPSET_INFO | CMD_GET_CAPSET => {
                Err(Fail(RESP_ERR_UNSPEC, "no 3D capability sets"))
            }
            _ => Err(Fail(RESP_ERR_UNSPEC, "unknown command")),
        };
        match res {
            Ok(body) if body.is_empty() => hdr.response(RESP_OK_NODATA),
            Ok(body) => body,
            Err(f) => {
                self.note(hdr.kind, &f);
                hdr.response(f.0)
            }
        }
    }

    /// Handle one cursor-queue request (no response is read by drivers).
    pub fn cursor_cmd(&mut self, req: &[u8]) {
        let mut r = Reader::new(req);
        let parsed = (|| -> Result<(Hdr, [u32; 7]), Short> {
            let h = Hdr::read(&mut r)?;
            let mut v = [0u32; 7];
            for x in &mut v {
                *x = r.u32()?;
            }
            Ok((h, v))
        })();
        let Ok((hdr, [scanout, x, y, _pad, resource, hot_x, hot_y])) = parsed else {
            let f = Fail(RESP_ERR_UNSPEC, "short cursor request");
            self.note(0, &f);
            return;
        };
        if scanout != 0 {
            self.note(
                hdr.kind,
                &Fail(RESP_ERR_INVALID_SCANOUT_ID, "cursor scanout"),
            );
            return;
        }
        match hdr.kind {
            CMD_UPDATE_CURSOR => {
                if resource != 0 && !self.resources.contains_key(&resource) {
                    let f = Fail(RESP_ERR_INVALID_RESOURCE_ID, "cursor resource");
                    self.note(hdr.kind, &f);
                    return;
                }
                self.cursor = Cursor {
                    resource,
                    hot: (hot_x, hot_y),
                    pos: (x, y),
                };
            }
            CMD_MOVE_CURSOR => self.cursor.pos = (x, y),
            k => self.note(k, &Fail(RESP_ERR_UNSPEC, "unknown cursor command")),
        }
    }

    fn display_info(&self, hdr: &Hdr) -> Vec<u8> {
        let mut v = hdr.response(RESP_OK_DISPLAY_INFO);
        for i in 0..MAX_SCANOUTS {
            let (w, h, en) = if i == 0 {
                (self.xres, self.yres, 1u32)
            } else {
                (0, 0, 0)
            };
            for x in [0, 0, w, h, en, 0] {
                v.extend_from_slice(&u32::to_le_bytes(x));
            }
        }
        v
    }

    fn get_edid(&self, hdr: &Hdr, r: &mut Reader) -> Answer {
        let scanout = r.u32().map_err(short)?;
        if !self.edid {
            return Err(Fail(RESP_ERR_UNSPEC, "GET_EDID without VIRTIO_GPU_F_EDID"));
        }
        if scanout != 0 {
            return Err(Fail(
                RESP_ERR_INVALID_SCANOUT_ID,
                "EDID of a scanout that is not there",
            ));
        }
        let e = edid(self.xres, self.yres);
        let mut v = hdr.response(RESP_OK_EDID);
        v.extend_from_slice(&(e.len() as u32).to_le_bytes());
        v.extend_from_slice(&[0; 4]);
        v.extend_from_slice(&e);
        v.resize(HDR_LEN + 8 + 1024, 0);
        Ok(v)
    }

    fn create_2d(&mut self, r: &mut Reader) -> Answer {
        let (id, format, width, height) =
            (|| Ok((r.u32()?, r.u32()?, r.u32()?, r.u32()?)))().map_err(short)?;
        if id == 0 || self.resources.contains_key(&id) {
            return Err(Fail(
                RESP_ERR_INVALID_RESOURCE_ID,
                "resource id 0 or in use",
            ));
        }
        let layout = format_layout(format)
            .ok_or(Fail(RESP_ERR_INVALID_PARAMETER, "unsupported pixel format"))?;
        if width == 0 || height == 0 || width > MAX_DIM || height > MAX_DIM {
            return Err(Fail(
                RESP_ERR_INVALID_PARAMETER,
                "resource size out of range",
            ));
        }
        let bytes = u64::from(width) * u64::from(height) * 4;
        if self.resources.len() >= MAX_RESOURCES
            || self.hostmem + bytes + RESOURCE_OVERHEAD > self.max_hostmem
        {
            return Err(Fail(RESP_ERR_OUT_OF_MEMORY, "over max_hostmem"));
        }
        let res = Resource {
            width,
            height,
            layout,
            // Zeroed pages from the allocator: untouched ones cost nothing.
            data: vec![0; bytes as usize],
            backing: Vec::new(),
            starts: Vec::new(),
            backing_len: 0,
        };
        self.hostmem += res.cost();
        self.resources.insert(id, res);
        Ok(Vec::new())
    }

    fn unref(&mut self, r: &mut Reader) -> Answer {
        let id = r.u32().map_err(short)?;
        let res = self
            .resources
            .remove(&id)
            .ok_or(Fail(RESP_ERR_INVALID_RESOURCE_ID, "unknown resource"))?;
        self.hostmem -= res.cost();
        if self.scanout.is_some_and(|(s, _)| s == id) {
            self.scanout = None;
        }
        if self.cursor.resource == id {
            self.cursor.resource = 0;
        }
        Ok(Vec::new())
    }

    fn attach_backing(&mut self, mem: &GuestMemoryMmap, r: &mut Reader) -> Answer {
        let id = r.u32().map_err(short)?;
        let n = r.u32().map_err(short)?;
        if n == 0 || n > MAX_BACKING_ENTRIES {
            return Err(Fail(RESP_ERR_INVALID_PARAMETER, "backing entry count"));
        }
        if r.left() < n as usize * 16 {
            return Err(short(Short));
        }
        let res = self
            .resources
            .get(&id)
            .ok_or(Fail(RESP_ERR_INVALID_RESOURCE_ID, "unknown resource"))?;
        if !res.backing.is_empty() {
            return Err(Fail(RESP_ERR_UNSPEC, "resource already has backing"));
        }
        let cost = u64::from(n) * ENTRY_COST;
        if self.hostmem + cost > self.max_hostmem {
            return Err(Fail(RESP_ERR_OUT_OF_MEMORY, "over max_hostmem"));
        }
        let mut backing = Vec::with_capacity(n as usize);
        let mut starts = Vec::with_capacity(n as usize);
        let mut total = 0u64;
        for _ in 0..n {
            let addr = r.u64().map_err(short)?;
            let len = r.u32().map_err(short)?;
            r.u32().map_err(short)?;
            if len == 0 || !mem.check_range(GuestAddress(addr), len as usize) {
                return Err(Fail(RESP_ERR_UNSPEC, "backing outside guest RAM"));
            }
            backing.push((GuestAddress(addr), len));
            starts.push(total);
            total += u64::from(len);
        }
        let res = self.resources.get_mut(&id).expect("looked up above");
        res.backing = backing;
        res.starts = starts;
        res.backing_len = total;
        self.hostmem += cost;
        Ok(Vec::new())
    }

    fn detach_backing(&mut self, r: &mut Reader) -> Answer {
        let id = r.u32().map_err(short)?;
        let res = self
            .resources
            .get_mut(&id)
            .ok_or(Fail(RESP_ERR_INVALID_RESOURCE_ID, "unknown resource"))?;
        if res.backing.is_empty() {
            return Err(Fail(RESP_ERR_UNSPEC, "resource has no backing"));
        }
        self.hostmem -= res.backing.len() as u64 * ENTRY_COST;
        res.backing = Vec::new();
        res.starts = Vec::new();
        res.backing_len = 0;
        Ok(Vec::new())
    }

    fn set_scanout(&mut self, r: &mut Reader) -> Answer {
        let rect = r.rect().map_err(short)?;
        let scanout = r.u32().map_err(short)?;
        let id = r.u32().map_err(short)?;
        if scanout != 0 {
            return Err(Fail(RESP_ERR_INVALID_SCANOUT_ID, "no such scanout"));
        }
        if id == 0 {
            self.scanout = None;
            return Ok(Vec::new());
        }
        let res = self
            .resources
            .get(&id)
            .ok_or(Fail(RESP_ERR_INVALID_RESOURCE_ID, "unknown resource"))?;
        if rect.w == 0 || rect.h == 0 || !rect.within(res.width, res.height) {
            return Err(Fail(
                RESP_ERR_INVALID_PARAMETER,
                "scanout rectangle outside the resource",
            ));
        }
        {
            let mut f = self.surface.lock();
            if (f.width(), f.height()) != (rect.w, rect.h) {
                f.resize(rect.w, rect.h);
            }
        }
        self.scanout = Some((id, rect));
        self.show(id, rect);
        Ok(Vec::new())
    }

    fn transfer(&mut self, mem: &GuestMemoryMmap, r: &mut Reader) -> Answer {
        let rect = r.rect().map_err(short)?;
        let offset = r.u64().map_err(short)?;
        let id = r.u32().map_err(short)?;
        let res = self
            .resources
            .get_mut(&id)
            .ok_or(Fail(RESP_ERR_INVALID_RESOURCE_ID, "unknown resource"))?;
        if res.backing.is_empty() {
            return Err(Fail(
                RESP_ERR_UNSPEC,
                "transfer to a resource without backing",
            ));
        }
        if !rect.within(res.width, res.height) {
            return Err(Fail(
                RESP_ERR_INVALID_PARAMETER,
                "transfer rectangle outside the resource",
            ));
        }
        if rect.w == 0 || rect.h == 0 {
            return Ok(Vec::new());
        }
        // As QEMU: source rows are `stride` apart from `offset`.
        let stride = u64::from(res.width) * 4;
        let row = u64::from(rect.w) * 4;
        let last = offset
            .checked_add(stride * u64::from(rect.h - 1))
            .and_then(|o| o.checked_add(row));
        if last.is_none_or(|l| l > res.backing_len) {
            return Err(Fail(
                RESP_ERR_INVALID_PARAMETER,
                "transfer past the backing's end",
            ));
        }
        let mut data = std::mem::take(&mut res.data);
        let mut ok = true;
        for h in 0..u64::from(rect.h) {
            let src = offset + stride * h;
            let dst = ((u64::from(rect.y) + h) * stride + u64::from(rect.x) * 4) as usize;
            if !res.read_backing(mem, src, &mut data[dst..dst + row as usize]) {
                ok = false;
                break;
            }
        }
        res.data = data;
        if !ok {
            return Err(Fail(RESP_ERR_UNSPEC, "backing unreadable"));
        }
        Ok(Vec::new())
    }

    fn flush(&mut self, r: &mut Reader) -> Answer {
        let rect = r.rect().map_err(short)?;
        let id = r.u32().map_err(short)?;
        let res = self
            .resources
            .get(&id)
            .ok_or(Fail(RESP_ERR_INVALID_RESOURCE_ID, "unknown resource"))?;
        if !rect.within(res.width, res.height) {
            return Err(Fail(
                RESP_ERR_INVALID_PARAMETER,
                "flush rectangle outside the resource",
            ));
        }
        if let Some((sid, srect)) = self.scanout {
            if sid == id {
                self.show(id, rect.intersect(&srect));
            }
        }
        Ok(Vec::new())
    }

    /// Copy `r` (resource coordinates) of resource `id` to the surface,
    /// placed relative to the scanout rectangle.
    fn show(&self, id: u32, r: GpuRect) {
        let (Some(res), Some((_, s))) = (self.resources.get(&id), self.scanout) else {
            return;
        };
        let r = r.intersect(&s);
        if r.w == 0 || r.h == 0 {
            return;
        }
        let mut f = self.surface.lock();
        let fw = f.width();
        let target = Rect::new(r.x - s.x, r.y - s.y, r.w, r.h).clip(fw, f.height());
        let px = f.pixels_mut();
        let [ri, gi, bi] = res.layout;
        let (w, stride) = (target.w as usize, res.width as usize * 4);
        for dy in 0..target.h as usize {
            let d = (target.y as usize + dy) * fw as usize + target.x as usize;
            let s = (r.y as usize + dy) * stride + r.x as usize * 4;
            let src = &res.data[s..s + w * 4];
            for (out, p) in px[d..d + w].iter_mut().zip(src.chunks_exact(4)) {
                *out = u32::from(p[ri]) << 16 | u32::from(p[gi]) << 8 | u32::from(p[bi]);
            }
        }
        f.damage(target);
        drop(f);
        self.surface.changed();
    }
}
