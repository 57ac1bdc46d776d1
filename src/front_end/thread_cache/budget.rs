//! Budgets: the bytes one thread's cache may hold (a share of the cap on all caches, by the
//! number of live threads), making room within it by shrinking other lists, the sizes the
//! caches publish for each other and for the total, and the trim generations that halve every
//! cache when the total exceeds the cap. Slow-path events also drive the release policy's
//! tick from here.

use super::registry::LIVE_THREADS;
use super::ThreadCache;
use crate::config::{
    MIN_THREAD_CACHE_BYTES, SOLE_THREAD_CACHE_BYTES, THREAD_CACHE_BYTES, TOTAL_THREAD_CACHE_BYTES,
};
use crate::size_class::SizeClass;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Slow-path events between two calls of the release policy's tick.
const TICK_EVERY: u32 = 64;

/// The cap on all caches together (changeable at start-up through the environment).
static TOTAL_BUDGET: AtomicUsize = AtomicUsize::new(TOTAL_THREAD_CACHE_BYTES);
/// Bytes in all caches, as published.
pub(super) static TOTAL_CACHED: AtomicUsize = AtomicUsize::new(0);
/// Bumped when the caches together exceed their cap; each cache halves itself when it sees a
/// new generation on a slow path.
static TRIM_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Sets the cap on the bytes of all thread caches together.
pub fn set_total_budget(bytes: usize) {
    TOTAL_BUDGET.store(bytes, Relaxed);
}

/// The budget of one thread's cache given the number of live threads.
pub(super) fn thread_budget() -> usize {
    budget_for(LIVE_THREADS.load(Relaxed), TOTAL_BUDGET.load(Relaxed))
}

/// The budget of one of `threads` caches sharing `total` bytes: an equal share between the
/// per-thread floor and ceiling, but never above the total. A thread alone has a higher
/// ceiling ([`SOLE_THREAD_CACHE_BYTES`]): no other thread's cache competes with it.
fn budget_for(threads: usize, total: usize) -> usize {
    let threads = threads.max(1);
    let ceiling = if threads == 1 { SOLE_THREAD_CACHE_BYTES } else { THREAD_CACHE_BYTES };
    (total / threads).clamp(MIN_THREAD_CACHE_BYTES, ceiling).min(total)
}

#[cfg(test)]
#[test]
fn a_thread_alone_gets_the_larger_ceiling() {
    const MIB: usize = 1 << 20;
    assert_eq!(budget_for(1, 64 * MIB), SOLE_THREAD_CACHE_BYTES);
    assert_eq!(budget_for(0, 64 * MIB), SOLE_THREAD_CACHE_BYTES, "no thread counted yet");
    assert_eq!(budget_for(2, 64 * MIB), THREAD_CACHE_BYTES);
    assert_eq!(budget_for(64, 64 * MIB), MIB);
    assert_eq!(budget_for(1000, 64 * MIB), MIN_THREAD_CACHE_BYTES);
    assert_eq!(budget_for(1, 3 * MIB), 3 * MIB, "never above the total");
    assert_eq!(budget_for(4, 256 << 10), 256 << 10, "never above the total");
}

impl ThreadCache {
    /// Counts a slow-path event of `class`; every [`TICK_EVERY`] events, runs the release
    /// policy's tick and acts on a new trim generation.
    pub(super) fn note_event(&mut self, class: SizeClass) {
        self.limits[class.index()].events = self.limits[class.index()].events.saturating_add(1);
        self.events += 1;
        if self.events % TICK_EVERY == 0 {
            crate::release::tick();
            // A thread that was alone keeps its larger budget only while it is: once another
            // thread has a cache, it comes down here (not only at the next scavenge).
            let budget = thread_budget();
            if budget < self.budget {
                self.budget = budget;
                self.fit_budget();
            }
            // Over the cap on all caches: every thread that passes here next halves its lists.
            if TOTAL_CACHED.load(Relaxed) > TOTAL_BUDGET.load(Relaxed) {
                TRIM_GENERATION.fetch_add(1, Relaxed);
            }
            let generation = TRIM_GENERATION.load(Relaxed);
            if generation != self.trim_seen {
                self.trim_seen = generation;
                self.trim_all();
            }
        }
    }

    /// Halves every list (limit and contents) and refreshes the budget.
    #[cold]
    fn trim_all(&mut self) {
        self.budget = thread_budget();
        for class in self.active_classes() {
            let max_len = self.limits[class.index()].max_len;
            if max_len > 0 {
                self.set_max_len_and_trim(class, max_len / 2);
                self.publish(class);
            }
        }
    }

    /// Frees at least `needed` bytes of the budget for `keep` by shrinking the other lists,
    /// a quarter of each (at least a batch) in turn, starting where the last call stopped so
    /// that the cost is spread over the lists.
    #[cold]
    pub(super) fn make_room(&mut self, keep: SizeClass, needed: usize) {
        let mut freed = 0;
        let mask = self.active & !(1 << keep.index());
        // Rotate the starting point: classes from the cursor up first, then the rest.
        let above = mask & (u128::MAX << self.room_cursor.min(127));
        let order = [above, mask & !above];
        for mut part in order {
            while part != 0 && freed < needed {
                let i = part.trailing_zeros() as usize;
                part &= part - 1;
                let Some(class) = SizeClass::new(i) else { continue };
                let old = self.limits[i].max_len;
                let cut = (old / 4).max(class.batch() as u32).min(old);
                self.set_max_len_and_trim(class, old - cut);
                self.publish(class);
                freed += cut as usize * class.size();
                self.room_cursor = i as u32 + 1;
            }
        }
    }

    /// Publishes the list length of `class` to `published_bytes` (for other threads' stats)
    /// and to the process-wide total.
    pub(super) fn publish(&mut self, class: SizeClass) {
        let i = class.index();
        let len = self.len(class) as u32;
        let old = self.limits[i].published_len;
        if len != old {
            let (new_bytes, old_bytes) = (len as usize * class.size(), old as usize * class.size());
            let bytes = self.published_bytes.load(Relaxed);
            self.published_bytes.store(bytes + new_bytes - old_bytes, Relaxed);
            if new_bytes > old_bytes {
                TOTAL_CACHED.fetch_add(new_bytes - old_bytes, Relaxed);
            } else {
                TOTAL_CACHED.fetch_sub(old_bytes - new_bytes, Relaxed);
            }
            self.limits[i].published_len = len;
        }
    }
}
