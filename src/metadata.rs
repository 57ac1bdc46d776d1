//! The metadata arena: where the allocator's own records live.
//!
//! Nothing inside tcalloc may allocate through the global allocator, so its records come from
//! here: a bump allocator over regions mapped by `os`, with a free list per record kind for
//! reuse. Two kinds exist: span records, and [`BLOCK_BYTES`] blocks (the transfer caches'
//! chunks). Metadata is never returned to the OS; the page map's leaves are mapped by the page
//! map itself and counted here too.
//!
//! Entry points: [`new_span`], [`delete_span`], [`new_block`], [`delete_block`],
//! [`account_mapped`], [`stats`]. Layer below: `os`.

use crate::diag::{invariant, invariant_eq};
use crate::os;
use crate::span::{Span, SpanKind};
use crate::sync::Lock;
use core::mem::{align_of, size_of};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Bytes mapped at a time for records.
const CHUNK_BYTES: usize = 256 << 10;

/// Size (and alignment) of the blocks of [`new_block`].
pub const BLOCK_BYTES: usize = 2048;

/// The arena.
///
/// Invariants: `bump <= end`; `[bump, end)` is mapped and unused; every record on
/// `free_spans` has kind `Unused`; `live_spans` counts records handed out and not deleted;
/// `free_blocks` links unused blocks through their first word.
struct Arena {
    bump: usize,
    end: usize,
    free_spans: *mut Span,
    live_spans: usize,
    free_blocks: *mut usize,
}

impl Arena {
    /// Carves `size` bytes aligned to `align` from the bump region, mapping more if needed.
    fn carve(&mut self, size: usize, align: usize) -> *mut u8 {
        let mut at = (self.bump + align - 1) & !(align - 1);
        if self.bump == 0 || at + size > self.end {
            let Some(chunk) = os::map(CHUNK_BYTES) else {
                return ptr::null_mut();
            };
            MAPPED.fetch_add(CHUNK_BYTES, Relaxed);
            self.bump = chunk.as_ptr() as usize;
            self.end = self.bump + CHUNK_BYTES;
            at = (self.bump + align - 1) & !(align - 1);
        }
        self.bump = at + size;
        at as *mut u8
    }
}

// SAFETY: the raw pointers only name metadata memory, which any thread may use under the lock.
unsafe impl Send for Arena {}

static ARENA: Lock<Arena> = Lock::new(Arena {
    bump: 0,
    end: 0,
    free_spans: ptr::null_mut(),
    live_spans: 0,
    free_blocks: ptr::null_mut(),
});

/// Bytes mapped for metadata of every kind (records and page-map leaves).
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// Records `bytes` of metadata mapped outside the arena (page-map leaves).
pub fn account_mapped(bytes: usize) {
    MAPPED.fetch_add(bytes, Relaxed);
}

/// A fresh span record (kind `Unused`, all fields zero), or null when out of memory.
pub fn new_span() -> *mut Span {
    let mut arena = ARENA.lock();
    let span = if !arena.free_spans.is_null() {
        let span = arena.free_spans;
        // SAFETY: records on the free list are valid; `next` links the list. A stale
        // page-map entry may lead a lock-free reader here, so the record is reset field by
        // field, never overwritten whole.
        unsafe {
            arena.free_spans = (*span).next;
            (*span).reset();
        }
        span
    } else {
        let span = arena.carve(size_of::<Span>(), align_of::<Span>()).cast::<Span>();
        if span.is_null() {
            return span;
        }
        // SAFETY: a fresh, aligned, writable slot of the arena that nothing knows yet.
        unsafe { span.write(Span::empty()) };
        span
    };
    arena.live_spans += 1;
    span
}

/// Returns a record to the arena.
///
/// # Safety
/// - `span` came from [`new_span`], is on no list, and nothing will use it again (the page map
///   may still point to it; readers tolerate that, see `span`).
pub unsafe fn delete_span(span: *mut Span) {
    let mut arena = ARENA.lock();
    // SAFETY: the caller hands the record back; it is valid until we reuse it.
    unsafe {
        (*span).set_kind(SpanKind::Unused);
        (*span).set_class_index(0);
        (*span).next = arena.free_spans;
    }
    arena.free_spans = span;
    arena.live_spans -= 1;
}

/// A zeroed-or-reused block of [`BLOCK_BYTES`] bytes, aligned to its size; null when out of
/// memory.
pub fn new_block() -> *mut u8 {
    let mut arena = ARENA.lock();
    if !arena.free_blocks.is_null() {
        let block = arena.free_blocks;
        // SAFETY: free blocks are valid and link the list through their first word.
        arena.free_blocks = unsafe { *block } as *mut usize;
        return block.cast();
    }
    arena.carve(BLOCK_BYTES, BLOCK_BYTES)
}

/// Returns a block to the arena.
///
/// # Safety
/// - `block` came from [`new_block`] and nothing will use it again.
pub unsafe fn delete_block(block: *mut u8) {
    let mut arena = ARENA.lock();
    let block = block.cast::<usize>();
    // SAFETY: the caller hands the block back; its first word is ours to link with.
    unsafe { *block = arena.free_blocks as usize };
    arena.free_blocks = block;
}

/// Metadata figures.
#[derive(Clone, Copy, Debug, Default)]
pub struct MetadataStats {
    /// Bytes mapped for metadata.
    pub mapped_bytes: usize,
    /// Span records in use.
    pub live_spans: usize,
}

pub fn stats() -> MetadataStats {
    let live_spans = ARENA.lock().live_spans;
    MetadataStats { mapped_bytes: MAPPED.load(Relaxed), live_spans }
}

/// The arena's lock, for the fork handlers.
pub fn lock_for_fork() -> &'static crate::sync::RawLock {
    ARENA.raw()
}

/// Checks the arena's invariants (free records are unused and distinct from the bump region).
pub fn check_invariants() {
    let arena = ARENA.lock();
    invariant!(arena.bump <= arena.end, "arena.bump <= arena.end");
    let mut span = arena.free_spans;
    let mut free = 0usize;
    while !span.is_null() {
        // SAFETY: free-list records are valid.
        unsafe {
            invariant_eq!((*span).kind(), SpanKind::Unused, "mismatch");
            span = (*span).next;
        }
        free += 1;
        invariant!(free <= 1 << 40, "cycle in the span free list");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_reused() {
        let a = new_span();
        let b = new_span();
        assert!(!a.is_null() && !b.is_null() && a != b);
        // SAFETY: `b` came from new_span and is unused.
        unsafe { delete_span(b) };
        check_invariants();
        let c = new_span();
        // Another test thread may take `b` first; either way the record is fresh.
        // SAFETY: `c` is a fresh record.
        assert_eq!(unsafe { (*c).kind() }, SpanKind::Unused);
        // SAFETY: both came from new_span.
        unsafe {
            delete_span(a);
            delete_span(c);
        }
        assert!(stats().mapped_bytes >= CHUNK_BYTES);
    }
}
