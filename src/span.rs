//! Spans: runs of pages, the unit the page heap hands out and the page map points to.
//!
//! A span is described by a [`Span`] record that lives in the metadata arena, never in the
//! pages it describes. The same record type serves every use of a run of pages, told apart by
//! its [`SpanKind`]:
//!
//! | kind | owner | meaning |
//! | --- | --- | --- |
//! | `Free` | page heap | free pages, backed by memory |
//! | `Returned` | page heap | free pages given back to the OS (read as zeros) |
//! | `Small` | central free list of `class` | objects of one size class |
//! | `PageRun` | the program | one over-aligned block served as whole pages |
//! | `Large` | the program | one block mapped directly from the OS (`large`) |
//!
//! `start`, `pages`, `kind` and `class` are atomics because `free(p)` from C reads them through
//! the page map without a lock to validate `p`. They change only under the lock of the span's
//! owner, and a span that holds a live object never changes them, so for a valid pointer the
//! relaxed reads see settled values; for an invalid one they may be stale, which the
//! validation tolerates (it only ever reads metadata, which is never unmapped).

use crate::config::PAGE_SHIFT;
use crate::free_list::FreeObject;
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering::Relaxed};

/// A page number: an address shifted right by `PAGE_SHIFT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageId(pub usize);

impl PageId {
    /// The page that holds `address`.
    #[inline(always)]
    pub fn containing(address: usize) -> PageId {
        PageId(address >> PAGE_SHIFT)
    }

    /// The first address of the page.
    #[inline(always)]
    pub fn address(self) -> usize {
        self.0 << PAGE_SHIFT
    }

    #[inline(always)]
    pub fn add(self, pages: Length) -> PageId {
        PageId(self.0 + pages.0)
    }
}

/// A number of pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Length(pub usize);

impl Length {
    /// Bytes in this many pages.
    #[inline(always)]
    pub fn bytes(self) -> usize {
        self.0 << PAGE_SHIFT
    }

    /// The fewest pages that hold `bytes`.
    #[inline(always)]
    pub fn for_bytes(bytes: usize) -> Length {
        Length(bytes.div_ceil(1 << PAGE_SHIFT))
    }
}

/// What a span is used for; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum SpanKind {
    /// The record is unused (on the metadata free list).
    Unused = 0,
    Free = 1,
    Returned = 2,
    Small = 3,
    PageRun = 4,
    Large = 5,
}

impl SpanKind {
    fn from_u8(v: u8) -> SpanKind {
        match v {
            1 => SpanKind::Free,
            2 => SpanKind::Returned,
            3 => SpanKind::Small,
            4 => SpanKind::PageRun,
            5 => SpanKind::Large,
            _ => SpanKind::Unused,
        }
    }
}

/// The record of one span.
///
/// Invariants:
/// - `kind ∈ {Free, Returned}` iff the span is on exactly one page-heap free list;
///   `kind == Small` and the span has a free object iff it is on its class's `nonempty` list;
///   a span is on at most one list, through `next`/`prev`.
/// - For `Small`: `allocated + count(free_list) + (capacity - carved) == capacity`, where
///   `capacity` is the class's objects per span; objects below `carved` have been on a list
///   or handed out (carving takes whole pages), the rest were never touched.
/// - For `Large`: `[map_base, map_base + map_len)` is the whole OS mapping and the block the
///   program sees starts at `start` (only that page is in the page map).
#[repr(C)]
pub struct Span {
    start: AtomicUsize,
    pages: AtomicUsize,
    kind: AtomicU8,
    class: AtomicU8,
    /// List links (page-heap free list or central `nonempty` list).
    pub next: *mut Span,
    pub prev: *mut Span,
    /// `Small`: free objects returned to this span.
    pub free_list: *mut FreeObject,
    /// `Small`: the last object of `free_list` (meaningless while the list is empty), so that
    /// the whole list can be handed on without walking it.
    pub free_tail: *mut FreeObject,
    /// `Small`: objects handed out and not yet returned to the span.
    pub allocated: u32,
    /// `Small`: objects carved so far (the rest of the span is untouched).
    pub carved: u32,
    /// `Small`: the central-list shard that owns the span (fixed while the span is in use; an
    /// atomic, since the double-free search reads it before it knows the span is in use).
    shard: AtomicU32,
    /// `Large`: the whole OS mapping, and the block handed to the program inside it (`block`
    /// is read without a lock to validate C `free`).
    pub map_base: usize,
    pub map_len: usize,
    block: AtomicUsize,
    /// `Free`/`Returned`: a tick of the page heap's clock when the span was freed.
    pub freed_at: u64,
}

/// Bytes at the start of a record that returning an object to a small span reads and writes
/// (`central_free_list::release_objects`: up to `shard`), which that prefetches: at most two
/// cache lines, since records are 8-aligned.
pub const RELEASE_BYTES: usize = core::mem::offset_of!(Span, shard) + size_of::<AtomicU32>();

impl Span {
    pub const fn empty() -> Span {
        Span {
            start: AtomicUsize::new(0),
            pages: AtomicUsize::new(0),
            kind: AtomicU8::new(SpanKind::Unused as u8),
            class: AtomicU8::new(0),
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            free_list: ptr::null_mut(),
            free_tail: ptr::null_mut(),
            allocated: 0,
            carved: 0,
            shard: AtomicU32::new(0),
            map_base: 0,
            map_len: 0,
            block: AtomicUsize::new(0),
            freed_at: 0,
        }
    }

    /// Resets the record at `this` to describe `pages` pages from `start`, of `kind`.
    ///
    /// The record may be reused: a stale page-map entry can still lead a lock-free reader
    /// (C `free` validating a bad pointer) to it, so the fields such readers see are stored
    /// one by one as atomics, never overwritten as a whole, and no `&mut Span` is made.
    ///
    /// # Safety
    /// - `this` is a record owned by the caller (no other thread writes it meanwhile).
    pub unsafe fn init(this: *mut Span, start: PageId, pages: Length, kind: SpanKind) {
        // SAFETY: per the caller.
        unsafe {
            Span::reset(this);
            (*this).set_start(start);
            (*this).set_pages(pages);
            (*this).set_kind(kind);
        }
    }

    /// Makes the record at `this` `Unused` with every field zero, as [`Span::empty`], field by
    /// field (see [`Span::init`]).
    ///
    /// # Safety
    /// - as for [`Span::init`].
    pub unsafe fn reset(this: *mut Span) {
        // SAFETY: per the caller; the atomics through shared references, the fields that no
        // lock-free reader reads through the raw pointer.
        unsafe {
            let shared = &*this;
            shared.set_kind(SpanKind::Unused);
            shared.set_class_index(0);
            shared.set_start(PageId(0));
            shared.set_pages(Length(0));
            shared.set_block(0);
            (*this).next = ptr::null_mut();
            (*this).prev = ptr::null_mut();
            (*this).free_list = ptr::null_mut();
            (*this).free_tail = ptr::null_mut();
            (*this).allocated = 0;
            (*this).carved = 0;
            shared.set_shard(0);
            (*this).map_base = 0;
            (*this).map_len = 0;
            (*this).freed_at = 0;
        }
    }

    /// `Large`: the address of the block handed to the program.
    #[inline(always)]
    pub fn block(&self) -> usize {
        self.block.load(Relaxed)
    }
    #[inline(always)]
    pub fn set_block(&self, block: usize) {
        self.block.store(block, Relaxed)
    }
    /// `Large`: clears `block` if it still is `block`: of two threads freeing the same block
    /// at once, exactly one succeeds.
    pub fn claim_block(&self, block: usize) -> Result<usize, usize> {
        self.block.compare_exchange(block, 0, core::sync::atomic::Ordering::AcqRel, Relaxed)
    }

    #[inline(always)]
    pub fn start(&self) -> PageId {
        PageId(self.start.load(Relaxed))
    }
    #[inline(always)]
    pub fn set_start(&self, start: PageId) {
        self.start.store(start.0, Relaxed)
    }
    #[inline(always)]
    pub fn pages(&self) -> Length {
        Length(self.pages.load(Relaxed))
    }
    #[inline(always)]
    pub fn set_pages(&self, pages: Length) {
        self.pages.store(pages.0, Relaxed)
    }
    #[inline(always)]
    pub fn kind(&self) -> SpanKind {
        SpanKind::from_u8(self.kind.load(Relaxed))
    }
    #[inline(always)]
    pub fn set_kind(&self, kind: SpanKind) {
        self.kind.store(kind as u8, Relaxed)
    }
    /// Size-class index for `Small` spans, 0 otherwise.
    #[inline(always)]
    pub fn class_index(&self) -> usize {
        self.class.load(Relaxed) as usize
    }
    /// `Small`: the central-list shard that owns the span.
    #[inline(always)]
    pub fn shard(&self) -> usize {
        self.shard.load(Relaxed) as usize
    }
    #[inline(always)]
    pub fn set_shard(&self, shard: usize) {
        self.shard.store(shard as u32, Relaxed)
    }
    #[inline(always)]
    pub fn set_class_index(&self, class: usize) {
        self.class.store(class as u8, Relaxed)
    }

    /// One past the last page.
    #[inline(always)]
    pub fn end(&self) -> PageId {
        self.start().add(self.pages())
    }

    /// First byte of the span.
    #[inline(always)]
    pub fn start_address(&self) -> usize {
        self.start().address()
    }
}

/// A doubly linked list of spans through `Span::next`/`prev`, null-terminated.
///
/// Invariant: `head` is null or a span with `prev == null`; following `next` from `head`
/// visits every span on the list once, and `s.next.prev == s` for each.
pub struct SpanList {
    pub head: *mut Span,
}

impl SpanList {
    pub const fn new() -> SpanList {
        SpanList { head: ptr::null_mut() }
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    /// Puts `span` at the front.
    ///
    /// # Safety
    /// - `span` is a valid record on no list.
    pub unsafe fn push(&mut self, span: *mut Span) {
        // SAFETY: `span` is valid and unlinked; `head`, if any, is a valid list member.
        unsafe {
            (*span).prev = ptr::null_mut();
            (*span).next = self.head;
            if !self.head.is_null() {
                (*self.head).prev = span;
            }
        }
        self.head = span;
    }

    /// Unlinks `span`.
    ///
    /// # Safety
    /// - `span` is on this list.
    pub unsafe fn remove(&mut self, span: *mut Span) {
        // SAFETY: `span` and its neighbours are valid members of this list.
        unsafe {
            let (prev, next) = ((*span).prev, (*span).next);
            if prev.is_null() {
                crate::diag::debug_invariant!(self.head == span);
                self.head = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*span).next = ptr::null_mut();
            (*span).prev = ptr::null_mut();
        }
    }

    /// Iterates over the spans (the list must not change meanwhile).
    pub fn iter(&self) -> SpanIter {
        SpanIter { next: self.head }
    }
}

impl Default for SpanList {
    fn default() -> Self {
        Self::new()
    }
}

pub struct SpanIter {
    next: *mut Span,
}

impl Iterator for SpanIter {
    type Item = *mut Span;
    fn next(&mut self) -> Option<*mut Span> {
        if self.next.is_null() {
            return None;
        }
        let span = self.next;
        // SAFETY: list members are valid records (SpanList invariant).
        self.next = unsafe { (*span).next };
        Some(span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_push_remove() {
        let mut spans: Vec<Span> = (0..4).map(|_| Span::empty()).collect();
        let ptrs: Vec<*mut Span> = spans.iter_mut().map(|s| s as *mut Span).collect();
        let mut list = SpanList::new();
        // SAFETY: the records are live and on no list.
        unsafe {
            for &p in &ptrs {
                list.push(p);
            }
            assert_eq!(list.iter().count(), 4);
            list.remove(ptrs[3]); // head
            list.remove(ptrs[1]); // middle
            list.remove(ptrs[0]); // tail
            assert_eq!(list.iter().collect::<Vec<_>>(), vec![ptrs[2]]);
            list.remove(ptrs[2]);
        }
        assert!(list.is_empty());
    }

    #[test]
    fn page_arithmetic() {
        let p = PageId::containing(0x12345678);
        assert_eq!(p.address(), 0x12345678 & !((1 << PAGE_SHIFT) - 1));
        assert_eq!(Length::for_bytes(1), Length(1));
        assert_eq!(Length::for_bytes(1 << PAGE_SHIFT), Length(1));
        assert_eq!(Length::for_bytes((1 << PAGE_SHIFT) + 1), Length(2));
        assert_eq!(Length(3).bytes(), 3 << PAGE_SHIFT);
    }
}
