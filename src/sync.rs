//! The allocator's own lock: a futex mutex that never allocates.
//!
//! `std::sync::Mutex` is not used anywhere inside the allocator: the standard library is free to
//! allocate in its locks, and an allocator lock must not. [`RawLock`] is the classic three-state
//! futex mutex (0 free, 1 held, 2 held with sleepers): one compare-and-swap to take it when it
//! is free, a short spin, then `FUTEX_WAIT`. [`Lock<T>`] puts data behind it.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

const FREE: u32 = 0;
const HELD: u32 = 1;
const CONTENDED: u32 = 2;
const SPINS: u32 = 100;

/// A mutual-exclusion lock with no data.
///
/// Invariant: `state ∈ {FREE, HELD, CONTENDED}`; `state != FREE` iff some thread holds it;
/// `state == CONTENDED` whenever a thread may be asleep in `FUTEX_WAIT` on it.
pub struct RawLock {
    state: AtomicU32,
}

impl RawLock {
    pub const fn new() -> Self {
        RawLock { state: AtomicU32::new(FREE) }
    }

    /// Takes the lock, sleeping while another thread holds it.
    #[inline]
    pub fn lock(&self) {
        if self.state.compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        for _ in 0..SPINS {
            core::hint::spin_loop();
            if self.state.load(Ordering::Relaxed) == FREE
                && self
                    .state
                    .compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
        while self.state.swap(CONTENDED, Ordering::Acquire) != FREE {
            futex_wait(&self.state, CONTENDED);
        }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub fn try_lock(&self) -> bool {
        self.state.compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Releases the lock.
    ///
    /// # Safety
    /// - The calling thread holds the lock (or, in a `fork` child, the thread that took it
    ///   before `fork` was this one's parent).
    #[inline]
    pub unsafe fn unlock(&self) {
        if self.state.swap(FREE, Ordering::Release) == CONTENDED {
            futex_wake(&self.state);
        }
    }
}

impl Default for RawLock {
    fn default() -> Self {
        Self::new()
    }
}

fn futex_wait(state: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT reads the u32 at a valid address; a spurious or interrupted return is
    // handled by the caller's loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            state.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            core::ptr::null::<libc::timespec>(),
        );
    }
}

fn futex_wake(state: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            state.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// Data behind a [`RawLock`].
pub struct Lock<T> {
    raw: RawLock,
    data: UnsafeCell<T>,
}

// SAFETY: the lock serialises every access to `data`.
unsafe impl<T: Send> Sync for Lock<T> {}
// SAFETY: moving the lock moves the data with it.
unsafe impl<T: Send> Send for Lock<T> {}

impl<T> Lock<T> {
    pub const fn new(data: T) -> Self {
        Lock { raw: RawLock::new(), data: UnsafeCell::new(data) }
    }

    /// Takes the lock; the guard releases it when dropped.
    #[inline]
    pub fn lock(&self) -> LockGuard<'_, T> {
        self.raw.lock();
        LockGuard { lock: self }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub fn try_lock(&self) -> Option<LockGuard<'_, T>> {
        if self.raw.try_lock() {
            Some(LockGuard { lock: self })
        } else {
            None
        }
    }

    /// The bare lock, for the fork handlers that hold every lock across `fork`.
    pub fn raw(&self) -> &RawLock {
        &self.raw
    }

    /// The data without taking the lock.
    ///
    /// # Safety
    /// - No other thread may be writing the data, and the caller must not create a `&mut`
    ///   alias through a guard while the pointer is in use.
    pub unsafe fn data_ptr(&self) -> *mut T {
        self.data.get()
    }
}

/// Proof that the lock is held; gives access to the data.
pub struct LockGuard<'a, T> {
    lock: &'a Lock<T>,
}

impl<T> Deref for LockGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for LockGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while the lock is held, and it is borrowed mutably.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for LockGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard was created by taking the lock on this thread.
        unsafe { self.lock.raw.unlock() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_exactly_under_contention() {
        let lock = Arc::new(Lock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 80_000);
        assert!(lock.raw().try_lock(), "free after the last guard");
    }

    #[test]
    fn try_lock_fails_while_held() {
        let lock = RawLock::new();
        assert!(lock.try_lock());
        assert!(!lock.try_lock());
        // SAFETY: taken just above on this thread.
        unsafe { lock.unlock() };
        assert!(lock.try_lock());
        // SAFETY: as above.
        unsafe { lock.unlock() };
    }
}
