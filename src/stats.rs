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
//! Layers read: `thread_cache`, `central_free_list`, `page_heap`, `large`, `metadata`,
//! `release` (the policy's clock), `os` (resident memory).

use crate::central_free_list;
use crate::large;
use crate::metadata;
use crate::os;
use crate::page_heap::PAGE_HEAP;
use crate::size_class::{SizeClass, NUM_CLASSES};
use crate::thread_cache;
use core::fmt;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Bytes in page runs (over-aligned blocks served as whole pages), kept by `router`.
pub static PAGE_RUN_BYTES: AtomicUsize = AtomicUsize::new(0);

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
    /// Bytes mapped for the allocator's own metadata.
    pub metadata_bytes: usize,
    /// Span records in use (one per span of pages and per large block).
    pub span_records: usize,
    /// Threads with an active cache.
    pub threads: usize,
    /// Resident memory of the whole process (from `/proc/self/statm`), 0 if unknown.
    pub process_resident_bytes: usize,
    /// Per size class; entry 0 is unused.
    pub classes: [ClassStats; NUM_CLASSES],
}

/// Takes a snapshot. Does not allocate.
pub fn stats() -> Stats {
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
        };
        objects_out_bytes += out * class.size();
        central_bytes += free * class.size();
    }
    let thread_cache_bytes = thread_cache::cached_bytes();
    let heap = PAGE_HEAP.lock().stats();
    let large = large::stats();
    let page_runs = PAGE_RUN_BYTES.load(Relaxed);
    let metadata = metadata::stats();
    Stats {
        allocated_bytes: (objects_out_bytes + page_runs + large.mapped_bytes)
            .saturating_sub(thread_cache_bytes),
        thread_cache_bytes,
        central_cache_bytes: central_bytes,
        page_heap_bytes: heap.system_bytes,
        page_heap_free_bytes: heap.free_bytes,
        released_bytes: heap.returned_bytes,
        large_bytes: large.mapped_bytes,
        large_blocks: large.blocks,
        large_cache_bytes: large.cached_bytes,
        metadata_bytes: metadata.mapped_bytes,
        span_records: metadata.live_spans,
        threads: thread_cache::live_threads(),
        process_resident_bytes: os::resident_bytes().unwrap_or(0),
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
        writeln!(f, "{:<24}{:>13}", "large blocks", self.large_blocks)?;
        writeln!(f, "{:<24}{:>13}", "span records", self.span_records)?;
        writeln!(f, "{:<24}{:>13}", "threads with a cache", self.threads)?;
        writeln!(f, "class      size   spans   objects out   central free")?;
        for class in SizeClass::all() {
            let c = &self.classes[class.index()];
            if c.spans == 0 && c.objects_out == 0 {
                continue;
            }
            writeln!(
                f,
                "{:>5} {:>9} {:>7} {:>13} {:>14}",
                class.index(),
                c.size,
                c.spans,
                c.objects_out,
                c.central_free_objects
            )?;
        }
        write!(f, "--------------------------------------------------------")
    }
}

/// Checks the invariants of every shared structure and of the calling thread's cache;
/// aborts with the offending values (see `diag::invariant!`). Takes each lock in turn.
pub fn check_invariants() {
    crate::thread_cache::check_current();
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
    let mut buf = crate::diag::StackBuf::<8192>::new();
    let _ = writeln!(buf, "{snapshot}");
    os::write_stderr(buf.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_prints_every_section() {
        let text = stats().to_string();
        for needle in ["in use by the program", "released to the OS", "metadata", "class"] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
    }
}
