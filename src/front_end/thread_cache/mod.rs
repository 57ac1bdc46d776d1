//! Thread caches: one free list per size class per thread, so that most allocations and frees
//! touch no lock and no shared cache line.
//!
//! The fast path ([`alloc`], [`dealloc`]) pops or pushes the thread's list for a class and
//! counts: nothing more. Each list keeps `room`, the number of objects it may still take
//! before it is too long (`room = max_len - len`); `dealloc` pushes and decrements `room`, and
//! only when `room` goes negative does it leave the fast path. `alloc` leaves it only when the
//! list is empty. Both slow paths move whole batches to or from the central free list.
//!
//! Limits, as in tcmalloc:
//! - **slow start**: a list's `max_len` starts at 0 and doubles per miss (from 1) up to the
//!   class's batch size, then grows by a batch at a time up to [`MAX_LIST_LENGTH`](crate::config::MAX_LIST_LENGTH) objects and
//!   [`MAX_LIST_BYTES`](crate::config::MAX_LIST_BYTES) bytes (but at least a batch);
//! - **overages**: a list that keeps overflowing at a `max_len` above the batch size shrinks by
//!   a batch after [`MAX_LIST_OVERAGES`](crate::config::MAX_LIST_OVERAGES) overflows;
//! - **budget**: `Σ max_len × size` over a thread's lists stays within its budget, a share of
//!   the total cap for all threads ([`TOTAL_THREAD_CACHE_BYTES`](crate::config::TOTAL_THREAD_CACHE_BYTES)); a list that wants to grow
//!   past it first shrinks the other lists, a quarter at a time, in turn;
//! - **idle lists shrink**: every [`SCAVENGE_INTERVAL`](scavenge::SCAVENGE_INTERVAL) slow-path events, each list that had no
//!   slow-path event since the last scavenge and has the same length as then (so it was most
//!   likely not used on the fast path either) gives back half its objects and limit;
//! - **total cap**: the caches publish their sizes (at slow-path events) to a process-wide
//!   total; when it exceeds the cap, a trim generation starts and each thread halves its lists
//!   at its next slow-path check. A thread that never calls the allocator again keeps its cache
//!   (at most its budget) until it exits: the fast path takes no lock, so no other thread may
//!   touch its lists.
//!
//! Life cycle. A thread's cache is a `const`-initialised thread-local with no destructor, so
//! the fast path reaches it with a plain TLS address. Its state starts `Uninit` with every
//! list empty and every `room` zero, which sends the first `alloc` and `dealloc` of each class
//! to the slow path; there the cache activates: it registers a thread-exit destructor (on
//! glibc with `__cxa_thread_atexit_impl`, as Rust's and C++'s thread-locals do; elsewhere a
//! second thread-local, with `Drop`) and joins the registry. Registering may call back into
//! the allocator (glibc records the destructor with `calloc`); during that the state is
//! `Initializing`, and re-entrant calls are served straight from the central lists. When the
//! thread exits, the destructor returns every cached object to its span (not to the transfer
//! caches: see `central_free_list::flush_exiting`) and marks the cache `Dead`; any later use
//! (other thread-local destructors) goes to the central lists too.
//!
//! One file per mechanism:
//! - `mod.rs` (this file): the [`ThreadCache`] struct, its invariants and its list lengths;
//! - `tls.rs`: how a thread reaches its cache (a `const` thread-local, or in the preloadable
//!   library an initial-exec `.tbss` symbol);
//! - `fast_path.rs`: the size-to-list tables, pop and push, C `free`'s checked push and the
//!   slow paths they leave by;
//! - `limits.rs`: slow start, overages and the per-list limits; moving objects to and from
//!   the central lists;
//! - `budget.rs`: the thread's budget, the cap on all caches, trim generations and the
//!   published sizes;
//! - `scavenge.rs`: idle lists shrink;
//! - `registry.rs`: the life cycle (activation, the exit guard, retirement), the registry of
//!   caches and what other threads and the fork handlers read from it.
//!
//! Entry points (re-exported by `front_end`): [`alloc`], [`dealloc`] and their by-size and C
//! forms (fast), [`cached_bytes`], [`live_threads`], [`flush_current`], [`check_current`], the
//! fork handlers' [`registry_lock`] and [`forget_other_threads_after_fork`].
//! Layers below: `release` (its tick runs from the slow paths), `central_free_list`,
//! `transfer_cache` (the shard of a thread).

mod budget;
mod fast_path;
mod limits;
mod registry;
mod scavenge;
mod tls;

pub use budget::set_total_budget;
#[cfg(feature = "override")]
pub use fast_path::alloc_small_c_or;
pub use fast_path::{
    abort_if_cached, alloc, alloc_medium, alloc_small, alloc_small_c, dealloc, dealloc_checked,
    dealloc_medium, dealloc_small, FAST_LIMIT,
};
pub use registry::{
    cached_bytes, flush_current, forget_other_threads_after_fork, live_threads, registry_lock,
};

use crate::diag::{invariant, invariant_eq};
use crate::free_list::{self, FreeObject};
use crate::size_class::{SizeClass, NUM_CLASSES};
use core::ptr;
use core::sync::atomic::AtomicUsize;
use limits::list_limit;
use tls::cache;

/// The part of a list the fast path touches: 16 bytes, so a class index scales to it with
/// one shift.
#[repr(C, align(16))]
struct HotList {
    /// Free objects, most recently freed first.
    head: *mut FreeObject,
    /// Objects the list may still take: `max_len - len`. Negative only transiently, between
    /// the push in `dealloc` and its slow path.
    room: i32,
}

/// The rest of a list's state, touched only on slow paths.
#[derive(Clone, Copy)]
struct ListLimits {
    max_len: u32,
    overages: u32,
    /// Slow-path events since the last scavenge.
    events: u32,
    /// The length last published to `published_bytes`.
    published_len: u32,
    /// The length at the last scavenge.
    scavenged_len: u32,
}

impl ListLimits {
    const EMPTY: ListLimits =
        ListLimits { max_len: 0, overages: 0, events: 0, published_len: 0, scavenged_len: 0 };
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum State {
    Uninit = 0,
    Initializing,
    Active,
    Dead,
}

/// One thread's cache.
///
/// Invariants (checked by [`ThreadCache::check_invariants`], for an `Active` cache):
/// - `len(c) = count(hot[c].head)` and `hot[c].room == limits[c].max_len - len(c) >= 0`;
/// - `limits[c].max_len <= list_limit(c)` (at most `MAX_LIST_LENGTH` objects and
///   `MAX_LIST_BYTES` bytes, or a batch);
/// - `capacity == Σ_c limits[c].max_len × size(c)` and `capacity <= budget` except that a
///   list never shrinks below its batch size to meet the budget;
/// - the cache is on the registry iff `state == Active`.
///
/// When not `Active`, every list is empty with `room == 0` (between slow paths).
#[repr(C)]
pub struct ThreadCache {
    /// The key the lists' links are encoded with (`free_list`): 0 until the cache activates,
    /// then the process's key, read here on the fast path instead of from a static (which a
    /// program linking tcalloc reaches through its GOT: two loads instead of one). First, so
    /// that it shares a cache line with the lists of the smallest classes.
    key: usize,
    /// [`free_list::LINK_MASK`]: the fast path's check of a link (no bit of it set in a valid
    /// one). 0 until the cache activates, so that the cache is all zeros (`.tbss`); an
    /// `Uninit` cache's lists are empty, so its pops never read it, and its first `free` takes
    /// the double-free search (every word passes for a link) before the push that activates
    /// it. It never changes after that.
    link_mask: usize,
    hot: [HotList; NUM_CLASSES],
    limits: [ListLimits; NUM_CLASSES],
    state: State,
    capacity: usize,
    budget: usize,
    events: u32,
    /// The transfer-cache shard this thread flushes to and refills from where its CPU cannot
    /// be read (see [`ThreadCache::current_shard`]).
    shard: usize,
    /// The last trim generation this cache acted on.
    trim_seen: u64,
    /// Bit `c` is set iff class `c`'s list has a non-zero limit.
    active: u128,
    /// Where `make_room` starts shrinking next.
    room_cursor: u32,
    /// Overflows in a row whose batches were scattered, with no refill between them: from
    /// [`SCATTERED_STREAK`](limits::SCATTERED_STREAK) on, lists nearly full give batches back
    /// beside the next overflow ([`ThreadCache::release_with_nearly_full`]).
    scattered_streak: u32,
    /// Registry links.
    next: *mut ThreadCache,
    prev: *mut ThreadCache,
    /// Bytes cached, as of each list's last slow-path event; read by other threads.
    published_bytes: AtomicUsize,
}

impl ThreadCache {
    #[allow(dead_code)] // the preloadable library's cache starts as zeroed `.tbss` instead
    const fn new() -> ThreadCache {
        ThreadCache {
            hot: [const { HotList { head: ptr::null_mut(), room: 0 } }; NUM_CLASSES],
            limits: [ListLimits::EMPTY; NUM_CLASSES],
            state: State::Uninit,
            capacity: 0,
            budget: 0,
            events: 0,
            shard: 0,
            trim_seen: 0,
            active: 0,
            room_cursor: 0,
            scattered_streak: 0,
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            published_bytes: AtomicUsize::new(0),
            key: 0,
            link_mask: 0,
        }
    }

    /// Whether every field of this cache is zero: a new cache is, so that the preloadable
    /// library's cache can start as `.tbss` (zeroed) memory.
    #[allow(dead_code)]
    const fn is_zero(&self) -> bool {
        let mut c = 0;
        while c < NUM_CLASSES {
            let (hot, limits) = (&self.hot[c], &self.limits[c]);
            if !hot.head.is_null() || hot.room != 0 {
                return false;
            }
            if limits.max_len != 0 || limits.overages != 0 || limits.events != 0 {
                return false;
            }
            if limits.published_len != 0 || limits.scavenged_len != 0 {
                return false;
            }
            c += 1;
        }
        self.key == 0
            && self.link_mask == 0
            && self.state as u8 == 0
            && self.capacity == 0
            && self.budget == 0
            && self.events == 0
            && self.shard == 0
            && self.trim_seen == 0
            && self.active == 0
            && self.room_cursor == 0
            && self.scattered_streak == 0
            && self.next.is_null()
            && self.prev.is_null()
            // SAFETY: a plain read of an atomic nobody else can see yet.
            && unsafe { *self.published_bytes.as_ptr() } == 0
    }

    /// Whether the list of `class` holds `object` (a walk of the list: for double-free checks).
    fn list_holds(&self, class: SizeClass, object: *mut u8) -> bool {
        let mut p = self.hot[class.index()].head;
        while !p.is_null() {
            if p.cast() == object {
                return true;
            }
            // SAFETY: the list is this thread's and well formed, encoded with `key`.
            p = unsafe { free_list::next_keyed(p, self.key) };
        }
        false
    }

    /// The shard of the transfer caches and central lists that this thread's next refill or
    /// flush uses: the one of the CPU it runs on. A batch flushed on a CPU then goes to the
    /// next refill on that CPU, whichever thread makes it, with its objects still in that
    /// CPU's caches; threads running on different CPUs at the same time use different shards.
    /// (With a shard fixed per thread, a producer and its consumer on different shards met
    /// only through another shard's lock or the span lists: xmalloc-test's allocating and
    /// freeing threads did so in about half of the runs, depending on the order in which their
    /// caches activated.) Where the CPU cannot be read cheaply (no vDSO `getcpu`), the shard
    /// the thread was given when its cache activated.
    #[inline]
    fn current_shard(&self) -> usize {
        crate::os::current_cpu().map_or(self.shard, crate::transfer_cache::shard_index)
    }

    /// Number of objects on the list of `class`.
    #[inline]
    fn len(&self, class: SizeClass) -> usize {
        let i = class.index();
        (self.limits[i].max_len as i64 - self.hot[i].room as i64) as usize
    }

    /// Exact bytes cached by this (the calling thread's) cache.
    fn exact_bytes(&self) -> usize {
        if self.state != State::Active {
            return 0;
        }
        SizeClass::all().map(|c| self.len(c) * c.size()).sum()
    }

    /// Checks the invariants on the struct; aborts with the offending values.
    pub fn check_invariants(&self) {
        if self.state != State::Active {
            for class in SizeClass::all() {
                let list = &self.hot[class.index()];
                invariant!(list.head.is_null() && list.room == 0, "inactive cache holds objects");
            }
            return;
        }
        let mut capacity = 0;
        for class in SizeClass::all() {
            let i = class.index();
            // SAFETY: the list is well formed.
            let counted = unsafe { free_list::count(self.hot[i].head) };
            let limits = &self.limits[i];
            invariant!(self.hot[i].room >= 0, "class {i}: room {}", self.hot[i].room);
            invariant_eq!(
                counted,
                self.len(class),
                "class {i}: {counted} objects, max_len {} room {}",
                limits.max_len,
                self.hot[i].room
            );
            invariant!(
                limits.max_len <= list_limit(class),
                "class {i}: max_len {}",
                limits.max_len
            );
            invariant_eq!(self.active >> i & 1 == 1, limits.max_len > 0, "active bit of class {i}");
            capacity += limits.max_len as usize * class.size();
        }
        invariant_eq!(capacity, self.capacity, "capacity");
    }
}

/// Checks the calling thread's cache.
pub fn check_current() {
    // SAFETY: our own cache, read on our own thread outside any fast path.
    unsafe { (*cache()).check_invariants() }
}

#[cfg(test)]
mod tests;
