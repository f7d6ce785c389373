//! MSI-X: the capability in configuration space, the vector table and the
//! pending-bit array (PBA), and delivery through `MsiVectors`.
//!
//! `MsixState` is shared (behind a mutex) by the vCPU thread, which writes
//! the table through a BAR and the control word through configuration
//! space, and the device's worker thread, which fires vectors. Masking and
//! pending bits live here; the hypervisor only ever sees routes and
//! triggers. Where the table and PBA sit inside a BAR is the owning
//! device's business: it hands over BAR-relative offsets.
//!
//! Routes: while MSI-X is enabled every unmasked vector is routed to its
//! table entry. A masked entry keeps whatever route it had; the route is
//! refreshed when the guest unmasks it (drivers reprogram an entry while
//! it is masked, so this avoids a route update per dword). Disabling MSI-X
//! routes every vector to `None`, so no stale message survives a guest
//! that re-targets interrupts while MSI-X is off.

use std::sync::Arc;

use super::config::{overlaps, PciConfig, PciConfigError};
use super::{MsiMessage, MsiVectors};

pub const MSIX_CAP_ID: u8 = 0x11;
/// The table size field has 11 bits.
pub const MAX_VECTORS: u16 = 2048;
/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;

const CTRL_ENABLE: u16 = 1 << 15;
const CTRL_FUNCTION_MASK: u16 = 1 << 14;
const ENTRY_MASKED: u32 = 1;

/// Where the table and the PBA live: BAR index and offset inside it
/// (8-byte aligned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixLayout {
    pub table_bar: u8,
    pub table_offset: u32,
    pub pba_bar: u8,
    pub pba_offset: u32,
}

/// What happened to a fired vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsixDelivery {
    /// MSI-X is off: the caller signals through INTx instead.
    Disabled,
    /// The vector was triggered.
    Sent,
    /// The vector or the function is masked: its PBA bit is set and it is
    /// delivered on unmask.
    Pending,
    /// No such vector (e.g. virtio's NO_VECTOR, 0xffff): no interrupt.
    NoVector,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    addr: u64,
    data: u32,
    ctrl: u32,
}

impl Entry {
    const RESET: Entry = Entry {
        addr: 0,
        data: 0,
        ctrl: ENTRY_MASKED,
    };

    fn masked(&self) -> bool {
        self.ctrl & ENTRY_MASKED != 0
    }

    fn msg(&self) -> MsiMessage {
        MsiMessage {
            addr: self.addr,
            data: self.data,
        }
    }
}

/// See the module doc.
pub struct MsixState {
    vectors: Arc<dyn MsiVectors>,
    entries: Vec<Entry>,
    pba: Vec<u64>,
    enabled: bool,
    function_masked: bool,
}

impl MsixState {
    /// A table with `vectors.count()` entries (at most `MAX_VECTORS`), all
    /// masked, MSI-X disabled.
    pub fn new(vectors: Arc<dyn MsiVectors>) -> Self {
        let n = vectors.count().min(MAX_VECTORS);
        Self {
            vectors,
            entries: vec![Entry::RESET; n.into()],
            pba: vec![0; usize::from(n).div_ceil(64)],
            enabled: false,
            function_masked: false,
        }
    }

    pub fn table_size(&self) -> u16 {
        // `entries.len()` <= MAX_VECTORS by construction.
        self.entries.len() as u16
    }

    /// Bytes the table occupies.
    pub fn table_len(&self) -> u64 {
        u64::from(self.table_size()) * ENTRY_SIZE
    }

    /// Bytes the PBA occupies (whole qwords).
    pub fn pba_len(&self) -> u64 {
        self.pba.len() as u64 * 8
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn function_masked(&self) -> bool {
        self.function_masked
    }

    /// Apply the capability's Message Control word after a guest write.
    pub fn set_control(&mut self, ctrl: u16) {
        let enable = ctrl & CTRL_ENABLE != 0;
        let fmask = ctrl & CTRL_FUNCTION_MASK != 0;
        if enable != self.enabled {
            self.enabled = enable;
            for v in 0..self.table_size() {
                let e = self.entries[usize::from(v)];
                if !enable {
                    self.route(v, None);
                } else if !e.masked() {
                    self.route(v, Some(e.msg()));
                }
            }
        }
        self.function_masked = fmask;
        for v in 0..self.table_size() {
            self.deliver_pending(v);
        }
    }

    /// Deliver vector `v` (see `MsixDelivery`).
    pub fn fire(&mut self, v: u16) -> std::io::Result<MsixDelivery> {
        if !self.enabled {
            return Ok(MsixDelivery::Disabled);
        }
        let Some(e) = self.entries.get(usize::from(v)) else {
            return Ok(MsixDelivery::NoVector);
        };
        if self.function_masked || e.masked() {
            self.set_pending(v, true);
            return Ok(MsixDelivery::Pending);
        }
        self.vectors.trigger(v)?;
        Ok(MsixDelivery::Sent)
    }

    /// Back to power-on state: disabled, every entry masked and zeroed,
    /// nothing pending.
    pub fn reset(&mut self) {
        self.set_control(0);
        self.entries.fill(Entry::RESET);
        self.pba.fill(0);
    }

    fn route(&self, v: u16, msg: Option<MsiMessage>) {
        if let Err(e) = self.vectors.route(v, msg) {
            log::warn!("MSI-X vector {v}: cannot update its route: {e}");
        }
    }

    fn pending(&self, v: u16) -> bool {
        let (w, b) = (usize::from(v / 64), v % 64);
        self.pba.get(w).is_some_and(|q| q & (1 << b) != 0)
    }

    fn set_pending(&mut self, v: u16, on: bool) {
        let (w, b) = (usize::from(v / 64), v % 64);
        if let Some(q) = self.pba.get_mut(w) {
            if on {
                *q |= 1 << b;
            } else {
                *q &= !(1 << b);
            }
        }
    }

    fn deliver_pending(&mut self, v: u16) {
        let Some(e) = self.entries.get(usize::from(v)) else {
            return;
        };
        if !self.enabled || self.function_masked || e.masked() || !self.pending(v) {
            return;
        }
        self.set_pending(v, false);
        if let Err(e) = self.vectors.trigger(v) {
            log::warn!("MSI-X vector {v}: cannot deliver a pending interrupt: {e}");
        }
    }

    /// Table reads: aligned dwords or qwords; anything else reads zero.
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        for_dwords(offset, data.len(), |i, off| {
            let v = self.table_dword(off);
            if let Some(d) = data.get_mut(i..i + 4) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        });
    }

    /// Table writes: aligned dwords or qwords; anything else is dropped.
    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        for_dwords(offset, data.len(), |i, off| {
            if let Some(Ok(b)) = data.get(i..i + 4).map(<[u8; 4]>::try_from) {
                self.write_table_dword(off, u32::from_le_bytes(b));
            }
        });
    }

    /// PBA reads (same widths as the table); the PBA is read-only.
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        for_dwords(offset, data.len(), |i, off| {
            let q = usize::try_from(off / 8)
                .ok()
                .and_then(|w| self.pba.get(w))
                .copied()
                .unwrap_or(0);
            let v = if off % 8 == 0 {
                q as u32
            } else {
                (q >> 32) as u32
            };
            if let Some(d) = data.get_mut(i..i + 4) {
                d.copy_from_slice(&v.to_le_bytes());
            }
        });
    }

    fn table_dword(&self, off: u64) -> u32 {
        let Some(e) = usize::try_from(off / ENTRY_SIZE)
            .ok()
            .and_then(|i| self.entries.get(i))
        else {
            return 0;
        };
        match off % ENTRY_SIZE {
            0 => e.addr as u32,
            4 => (e.addr >> 32) as u32,
            8 => e.data,
            _ => e.ctrl,
        }
    }

    fn write_table_dword(&mut self, off: u64, v: u32) {
        let Ok(idx) = u16::try_from(off / ENTRY_SIZE) else {
            return;
        };
        let enabled = self.enabled;
        let Some(e) = self.entries.get_mut(usize::from(idx)) else {
            return;
        };
        let was_masked = e.masked();
        match off % ENTRY_SIZE {
            // Message addresses are dword aligned: bits 1:0 read as zero.
            0 => e.addr = (e.addr & !0xffff_ffff) | u64::from(v & !0x3),
            4 => e.addr = (e.addr & 0xffff_ffff) | (u64::from(v) << 32),
            8 => e.data = v,
            // Only the mask bit is implemented; the rest is reserved.
            _ => e.ctrl = v & ENTRY_MASKED,
        }
        let e = *e;
        let reprogrammed = off % ENTRY_SIZE != 12 || was_masked;
        if enabled && !e.masked() && reprogrammed {
            self.route(idx, Some(e.msg()));
        }
        self.deliver_pending(idx);
    }
}

/// Call `f(index in data, offset)` for each dword of an aligned 4- or
/// 8-byte access; other accesses call nothing.
fn for_dwords(offset: u64, len: usize, mut f: impl FnMut(usize, u64)) {
    if !matches!(len, 4 | 8) || !offset.is_multiple_of(len as u64) {
        return;
    }
    for i in (0..len).step_by(4) {
        if let Some(off) = offset.checked_add(i as u64) {
            f(i, off);
        }
    }
}

/// The MSI-X capability as placed in a function's configuration space.
#[derive(Debug, Clone, Copy)]
pub struct MsixCap {
    offset: u16,
}

impl MsixCap {
    /// Append the capability for a table of `table_size` entries at
    /// `layout`; only the enable and function-mask bits are writable.
    pub fn add(
        cfg: &mut PciConfig,
        table_size: u16,
        layout: &MsixLayout,
    ) -> Result<Self, PciConfigError> {
        let ctrl = table_size.clamp(1, MAX_VECTORS) - 1;
        let table = (layout.table_offset & !0x7) | u32::from(layout.table_bar & 0x7);
        let pba = (layout.pba_offset & !0x7) | u32::from(layout.pba_bar & 0x7);
        let mut body = [0u8; 10];
        body[0..2].copy_from_slice(&ctrl.to_le_bytes());
        body[2..6].copy_from_slice(&table.to_le_bytes());
        body[6..10].copy_from_slice(&pba.to_le_bytes());
        let mut mask = [0u8; 10];
        mask[1] = ((CTRL_ENABLE | CTRL_FUNCTION_MASK) >> 8) as u8;
        let offset = cfg.add_capability(MSIX_CAP_ID, &body, &mask)?;
        Ok(Self { offset })
    }

    pub fn offset(&self) -> u16 {
        self.offset
    }

    /// After a guest configuration write at `[offset, offset + len)`: pass
    /// a changed Message Control word on to `state`.
    pub fn config_written(&self, cfg: &PciConfig, offset: u16, len: usize, state: &mut MsixState) {
        let ctrl_at = self.offset + 2;
        if overlaps(offset, len, ctrl_at, 2) {
            state.set_control(cfg.u16_at(ctrl_at));
        }
    }
}

#[cfg(test)]
mod tests;
