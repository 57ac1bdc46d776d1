//! Statistics: a `Copy` snapshot of where the allocator's bytes are, and its report.
//!
//! [`stats`] walks every layer once (each under its own lock, one at a time) and never
//! allocates, so it may be called from anywhere, including a `malloc` replacement's
//! diagnostics. The figures are exact for the calling thread's cache and for every shared
//! structure; other threads' caches are counted as of each list's last slow-path event.
//!
//! Sizes are block sizes: a 100-byte request occupies a 104-byte class object, and counts as
//! 104 bytes in use.
//!
//! Lock statistics ([`LockFamilies`]) sum the counters that every allocator lock keeps (see
//! `sync`) over each family of locks: how often the locks were taken, and how often a thread
//! found one held and had to wait. They are read before the snapshot takes any lock, so a
//! snapshot does not count its own acquisitions (a later one does: about two per class and
//! shard).
//!
//! Layers read: `router` (bytes in page runs), `front_end`, `central_free_list`,
//! `transfer_cache` (lock counters), `page_heap`, `large`, `metadata`, `release` (the policy's
//! clock), `os` (resident memory).

use crate::central_free_list;
use crate::config::MAX_SHARDS;
use crate::front_end;
use crate::large;
use crate::metadata;
use crate::os;
use crate::page_heap::PAGE_HEAP;
use crate::router::PAGE_RUN_BYTES;
use crate::size_class::{SizeClass, NUM_CLASSES};
use crate::sync::LockStats;
use crate::transfer_cache;
use core::fmt;
use core::sync::atomic::Ordering::Relaxed;

/// Figures of one size class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Bytes per object.
    pub size: usize,
    /// Spans the class owns.
    pub spans: usize,
    /// Objects handed out of the central list: in use by the program or in thread caches.
    pub objects_out: usize,
    /// Objects free in the central list (transfer cache and spans, carved or not).
    pub central_free_objects: usize,
    /// Acquisitions of the class's central-list and transfer-cache locks (all shards) that
    /// had to wait: the class's share of `LockFamilies::central_lists.contended +
    /// transfer_caches.contended`.
    pub lock_contended: u64,
}

/// The allocator's locks by family, each with the sum of its locks' counters
/// ([`LockStats`]: acquisitions, contended acquisitions, and those that slept). The
/// allocation fast path takes no lock; these are the slow paths that move batches, spans and
/// mappings. Counted since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockFamilies {
    /// The central lists' span locks, one per size class and shard: refills that find no
    /// batch in the transfer caches, flushes of objects back to their spans, carving spans.
    pub central_lists: LockStats,
    /// The transfer caches, one lock per size class and shard: whole batches handed between
    /// threads' caches on refill and flush.
    pub transfer_caches: LockStats,
    /// The page heap's one lock: spans for the central lists, page runs, releasing pages.
    pub page_heap: LockStats,
    /// The large blocks' two locks: the cache of freed mappings, and the one that serialises
    /// moving a large block to a new mapping.
    pub large_blocks: LockStats,
    /// The registry of thread caches: a thread's first allocation and its exit, statistics,
    /// the total cap on thread caches.
    pub thread_registry: LockStats,
    /// The metadata arena: span records and page-map leaves.
    pub metadata: LockStats,
}

impl LockFamilies {
    /// Every family with its name as the report prints it, in the order of the fields.
    pub fn named(&self) -> [(&'static str, LockStats); 6] {
        [
            ("central lists", self.central_lists),
            ("transfer caches", self.transfer_caches),
            ("page heap", self.page_heap),
            ("large blocks", self.large_blocks),
            ("thread registry", self.thread_registry),
            ("metadata", self.metadata),
        ]
    }

    /// The sum over every family.
    pub fn total(&self) -> LockStats {
        let mut total = LockStats::default();
        for (_, family) in self.named() {
            total += family;
        }
        total
    }
}

/// Reads every lock's counters, by family and per class (central lists and transfer caches
/// together). Takes no lock.
fn lock_stats() -> (LockFamilies, [u64; NUM_CLASSES]) {
    let mut per_class = [0u64; NUM_CLASSES];
    // Both modules list their locks by class from class 1, then by shard.
    let by_class = |(i, lock): (usize, &crate::sync::RawLock)| (1 + i / MAX_SHARDS, lock.stats());
    let mut central_lists = LockStats::default();
    for (class, s) in central_free_list::locks().enumerate().map(by_class) {
        central_lists += s;
        per_class[class % NUM_CLASSES] += s.contended;
    }
    let mut transfer_caches = LockStats::default();
    for (class, s) in transfer_cache::locks().enumerate().map(by_class) {
        transfer_caches += s;
        per_class[class % NUM_CLASSES] += s.contended;
    }
    let families = LockFamilies {
        central_lists,
        transfer_caches,
        page_heap: PAGE_HEAP.raw().stats(),
        large_blocks: LockStats::sum(large::locks_for_fork()),
        thread_registry: front_end::registry_lock().stats(),
        metadata: metadata::lock_for_fork().stats(),
    };
    (families, per_class)
}

/// A snapshot of the allocator's memory.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// Bytes in blocks the program holds (class objects, page runs, large mappings).
    pub allocated_bytes: usize,
    /// Bytes of free objects held in thread caches.
    pub thread_cache_bytes: usize,
    /// Bytes of free objects in the central lists (transfer caches and span free lists,
    /// including parts of spans never carved into objects).
    pub central_cache_bytes: usize,
    /// The part of `central_cache_bytes` in whole batches parked in the transfer caches.
    pub transfer_cache_bytes: usize,
    /// The cap on `transfer_cache_bytes` (`TCALLOC_MAX_TRANSFER_CACHE_BYTES`).
    pub transfer_cache_limit_bytes: usize,
    /// Bytes mapped for the page heap.
    pub page_heap_bytes: usize,
    /// Bytes in free page-heap spans still backed by memory.
    pub page_heap_free_bytes: usize,
    /// Bytes in free page-heap spans given back to the OS (or never touched).
    pub released_bytes: usize,
    /// Bytes mapped for large blocks in use.
    pub large_bytes: usize,
    /// Large blocks in use.
    pub large_blocks: usize,
    /// Bytes of freed large mappings kept for reuse.
    pub large_cache_bytes: usize,
    /// Address space reserved for the page heap's arena (no memory: see the README's "How it
    /// is built"); 0 if the process could not reserve it, and then every C `free` takes the
    /// slower path.
    pub arena_reserved_bytes: usize,
    /// Bytes of the arena the page heap has taken (its chunks beyond are mapped elsewhere).
    pub arena_used_bytes: usize,
    /// Bytes mapped for the allocator's own metadata.
    pub metadata_bytes: usize,
    /// Span records in use (one per span of pages and per large block).
    pub span_records: usize,
    /// Threads with an active cache.
    pub threads: usize,
    /// Resident memory of the whole process (from `/proc/self/statm`), 0 if unknown.
    pub process_resident_bytes: usize,
    /// How often each family of the allocator's locks was taken, and how often a thread had
    /// to wait for one.
    pub locks: LockFamilies,
    /// Per size class; entry 0 is unused.
    pub classes: [ClassStats; NUM_CLASSES],
}

/// Takes a snapshot. Does not allocate.
pub fn stats() -> Stats {
    let (locks, class_contended) = lock_stats();
    let mut classes = [ClassStats::default(); NUM_CLASSES];
    let mut objects_out_bytes = 0;
    let mut central_bytes = 0;
    for class in SizeClass::all() {
        let s = central_free_list::stats(class);
        let capacity = s.spans * class.info().objects as usize;
        let free = s.transfer_objects + s.span_free_objects;
        // Objects borrowed by a smaller class sit in its caches but belong to this class's
        // spans, so the difference is a close estimate and can even dip below zero.
        let out = capacity.saturating_sub(free);
        classes[class.index()] = ClassStats {
            size: class.size(),
            spans: s.spans,
            objects_out: out,
            central_free_objects: free,
            lock_contended: class_contended[class.index()],
        };
        objects_out_bytes += out * class.size();
        central_bytes += free * class.size();
    }
    let thread_cache_bytes = front_end::cached_bytes();
    let heap = PAGE_HEAP.lock().stats();
    let large = large::stats();
    let page_runs = PAGE_RUN_BYTES.load(Relaxed);
    let metadata = metadata::stats();
    Stats {
        arena_reserved_bytes: heap.arena_reserved_bytes,
        arena_used_bytes: heap.arena_used_bytes,
        allocated_bytes: (objects_out_bytes + page_runs + large.mapped_bytes)
            .saturating_sub(thread_cache_bytes),
        thread_cache_bytes,
        central_cache_bytes: central_bytes,
        transfer_cache_bytes: transfer_cache::held_bytes(),
        transfer_cache_limit_bytes: transfer_cache::capacity(),
        page_heap_bytes: heap.system_bytes,
        page_heap_free_bytes: heap.free_bytes,
        released_bytes: heap.returned_bytes,
        large_bytes: large.mapped_bytes,
        large_blocks: large.blocks,
        large_cache_bytes: large.cached_bytes,
        metadata_bytes: metadata.mapped_bytes,
        span_records: metadata.live_spans,
        threads: front_end::live_threads(),
        process_resident_bytes: os::resident_bytes().unwrap_or(0),
        locks,
        classes,
    }
}

impl Stats {
    /// Bytes the allocator holds from the OS that are backed by memory: everything mapped
    /// minus what was released.
    pub fn mapped_bytes(&self) -> usize {
        self.page_heap_bytes + self.large_bytes + self.large_cache_bytes + self.metadata_bytes
    }

    /// Bytes the allocator holds that the program does not: caches, free pages, metadata.
    pub fn overhead_bytes(&self) -> usize {
        self.thread_cache_bytes
            + self.central_cache_bytes
            + self.page_heap_free_bytes
            + self.large_cache_bytes
            + self.metadata_bytes
    }
}

struct Bytes(usize);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        if self.0 >= 1 << 30 {
            write!(f, "{:>9.2} GiB", b / (1u64 << 30) as f64)
        } else if self.0 >= 1 << 20 {
            write!(f, "{:>9.2} MiB", b / (1u64 << 20) as f64)
        } else if self.0 >= 1 << 10 {
            write!(f, "{:>9.2} KiB", b / 1024.0)
        } else {
            write!(f, "{:>9}   B", self.0)
        }
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "------------------------------------------------ tcalloc")?;
        let rows = [
            ("in use by the program", self.allocated_bytes),
            ("free in thread caches", self.thread_cache_bytes),
            ("free in central lists", self.central_cache_bytes),
            ("  in transfer caches", self.transfer_cache_bytes),
            ("  transfer cache cap", self.transfer_cache_limit_bytes),
            ("free in page heap", self.page_heap_free_bytes),
            ("released to the OS", self.released_bytes),
            ("large blocks in use", self.large_bytes),
            ("large mappings cached", self.large_cache_bytes),
            ("metadata", self.metadata_bytes),
            ("page heap mapped", self.page_heap_bytes),
            ("process resident", self.process_resident_bytes),
        ];
        for (name, bytes) in rows {
            writeln!(f, "{name:<24}{}", Bytes(bytes))?;
        }
        writeln!(f, "{:<24}{}", "arena reserved", Bytes(self.arena_reserved_bytes))?;
        writeln!(f, "{:<24}{}", "arena used", Bytes(self.arena_used_bytes))?;
        writeln!(f, "{:<24}{:>13}", "large blocks", self.large_blocks)?;
        writeln!(f, "{:<24}{:>13}", "span records", self.span_records)?;
        writeln!(f, "{:<24}{:>13}", "threads with a cache", self.threads)?;
        writeln!(f, "locks              acquisitions     contended         slept")?;
        let total = self.locks.total();
        for (name, l) in self.locks.named().into_iter().chain([("all", total)]) {
            writeln!(f, "{name:<16}{:>15}{:>14}{:>14}", l.acquisitions, l.contended, l.slept)?;
        }
        writeln!(f, "class      size   spans   objects out   central free   contended")?;
        for class in SizeClass::all() {
            let c = &self.classes[class.index()];
            if c.spans == 0 && c.objects_out == 0 && c.lock_contended == 0 {
                continue;
            }
            writeln!(
                f,
                "{:>5} {:>9} {:>7} {:>13} {:>14} {:>11}",
                class.index(),
                c.size,
                c.spans,
                c.objects_out,
                c.central_free_objects,
                c.lock_contended
            )?;
        }
        write!(f, "--------------------------------------------------------")
    }
}

/// Checks the invariants of every shared structure and of the calling thread's cache;
/// aborts with the offending values (see `diag::invariant!`). Takes each lock in turn.
pub fn check_invariants() {
    crate::front_end::check_current();
    for class in SizeClass::all() {
        central_free_list::check_invariants(class);
    }
    PAGE_HEAP.lock().check_invariants();
    metadata::check_invariants();
}

/// Writes the report to standard error without allocating.
pub fn print_to_stderr() {
    use core::fmt::Write as _;
    let snapshot = stats();
    let mut buf = crate::diag::StackBuf::<16384>::new();
    let _ = writeln!(buf, "{snapshot}");
    crate::diag::write_stderr(buf.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_prints_every_section() {
        let text = stats().to_string();
        for needle in
            ["in use by the program", "released to the OS", "metadata", "class", "contended"]
        {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
