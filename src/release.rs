//! The release policy: when free memory goes back to the OS, with no background thread.
//!
//! Three mechanisms, from fastest to slowest:
//!
//! 1. **Reserve** (page heap, at every free): at most `reserve` bytes of free pages stay
//!    backed; pages freed beyond that are given back at once (`MADV_DONTNEED`), biggest spans
//!    first. After a program frees a large peak, resident memory falls while it frees, without
//!    waiting for a timer. The reserve adapts: when released pages are reused within the
//!    decay time, at most 300 ms (the program frees and reallocates in rounds), it grows by
//!    what was reused, so such a program does not fault its memory in again and again; at
//!    each free it shrinks to the pages the program took in the last 300 ms.
//! 2. **Decay** (on a tick): batches idle in the central transfer caches for about `decay` ms
//!    return to their spans; free pages idle for `decay` ms, and cached large mappings idle as
//!    long, go back to the OS. The tick runs from allocator slow paths (thread-cache refills and
//!    flushes), at most every [`TICK_MS`]. Free pages count as idle only while the program
//!    runs: a tick that comes more than `decay` ms after the previous one finds a program that
//!    was paused (asleep, or waiting), not one that stopped using its memory, so free pages are
//!    left alone until it has run for `decay` ms again (see [`DecayClock`]). Without that, a
//!    program that sleeps for a second between rounds had every free page released by the
//!    first tick of the next round, which then faulted them all in again (mimalloc-bench's
//!    rptest: 1 300 `madvise` calls and twice tcmalloc's page faults).
//! 3. **On demand**: [`release_all`] (behind `tcalloc::release_free_memory`) drains the
//!    central transfer caches and gives back every free page and cached mapping.
//!
//! The knobs come from `env` (`TCALLOC_RELEASE_RATE`, `TCALLOC_FREE_RESERVE_BYTES`,
//! `TCALLOC_DECAY_MS`). Layers below: `central_free_list`, `transfer_cache`, `page_heap`,
//! `large`, `os`.

use crate::central_free_list;
use crate::env::Settings;
use crate::large;
use crate::os;
use crate::page_heap::PAGE_HEAP;
use crate::span::Length;
use crate::transfer_cache;
use core::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Shortest time between two ticks.
pub const TICK_MS: u64 = 100;

static LAST_TICK_MS: AtomicU64 = AtomicU64::new(0);
/// When the program last came back from a pause (see [`DecayClock`]).
static RESUMED_MS: AtomicU64 = AtomicU64::new(0);

/// When free pages may be released by age: the decay clock runs only while the program does.
///
/// A tick more than `decay` ms after the previous one marks a resumption; pages are released
/// by age only once the program has run for `decay` ms since, and then those freed `decay` ms
/// ago or earlier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecayClock {
    /// The time of the previous tick.
    pub last_tick_ms: u64,
    /// The time of the last resumption.
    pub resumed_ms: u64,
}

impl DecayClock {
    /// For a tick at `now`: the time before which free pages count as idle (`None`: release
    /// nothing by age now), and the new time of the last resumption.
    pub fn cutoff(self, now: u64, decay: u64) -> (Option<u64>, u64) {
        let resumed =
            if now.saturating_sub(self.last_tick_ms) > decay { now } else { self.resumed_ms };
        let cutoff = (now.saturating_sub(resumed) >= decay).then(|| now.saturating_sub(decay));
        (cutoff, resumed)
    }
}
/// `decay` in ms, or `u64::MAX` when automatic release is off.
static DECAY_MS: AtomicU64 = AtomicU64::new(1000);

/// Applies the settings (at start-up).
pub fn configure(settings: &Settings) {
    let reserve = settings.effective_reserve_bytes();
    let pages = if reserve == usize::MAX { usize::MAX } else { reserve / crate::config::PAGE_SIZE };
    let decay = settings.effective_decay_ms().unwrap_or(u64::MAX);
    let mut heap = PAGE_HEAP.lock();
    heap.set_policy(Length(pages), decay);
    heap.set_huge_threshold(Length(settings.huge_page_heap_bytes / crate::config::PAGE_SIZE));
    drop(heap);
    DECAY_MS.store(settings.effective_decay_ms().unwrap_or(u64::MAX), Relaxed);
    large::set_decay_ms(settings.effective_decay_ms().unwrap_or(u64::MAX));
}

/// Runs the decay if [`TICK_MS`] have passed since the last tick. Cheap when they have not: a
/// clock read and a compare.
pub fn tick() {
    let now = os::now_millis();
    let last = LAST_TICK_MS.load(Relaxed);
    if now < last + TICK_MS || LAST_TICK_MS.compare_exchange(last, now, Relaxed, Relaxed).is_err() {
        return;
    }
    let decay = DECAY_MS.load(Relaxed);
    if decay == u64::MAX {
        return;
    }
    // Only the thread that won the tick gets here, so the clock has one writer.
    let clock = DecayClock { last_tick_ms: last, resumed_ms: RESUMED_MS.load(Relaxed) };
    let (cutoff, resumed) = clock.cutoff(now, decay);
    RESUMED_MS.store(resumed, Relaxed);
    large::decay(now);
    // Batches idle in a transfer cache for about the decay time go back to their spans (so
    // emptied spans reach the page heap), then idle free pages go back to the OS.
    let epoch = transfer_cache::advance_epoch();
    let idle_epochs = (decay / TICK_MS).max(1);
    central_free_list::drain_idle(epoch.saturating_sub(idle_epochs));
    if let (Some(cutoff), Some(mut heap)) = (cutoff, PAGE_HEAP.try_lock()) {
        heap.release_older_than(cutoff);
    }
}

/// Gives every free page and cached large mapping back to the OS now, after draining the
/// central transfer caches (the caller flushes its own thread cache first). Returns the bytes
/// given back: free pages that were backed, and cached mappings unmapped.
pub fn release_all() -> usize {
    central_free_list::drain_idle(u64::MAX);
    let cached_before = large::stats().cached_bytes;
    large::flush();
    // Another thread may cache a mapping meanwhile; then this undercounts, which is harmless.
    let unmapped = cached_before.saturating_sub(large::stats().cached_bytes);
    let pages = PAGE_HEAP.lock().release(Length(usize::MAX));
    pages.bytes() + unmapped
}

/// Sets how many bytes of free pages the page heap keeps backed (`usize::MAX`: no limit), as
/// `TCALLOC_FREE_RESERVE_BYTES` does at start-up; for `mallopt(M_TRIM_THRESHOLD)`. Pages
/// beyond it go back at the next free.
pub fn set_reserve_bytes(bytes: usize) {
    let pages = if bytes == usize::MAX { usize::MAX } else { bytes / crate::config::PAGE_SIZE };
    PAGE_HEAP.lock().set_policy(Length(pages), DECAY_MS.load(Relaxed));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decay_clock_stops_while_the_program_pauses() {
        let decay = 1000;
        // A program that runs: ticks every 100 ms; pages freed a decay ago are idle.
        let running = DecayClock { last_tick_ms: 9_900, resumed_ms: 0 };
        assert_eq!(running.cutoff(10_000, decay), (Some(9_000), 0));
        // It slept for 2 s: the first tick after that releases nothing by age...
        let woke = DecayClock { last_tick_ms: 10_000, resumed_ms: 0 };
        assert_eq!(woke.cutoff(12_000, decay), (None, 12_000));
        // ...nor do the ticks of its first `decay` ms back...
        let back = DecayClock { last_tick_ms: 12_800, resumed_ms: 12_000 };
        assert_eq!(back.cutoff(12_900, decay), (None, 12_000));
        // ...and then what stayed free for `decay` ms goes back.
        let later = DecayClock { last_tick_ms: 12_900, resumed_ms: 12_000 };
        assert_eq!(later.cutoff(13_000, decay), (Some(12_000), 12_000));
        // A gap of exactly the decay time is no pause.
        let steady = DecayClock { last_tick_ms: 12_000, resumed_ms: 0 };
        assert_eq!(steady.cutoff(13_000, decay), (Some(12_000), 0));
    }
}
