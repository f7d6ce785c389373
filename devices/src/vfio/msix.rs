//! MSI-X for an assigned device: the table and PBA emulated (the guest
//! never touches the device's own), each vector's irqfd handed to the
//! device while the vector is unmasked.
//!
//! The table and routes are `pci::MsixState`'s. What is VFIO's here is
//! masking: the device signals eventfds directly, so a masked vector must
//! not reach its irqfd. While a vector (or the whole function) is masked,
//! the device is given a private "pending" eventfd for it instead; the PBA
//! reads those, and on unmask the device gets the irqfd back and a pending
//! vector is delivered once. Drivers mask and unmask rarely (set-up,
//! affinity changes), so the extra `set_irq_eventfds` per change is cheap.

use std::sync::Arc;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::io::{VfioDeviceIo, MSIX_IRQ};
use super::seams::MsiIrqfds;
use crate::pci::msix::ENTRY_SIZE;
use crate::pci::{MsixLayout, MsixState};

const CTRL_ENABLE: u16 = 1 << 15;
const CTRL_FUNCTION_MASK: u16 = 1 << 14;
const CTRL_TABLE_SIZE: u16 = 0x7ff;

/// See the module doc.
pub struct VfioMsix {
    cap_offset: u16,
    /// The device's control word with the guest-writable bits cleared.
    ctrl_ro: u16,
    pub layout: MsixLayout,
    state: MsixState,
    vectors: Arc<dyn MsiIrqfds>,
    pending_fds: Vec<EventFd>,
    latched: Vec<bool>,
    /// Per vector, whether the device holds the irqfd (true) or the
    /// pending eventfd; `None` while MSI-X is off on the device.
    on_device: Option<Vec<bool>>,
}

/// The table size a control word announces.
pub fn table_size(ctrl: u16) -> u16 {
    (ctrl & CTRL_TABLE_SIZE) + 1
}

impl VfioMsix {
    pub fn new(
        cap_offset: u16,
        ctrl: u16,
        layout: MsixLayout,
        vectors: Arc<dyn MsiIrqfds>,
    ) -> std::io::Result<Self> {
        let state = MsixState::new(vectors.clone());
        let n = usize::from(state.table_size());
        let pending_fds = (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            cap_offset,
            ctrl_ro: ctrl & !(CTRL_ENABLE | CTRL_FUNCTION_MASK),
            layout,
            state,
            vectors,
            pending_fds,
            latched: vec![false; n],
            on_device: None,
        })
    }

    pub fn table_size(&self) -> u16 {
        self.state.table_size()
    }

    pub fn table_len(&self) -> u64 {
        self.state.table_len()
    }

    pub fn pba_len(&self) -> u64 {
        u64::from(self.table_size()).div_ceil(64) * 8
    }

    pub fn enabled(&self) -> bool {
        self.state.enabled()
    }

    /// The control word's offset in configuration space.
    pub fn ctrl_offset(&self) -> u16 {
        self.cap_offset + 2
    }

    pub fn ctrl(&self) -> u16 {
        let mut c = self.ctrl_ro;
        if self.state.enabled() {
            c |= CTRL_ENABLE;
        }
        if self.state.function_masked() {
            c |= CTRL_FUNCTION_MASK;
        }
        c
    }

    /// A guest write of the control word (routes follow in `MsixState`;
    /// the caller syncs the device afterwards).
    pub fn set_ctrl(&mut self, v: u16) {
        self.state
            .set_control(v & (CTRL_ENABLE | CTRL_FUNCTION_MASK));
    }

    pub fn in_table(&self, bar: u8, offset: u64) -> bool {
        bar == self.layout.table_bar
            && offset
                .checked_sub(u64::from(self.layout.table_offset))
                .is_some_and(|o| o < self.table_len())
    }

    pub fn in_pba(&self, bar: u8, offset: u64) -> bool {
        bar == self.layout.pba_bar
            && offset
                .checked_sub(u64::from(self.layout.pba_offset))
                .is_some_and(|o| o < self.pba_len())
    }

    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        self.state
            .table_read(offset - u64::from(self.layout.table_offset), data);
    }

    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        self.state
            .table_write(offset - u64::from(self.layout.table_offset), data);
    }

    /// PBA reads: whatever the device signalled on masked vectors.
    pub fn pba_read(&mut self, offset: u64, data: &mut [u8]) {
        self.drain_pending();
        let base = (offset - u64::from(self.layout.pba_offset)) * 8;
        for (i, b) in data.iter_mut().enumerate() {
            *b = 0;
            for bit in 0..8u64 {
                let v = base + i as u64 * 8 + bit;
                let set = usize::try_from(v)
                    .ok()
                    .and_then(|v| self.latched.get(v))
                    .copied()
                    .unwrap_or(false);
                *b |= u8::from(set) << bit;
            }
        }
    }

    fn drain_pending(&mut self) {
        for (fd, l) in self.pending_fds.iter().zip(self.latched.iter_mut()) {
            if fd.read().is_ok() {
                *l = true;
            }
        }
    }

    fn entry_masked(&self, v: u16) -> bool {
        let mut ctrl = [0u8; 4];
        self.state
            .table_read(u64::from(v) * ENTRY_SIZE + 12, &mut ctrl);
        ctrl[0] & 1 != 0
    }

    fn live(&self) -> Vec<bool> {
        let fmask = self.state.function_masked();
        (0..self.table_size())
            .map(|v| !fmask && !self.entry_masked(v))
            .collect()
    }

    /// Bring the device in line with the table: MSI-X on or off, and each
    /// vector's eventfd per its mask. Pending vectors that became unmasked
    /// are delivered.
    pub fn sync(&mut self, io: &dyn VfioDeviceIo) -> std::io::Result<()> {
        if !self.state.enabled() {
            return self.disable(io);
        }
        let live = self.live();
        match &self.on_device {
            None => {
                let mut fds = Vec::with_capacity(live.len());
                for (v, &l) in live.iter().enumerate() {
                    fds.push(self.fd_for(v, l)?);
                }
                io.set_irq_eventfds(MSIX_IRQ, 0, &fds)?;
            }
            Some(prev) => {
                for (v, (&was, &now)) in prev.iter().zip(&live).enumerate() {
                    if was != now {
                        io.set_irq_eventfds(MSIX_IRQ, v as u32, &[self.fd_for(v, now)?])?;
                    }
                }
            }
        }
        let before = self.on_device.replace(live.clone());
        self.drain_pending();
        for (v, &now) in live.iter().enumerate() {
            let was = before.as_ref().is_some_and(|p| p[v]);
            if now && !was && std::mem::take(&mut self.latched[v]) {
                self.vectors.trigger(v as u16)?;
            }
        }
        Ok(())
    }

    fn fd_for(&self, v: usize, live: bool) -> std::io::Result<&EventFd> {
        if live {
            self.vectors.irqfd(v as u16)
        } else {
            Ok(&self.pending_fds[v])
        }
    }

    /// MSI-X off on the device (the table keeps its contents).
    pub fn disable(&mut self, io: &dyn VfioDeviceIo) -> std::io::Result<()> {
        if self.on_device.take().is_some() {
            io.disable_irqs(MSIX_IRQ)?;
        }
        Ok(())
    }

    /// Power-on state (the caller has turned MSI-X off on the device).
    pub fn reset(&mut self) {
        self.state.reset();
        self.on_device = None;
        self.drain_pending();
        self.latched.fill(false);
    }
}
