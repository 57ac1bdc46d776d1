//! The release policy: when free memory goes back to the OS, with no background thread.
//!
//! Three mechanisms, from fastest to slowest:
//!
//! 1. **Reserve** (page heap, at every free): at most `reserve` bytes of free pages stay
//!    backed; pages freed beyond that are given back at once (`MADV_DONTNEED`), biggest spans
//!    first. After a program frees a large peak, resident memory falls while it frees, without
//!    waiting for a timer. The reserve adapts: when released pages are reused within the
//!    decay time (the program frees and reallocates in rounds), it grows by what was reused,
//!    so such a program does not fault its memory in again and again; without reuse for the
//!    decay time it shrinks back.
//! 2. **Decay** (on a tick): batches idle in the central transfer caches for about `decay` ms
//!    return to their spans; free pages idle for `decay` ms, and cached large mappings idle as
//!    long, go back to the OS. The tick runs from allocator slow paths (thread-cache refills and
//!    flushes), at most every [`TICK_MS`].
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
/// `decay` in ms, or `u64::MAX` when automatic release is off.
static DECAY_MS: AtomicU64 = AtomicU64::new(1000);

/// Applies the settings (at start-up).
pub fn configure(settings: &Settings) {
    let reserve = settings.effective_reserve_bytes();
    let pages = if reserve == usize::MAX { usize::MAX } else { reserve / crate::config::PAGE_SIZE };
    let decay = settings.effective_decay_ms().unwrap_or(u64::MAX);
    PAGE_HEAP.lock().set_policy(Length(pages), decay);
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
    large::decay(now);
    // Batches idle in a transfer cache for about the decay time go back to their spans (so
    // emptied spans reach the page heap), then idle free pages go back to the OS.
    let epoch = transfer_cache::advance_epoch();
    let idle_epochs = (decay / TICK_MS).max(1);
    central_free_list::drain_idle(epoch.saturating_sub(idle_epochs));
    if let Some(mut heap) = PAGE_HEAP.try_lock() {
        heap.release_older_than(now.saturating_sub(decay));
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
