//! KVM's coalesced I/O ring: port and MMIO writes KVM queues in a shared
//! page instead of exiting (`KVM_REGISTER_COALESCED_MMIO`, with `pio` for
//! ports), which the vCPUs drain into the buses before they dispatch any
//! exit, so every device sees its writes in guest order. Used for the IDE
//! data ports and taskfile registers (a `rep outsw` otherwise exits once
//! per word, 2048 exits for 4 KiB; with the ring once per ~170 words) and
//! AHCI's PxIS registers (`ata::ahci` says why that is safe).
//!
//! The page is mapped here rather than through `VcpuFd`'s own ring
//! reader, because that one borrows the vCPU, which the exit being
//! dispatched already borrows; one mapping serves every vCPU of the VM
//! (KVM has one ring per VM), behind a mutex.

use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Mutex;

use kvm_bindings::{kvm_coalesced_mmio, KVM_COALESCED_MMIO_PAGE_OFFSET};

use super::exit::Buses;

/// The mapped ring page.
pub struct CoalescedRing {
    page: *mut u8,
    size: usize,
    lock: Mutex<()>,
}

// SAFETY: the page is plain shared memory; every access to the entries
// and the consumer index is made under `lock`, and the kernel's producer
// side is synchronised through the indices with fences below.
unsafe impl Send for CoalescedRing {}
// SAFETY: as above.
unsafe impl Sync for CoalescedRing {}

const HEADER: usize = 8;

impl CoalescedRing {
    /// Map the ring page of the VM through one of its vCPU fds.
    pub fn map(vcpu: &impl AsRawFd) -> std::io::Result<CoalescedRing> {
        // SAFETY: sysconf has no memory effects.
        let size = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as usize,
            _ => return Err(std::io::Error::last_os_error()),
        };
        // SAFETY: a fresh shared mapping of the vCPU fd's ring page, at
        // the offset KVM documents; the result is checked and the
        // mapping is owned by the returned value (unmapped on drop).
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.as_raw_fd(),
                (KVM_COALESCED_MMIO_PAGE_OFFSET as usize * size) as libc::off_t,
            )
        };
        if page == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(CoalescedRing {
            page: page.cast(),
            size,
            lock: Mutex::new(()),
        })
    }

    fn max(&self) -> u32 {
        ((self.size - HEADER) / std::mem::size_of::<kvm_coalesced_mmio>()) as u32
    }

    /// Dispatch every queued write, oldest first.
    pub fn drain(&self, buses: &Buses) {
        let _g = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let first = self.page.cast::<u32>();
        // SAFETY: `first` and `last` are the two u32 indices at the start
        // of the mapped page (struct kvm_coalesced_mmio_ring).
        let last = unsafe { first.add(1) };
        let max = self.max();
        loop {
            // SAFETY: in-bounds reads of the indices, volatile because the
            // kernel writes `last` concurrently.
            let (f, l) = unsafe { (first.read_volatile(), last.read_volatile()) };
            if f == l || f >= max {
                return;
            }
            // The entry's contents are published before `last` moves.
            fence(Ordering::Acquire);
            // SAFETY: entry `f` < max lies inside the page after the header.
            let e: kvm_coalesced_mmio = unsafe {
                self.page
                    .add(HEADER + f as usize * std::mem::size_of::<kvm_coalesced_mmio>())
                    .cast::<kvm_coalesced_mmio>()
                    .read_volatile()
            };
            let len = (e.len as usize).min(e.data.len());
            // SAFETY: reading the union's `pio` member, a u32 KVM sets.
            let pio = unsafe { e.__bindgen_anon_1.pio } != 0;
            if pio {
                buses.pio.write(e.phys_addr, &e.data[..len]);
            } else {
                buses.mmio.write(e.phys_addr, &e.data[..len]);
            }
            fence(Ordering::Release);
            // SAFETY: only the consumer (us, under the lock) writes `first`.
            unsafe { first.write_volatile((f + 1) % max) };
        }
    }
}

impl Drop for CoalescedRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.page.cast(), self.size) };
    }
}
