//! madvise and mlock on mapped guest RAM: THP on or off, KSM merging,
//! keeping RAM out of core dumps, and `mem-lock`. Hints that only cost speed
//! (THP, KSM) warn when refused, as QEMU does; `dump=off` and `mem-lock`
//! are promises to the user and fail the build when refused.

use super::MemoryError;

/// What to tell the kernel about every guest RAM region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advice {
    /// Some(true): MADV_HUGEPAGE, Some(false): MADV_NOHUGEPAGE, None: leave
    /// alone (hugetlb memory, where THP means nothing).
    pub thp: Option<bool>,
    pub merge: bool,
    pub dump: bool,
}

fn madvise(ptr: *mut u8, len: usize, advice: libc::c_int) -> std::io::Result<()> {
    // SAFETY: `ptr..ptr+len` is a guest RAM mapping owned by the caller's
    // GuestMemoryMmap; these advice values change paging policy only and
    // never invalidate its contents.
    let rc = unsafe { libc::madvise(ptr.cast(), len, advice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Apply `a` to one mapping of `len` bytes at `ptr`.
pub fn apply(ptr: *mut u8, len: usize, a: Advice) -> Result<(), MemoryError> {
    if let Some(on) = a.thp {
        let adv = if on {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        if let Err(e) = madvise(ptr, len, adv) {
            log::warn!("transparent huge pages: madvise refused ({e}); using small pages");
        }
    }
    if a.merge {
        if let Err(e) = madvise(ptr, len, libc::MADV_MERGEABLE) {
            log::warn!("merge=on: KSM madvise refused ({e}); guest RAM is not merged");
        }
    }
    // The exit reaper (vstate::reaper) forks; guest RAM has no business in
    // its address space, and copying its page tables would cost time.
    if let Err(e) = madvise(ptr, len, libc::MADV_DONTFORK) {
        log::debug!("MADV_DONTFORK refused ({e}); the exit reaper copies guest RAM's tables");
    }
    if !a.dump {
        madvise(ptr, len, libc::MADV_DONTDUMP).map_err(|source| MemoryError::Madvise {
            what: "MADV_DONTDUMP (dump=off)",
            size: len as u64,
            source,
        })?;
    }
    Ok(())
}

/// Lock a mapping in RAM (`-overcommit mem-lock=on`); faults it in too.
pub fn lock(ptr: *mut u8, len: usize) -> Result<(), MemoryError> {
    // SAFETY: mlock on a mapping we own; it only pins pages.
    let rc = unsafe { libc::mlock(ptr.cast(), len) };
    if rc != 0 {
        return Err(MemoryError::Mlock {
            size: len as u64,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}
