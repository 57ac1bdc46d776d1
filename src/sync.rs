//! The allocator's own lock: a futex mutex that never allocates.
//!
//! `std::sync::Mutex` is not used anywhere inside the allocator: the standard library is free to
//! allocate in its locks, and an allocator lock must not. [`RawLock`] is the classic three-state
//! futex mutex (0 free, 1 held, 2 held with sleepers): one compare-and-swap to take it when it
//! is free, a short spin, then `FUTEX_WAIT`. [`Lock<T>`] puts data behind it.
//!
//! Each lock counts how often it was taken, how often the first compare-and-swap found it
//! held (a *contended* acquisition, which then spins or sleeps) and how often a contended
//! acquisition went to sleep in `FUTEX_WAIT`. The counters live in the lock itself, on the
//! cache line its state is on, so counting adds no shared cache line: an uncontended
//! acquisition adds one increment of a line it has just written (the compare-and-swap made
//! it this thread's), and the contended ones count in the cold path. `stats` sums them per
//! lock family ([`LockStats`]).

use core::cell::UnsafeCell;
use core::ops::{AddAssign, Deref, DerefMut};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const FREE: u32 = 0;
const HELD: u32 = 1;
const CONTENDED: u32 = 2;
const SPINS: u32 = 100;

/// How often a lock, or a family of locks, was taken and had to wait. Counted since the
/// process started; every counter wraps at 2^64.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockStats {
    /// Acquisitions: `lock` calls and successful `try_lock` calls.
    pub acquisitions: u64,
    /// Acquisitions that had to wait: the lock was held by another thread at the first
    /// compare-and-swap, so the caller spun and perhaps slept. A failed `try_lock` is not
    /// counted (its caller does not wait).
    pub contended: u64,
    /// Contended acquisitions that went to sleep in the kernel (`FUTEX_WAIT`) because a short
    /// spin did not see the lock free. `slept <= contended <= acquisitions`, up to the
    /// moments between the counters' updates.
    pub slept: u64,
}

impl AddAssign for LockStats {
    fn add_assign(&mut self, other: LockStats) {
        self.acquisitions = self.acquisitions.wrapping_add(other.acquisitions);
        self.contended = self.contended.wrapping_add(other.contended);
        self.slept = self.slept.wrapping_add(other.slept);
    }
}

impl LockStats {
    /// The sum over `locks`.
    pub(crate) fn sum<'a>(locks: impl IntoIterator<Item = &'a RawLock>) -> LockStats {
        let mut total = LockStats::default();
        for lock in locks {
            total += lock.stats();
        }
        total
    }
}

/// A mutual-exclusion lock with no data.
///
/// Invariant: `state ∈ {FREE, HELD, CONTENDED}`; `state != FREE` iff some thread holds it;
/// `state == CONTENDED` whenever a thread may be asleep in `FUTEX_WAIT` on it.
/// `acquisitions` is only written by the thread that holds the lock (so a relaxed load and
/// store increment it); `contended` and `slept` are written by waiting threads
/// (`fetch_add`). Other threads only read the counters.
pub struct RawLock {
    state: AtomicU32,
    acquisitions: AtomicU64,
    contended: AtomicU64,
    slept: AtomicU64,
}

impl RawLock {
    pub const fn new() -> Self {
        RawLock {
            state: AtomicU32::new(FREE),
            acquisitions: AtomicU64::new(0),
            contended: AtomicU64::new(0),
            slept: AtomicU64::new(0),
        }
    }

    /// Takes the lock, sleeping while another thread holds it.
    #[inline]
    pub fn lock(&self) {
        if self.state.compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
        self.count_acquisition();
    }

    /// Counts an acquisition; called with the lock held, so no other thread writes the
    /// counter and a plain (not atomic read-modify-write) increment is exact.
    #[inline(always)]
    fn count_acquisition(&self) {
        let n = self.acquisitions.load(Ordering::Relaxed);
        self.acquisitions.store(n.wrapping_add(1), Ordering::Relaxed);
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        // Counted before waiting, not after: an increment inside the critical section would
        // lengthen it for every other waiter.
        self.contended.fetch_add(1, Ordering::Relaxed);
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
        if self.state.swap(CONTENDED, Ordering::Acquire) == FREE {
            return;
        }
        self.slept.fetch_add(1, Ordering::Relaxed);
        loop {
            futex_wait(&self.state, CONTENDED);
            if self.state.swap(CONTENDED, Ordering::Acquire) == FREE {
                return;
            }
        }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub fn try_lock(&self) -> bool {
        let taken =
            self.state.compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed).is_ok();
        if taken {
            self.count_acquisition();
        }
        taken
    }

    /// This lock's counters, read without taking it (each one is exact; together they may
    /// be a moment apart).
    pub fn stats(&self) -> LockStats {
        LockStats {
            acquisitions: self.acquisitions.load(Ordering::Relaxed),
            contended: self.contended.load(Ordering::Relaxed),
            slept: self.slept.load(Ordering::Relaxed),
        }
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
        let counts = lock.raw().stats();
        assert_eq!(counts.acquisitions, 80_001, "every acquisition counted once: {counts:?}");
        assert!(counts.slept <= counts.contended, "{counts:?}");
        assert!(lock.raw().try_lock(), "free after the last guard");
    }

    #[test]
    fn an_uncontended_lock_counts_no_contention() {
        let lock = Lock::new(0u32);
        for _ in 0..1_000 {
            *lock.lock() += 1;
        }
        let held = lock.try_lock().expect("free");
        assert!(lock.try_lock().is_none(), "held");
        drop(held);
        let counts = lock.raw().stats();
        assert_eq!(counts, LockStats { acquisitions: 1_001, contended: 0, slept: 0 });
    }

    /// Polls `f` for up to ten seconds.
    fn eventually(what: &str, f: impl Fn() -> bool) {
        let start = std::time::Instant::now();
        while !f() {
            assert!(start.elapsed().as_secs() < 10, "timed out waiting until {what}");
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_contended_lock_counts_the_wait_and_the_sleep() {
        let lock = Arc::new(Lock::new(0u32));
        let guard = lock.lock();
        let waiter = {
            let lock = lock.clone();
            std::thread::spawn(move || *lock.lock() += 1)
        };
        // The waiter counts itself before it spins, and sleeps after a spin of a few
        // microseconds; the lock stays held until both have been seen.
        eventually("the waiter found the lock held", || lock.raw().stats().contended == 1);
        eventually("the waiter sleeps", || lock.raw().stats().slept == 1);
        drop(guard);
        waiter.join().unwrap();
        assert_eq!(*lock.lock(), 1);
        let counts = lock.raw().stats();
        assert_eq!(counts, LockStats { acquisitions: 3, contended: 1, slept: 1 });
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
