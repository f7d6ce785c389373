//! `NetBackend`: where frames go and come from (a tap, possibly from the
//! bridge helper, or a passt socket). Every frame, both ways, starts
//! with the 12-byte vnet header, which the backend passes through as is.
//! Transfers are scatter-gather straight into or out of guest memory.

use std::os::fd::RawFd;

/// One `struct iovec`, the host address kept as an integer so that the
/// worker holding a list of them stays `Send`; the layout is `iovec`'s.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iov {
    pub base: usize,
    pub len: usize,
}

const _: () = assert!(
    std::mem::size_of::<Iov>() == std::mem::size_of::<libc::iovec>()
        && std::mem::align_of::<Iov>() == std::mem::align_of::<libc::iovec>()
);

pub trait NetBackend: Send + Sync {
    /// For messages: the tap's interface name.
    fn name(&self) -> &str;
    /// Read one frame (vnet header first) into `iov`; `WouldBlock` when
    /// none is waiting.
    ///
    /// # Safety
    /// Every element of `iov` must describe memory that is valid for
    /// writes of its length for the duration of the call.
    unsafe fn readv(&self, iov: &[Iov]) -> std::io::Result<usize>;
    /// Send one frame (vnet header first) gathered from `iov`.
    ///
    /// # Safety
    /// Every element of `iov` must describe memory that is valid for
    /// reads of its length for the duration of the call.
    unsafe fn writev(&self, iov: &[Iov]) -> std::io::Result<usize>;
    /// Readable when a frame is waiting.
    fn fd(&self) -> RawFd;
    /// The TUN_F_* offloads frames handed to the guest may carry.
    fn set_offloads(&self, flags: u32) -> std::io::Result<()>;
    /// Attach (true) or detach this queue of a multiqueue tap, so that
    /// the kernel steers frames only to queues the guest reads. Single
    /// queue backends have nothing to do.
    fn set_enabled(&self, on: bool) -> std::io::Result<()> {
        let _ = on;
        Ok(())
    }
    /// Whether frames may carry partial checksums and GSO both ways (a
    /// tap: yes). Without, the device offers no checksum or TSO features.
    fn takes_offloads(&self) -> bool {
        true
    }
}
