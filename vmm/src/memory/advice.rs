//! madvise and mlock on mapped guest RAM: THP on or off, KSM merging,
//! keeping RAM out of core dumps, and `mem-lock`. Hints that only cost speed
//! (THP, KSM) warn when refused, as QEMU does; `dump=off` and `mem-lock`
//! are promises to the user and fail the build when refused.
//!
//! THP leaves out the first 2 MiB of guest physical memory (`SMALL_BELOW`):
//! that is where the VMM writes its few KiB of boot data (PVH start info,
//! e820, ACPI, MP tables, the command line) and where Linux keeps its low
//! reserved area, so a huge page there buys nothing, but as the first write
//! to guest RAM it made every start zero 2 MiB (~1.8 ms here) and added
//! 2 MiB to the RSS of a small guest. That part gets no advice at all
//! (the host's THP policy decides, small pages under "madvise"), so
//! MADV_COLLAPSE still works on it. QEMU advises all RAM (MADV_HUGEPAGE
//! whenever THP is available), Cloud Hypervisor likewise by default,
//! Firecracker none (huge pages only from hugetlbfs, when asked).

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

/// Guest physical memory below this never gets MADV_HUGEPAGE (module doc).
pub const SMALL_BELOW: u64 = 2 << 20;

/// Apply `a` to the guest RAM mapping of `len` bytes at host address `addr`
/// that starts at guest address `gpa`: as [`apply`], except that THP is
/// not advised below [`SMALL_BELOW`].
pub fn apply_ram(addr: usize, len: usize, gpa: u64, a: Advice) -> Result<(), MemoryError> {
    let low = if a.thp == Some(true) && gpa < SMALL_BELOW {
        usize::try_from(SMALL_BELOW - gpa).map_or(len, |l| l.min(len))
    } else {
        0
    };
    if low > 0 {
        apply(addr as *mut u8, low, Advice { thp: None, ..a })?;
    }
    if len > low {
        apply((addr + low) as *mut u8, len - low, a)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `VmFlags` of the /proc/self/smaps entry that holds `addr` (it may
    /// start lower: the kernel merges neighbours with equal flags).
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut in_vma = false;
        for line in smaps.lines() {
            let range = line.split(' ').next().and_then(|r| r.split_once('-'));
            if let Some((Ok(s), Ok(e))) =
                range.map(|(s, e)| (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16)))
            {
                in_vma = (s..e).contains(&addr);
                continue;
            }
            if in_vma {
                if let Some(f) = line.strip_prefix("VmFlags:") {
                    return f.trim().to_string();
                }
            }
        }
        panic!("no VMA holds {addr:#x}");
    }

    fn advised(addr: usize) -> bool {
        vm_flags(addr).split(' ').any(|f| f == "hg")
    }

    #[test]
    fn thp_skips_the_low_2_mib_of_guest_ram_only() {
        let len = 8 << 20;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let a = p as usize;
        let b = a + len;
        let on = Advice {
            thp: Some(true),
            merge: false,
            dump: true,
        };
        // RAM at guest address 0: the first 2 MiB unadvised, the rest huge.
        apply_ram(a, len, 0, on).unwrap();
        assert!(!advised(a), "{}", vm_flags(a));
        let small = SMALL_BELOW as usize;
        assert!(advised(a + small), "{}", vm_flags(a + small));
        // RAM that starts higher (above a PCI hole) is advised whole.
        apply_ram(b, len, 4 << 30, on).unwrap();
        assert!(advised(b), "{}", vm_flags(b));
        // SAFETY: unmaps only the mapping made above.
        unsafe { libc::munmap(p, 2 * len) };
    }
}
