//! A set-once cell for data the BSP fills in at boot (boot info, ACPI
//! findings) and everything, on any CPU, reads afterwards.

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

pub struct Once<T> {
    state: AtomicU8,
    val: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written once, by the CPU that wins the EMPTY->WRITING
// exchange, and only read after READY is published with Release ordering.
unsafe impl<T: Sync + Send> Sync for Once<T> {}

impl<T> Once<T> {
    pub const fn new() -> Once<T> {
        Once { state: AtomicU8::new(EMPTY), val: UnsafeCell::new(MaybeUninit::uninit()) }
    }

    /// Stores `v`; a second call keeps the first value and drops `v`.
    pub fn set(&self, v: T) -> &T {
        if self.state.compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Acquire).is_ok() {
            // SAFETY: winning the exchange gives exclusive access until READY.
            unsafe { (*self.val.get()).write(v) };
            self.state.store(READY, Ordering::Release);
        }
        self.get().expect("Once::set raced with another writer")
    }

    pub fn get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) == READY {
            // SAFETY: READY means the value was fully written and is never
            // written again.
            Some(unsafe { (*self.val.get()).assume_init_ref() })
        } else {
            None
        }
    }
}
