//! Central free lists: one per size class, shared by all threads, each behind its own lock on
//! its own cache line.
//!
//! Thread caches refill from here and flush back here, a whole batch (`SizeClass::batch`
//! objects) under one lock acquisition. Two stores hold the free objects of a class:
//!
//! - the **transfer cache**: up to `transfer_slots(class)` complete batches, kept as the
//!   linked lists the thread caches handed in. A flush followed by a refill (the common case
//!   when one thread frees what another allocates) moves a batch in O(1) without touching the
//!   objects;
//! - the **spans** of the class: objects that did not fit the transfer cache go back to the
//!   span they were carved from (found through the page map). A span with a free object is on
//!   `nonempty`; a span whose objects are all back is returned to the page heap at once.
//!
//! New spans come from the page heap (lock order: central list, then page heap). Objects are
//! carved lazily, one at a time, so a fresh span's untouched tail costs no memory.
//!
//! Entry points: [`central`], [`CentralFreeList::remove_range`],
//! [`CentralFreeList::insert_range`]. Layers below: `page_heap`, `page_map`, `size_class`.

use crate::config::{MAX_TRANSFER_SLOTS, TRANSFER_CACHE_BYTES};
use crate::free_list::{self, FreeObject};
use crate::page_heap::PageHeap;
use crate::page_map;
use crate::size_class::{SizeClass, NUM_CLASSES};
use crate::span::{Length, Span, SpanKind, SpanList};
use crate::sync::Lock;
use core::ptr;
use crossbeam_utils::CachePadded;

/// The process's central free lists, indexed by class (entry 0 unused).
static CENTRAL: [CachePadded<Lock<CentralFreeList>>; NUM_CLASSES] =
    [const { CachePadded::new(Lock::new(CentralFreeList::new())) }; NUM_CLASSES];

/// The central free list of `class`.
#[inline]
pub fn central(class: SizeClass) -> &'static Lock<CentralFreeList> {
    &CENTRAL[class.index()]
}

/// Every central list, for the fork handlers and statistics.
pub fn all() -> impl DoubleEndedIterator<Item = (SizeClass, &'static Lock<CentralFreeList>)> {
    SizeClass::all().map(|c| (c, central(c)))
}

/// How many whole batches the transfer cache of `class` may hold.
pub const fn transfer_slots(class: SizeClass) -> usize {
    let batch_bytes = class.batch() * class.size();
    let slots = TRANSFER_CACHE_BYTES / batch_bytes;
    if slots < 1 {
        1
    } else if slots > MAX_TRANSFER_SLOTS {
        MAX_TRANSFER_SLOTS
    } else {
        slots
    }
}

/// Figures of one central list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CentralStats {
    /// Spans owned by the class.
    pub spans: usize,
    /// Objects waiting in the transfer cache.
    pub transfer_objects: usize,
    /// Objects free inside the class's spans (returned or never carved).
    pub span_free_objects: usize,
}

/// The central free list of one class.
///
/// Invariants (checked by [`CentralFreeList::check_invariants`]):
/// - `transfer[..transfer_len]` are null-terminated lists of exactly `batch` objects each;
/// - a span of this class is on `nonempty` iff it has a free object (on its `free_list` or not
///   yet carved); `spans` counts every span of the class, on `nonempty` or not;
/// - `span_free == Σ over spans of (count(free_list) + objects - carved)`.
pub struct CentralFreeList {
    nonempty: SpanList,
    transfer: [*mut FreeObject; MAX_TRANSFER_SLOTS],
    transfer_len: usize,
    spans: usize,
    span_free: usize,
}

// SAFETY: the raw pointers name allocator memory that any thread may use under the list's lock.
unsafe impl Send for CentralFreeList {}

impl Default for CentralFreeList {
    fn default() -> Self {
        Self::new()
    }
}

impl CentralFreeList {
    pub const fn new() -> Self {
        CentralFreeList {
            nonempty: SpanList::new(),
            transfer: [ptr::null_mut(); MAX_TRANSFER_SLOTS],
            transfer_len: 0,
            spans: 0,
            span_free: 0,
        }
    }

    /// Takes up to `want` objects of `class` (a whole batch from the transfer cache when
    /// `want` is the batch size). Returns a null-terminated list and its length; length 0
    /// means out of memory.
    pub fn remove_range(
        &mut self,
        class: SizeClass,
        want: usize,
        heap: &Lock<PageHeap>,
    ) -> (*mut FreeObject, usize) {
        debug_assert!(want >= 1 && want <= class.batch());
        if want == class.batch() && self.transfer_len > 0 {
            self.transfer_len -= 1;
            return (self.transfer[self.transfer_len], want);
        }
        let mut head = ptr::null_mut();
        let mut got = 0;
        while got < want {
            if self.nonempty.is_empty() && !self.populate(class, heap) {
                break;
            }
            let span = self.nonempty.head;
            // SAFETY: `span` is on `nonempty`, so it has a free object and belongs to `class`.
            unsafe {
                let object = self.take_from_span(class, span);
                free_list::push(&mut head, object);
            }
            got += 1;
        }
        if got == 0 && self.transfer_len > 0 {
            // No memory for a new span, but whole batches wait: hand out part of one.
            self.transfer_len -= 1;
            let mut batch = self.transfer[self.transfer_len];
            // SAFETY: transfer entries are lists of exactly `batch() >= want` objects.
            unsafe {
                head = free_list::split_front(&mut batch, want);
                self.release_list(class, batch, heap);
            }
            got = want;
        }
        (head, got)
    }

    /// Gives back `count` objects of `class` as a null-terminated list.
    ///
    /// # Safety
    /// - `head` is a well-formed list of exactly `count` objects of `class` that were handed
    ///   out by this list and are no longer used.
    pub unsafe fn insert_range(
        &mut self,
        class: SizeClass,
        head: *mut FreeObject,
        count: usize,
        heap: &Lock<PageHeap>,
    ) {
        if count == class.batch() && self.transfer_len < transfer_slots(class) {
            self.transfer[self.transfer_len] = head;
            self.transfer_len += 1;
            return;
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.release_list(class, head, heap) };
    }

    /// Returns every object of the transfer cache to its span (so that spans whose objects
    /// are all free go back to the page heap).
    pub fn drain_transfer_cache(&mut self, class: SizeClass, heap: &Lock<PageHeap>) {
        while self.transfer_len > 0 {
            self.transfer_len -= 1;
            let batch = self.transfer[self.transfer_len];
            // SAFETY: transfer entries are well-formed lists of free objects of `class`.
            unsafe { self.release_list(class, batch, heap) };
        }
    }

    /// Returns each object of a list to its span.
    ///
    /// # Safety
    /// - as for [`insert_range`](Self::insert_range).
    unsafe fn release_list(
        &mut self,
        class: SizeClass,
        mut head: *mut FreeObject,
        heap: &Lock<PageHeap>,
    ) {
        loop {
            // SAFETY: the list is well formed per the caller.
            let object = unsafe { free_list::pop(&mut head) };
            if object.is_null() {
                break;
            }
            // SAFETY: a live object of `class` handed out by this list.
            unsafe { self.release_object(class, object, heap) };
        }
    }

    /// Puts one object back on its span; gives the span to the page heap when it is empty.
    ///
    /// # Safety
    /// - `object` is an unused object of `class` handed out by this list.
    unsafe fn release_object(
        &mut self,
        class: SizeClass,
        object: *mut FreeObject,
        heap: &Lock<PageHeap>,
    ) {
        let span = page_map::lookup(object as usize);
        // SAFETY: the page map records the span of every page of a `Small` span, and the span
        // outlives its objects.
        unsafe {
            debug_assert!(
                !span.is_null()
                    && (*span).kind() == SpanKind::Small
                    && (*span).class_index() == class.index(),
                "object {object:?} is not of class {}",
                class.index()
            );
            let s = &mut *span;
            let had_free = !s.free_list.is_null() || s.carved < class.info().objects;
            free_list::push(&mut s.free_list, object);
            s.allocated -= 1;
            self.span_free += 1;
            if s.allocated == 0 {
                if had_free {
                    self.nonempty.remove(span);
                }
                // Every object of the span is free now, and all were counted in `span_free`.
                self.spans -= 1;
                self.span_free -= class.info().objects as usize;
                s.carved = 0;
                heap.lock().deallocate(span);
            } else if !had_free {
                self.nonempty.push(span);
            }
        }
    }

    /// Takes one free object from `span`, removing the span from `nonempty` when it runs out.
    ///
    /// # Safety
    /// - `span` is on `nonempty` and belongs to `class`.
    unsafe fn take_from_span(&mut self, class: SizeClass, span: *mut Span) -> *mut FreeObject {
        // SAFETY: per the caller.
        let s = unsafe { &mut *span };
        let objects = class.info().objects;
        // SAFETY: the span's free list is well formed.
        let mut object = unsafe { free_list::pop(&mut s.free_list) };
        if object.is_null() {
            debug_assert!(s.carved < objects);
            object = (s.start_address() + s.carved as usize * class.size()) as *mut FreeObject;
            s.carved += 1;
        }
        s.allocated += 1;
        self.span_free -= 1;
        if s.free_list.is_null() && s.carved == objects {
            // SAFETY: on `nonempty` per the caller.
            unsafe { self.nonempty.remove(span) };
        }
        object
    }

    /// Takes a new span from the page heap; false when out of memory.
    fn populate(&mut self, class: SizeClass, heap: &Lock<PageHeap>) -> bool {
        let span = heap.lock().allocate(Length(class.info().pages as usize), SpanKind::Small);
        if span.is_null() {
            return false;
        }
        // SAFETY: a fresh in-use span from the page heap; nobody else knows it yet.
        unsafe {
            (*span).set_class_index(class.index());
            (*span).free_list = ptr::null_mut();
            (*span).allocated = 0;
            (*span).carved = 0;
            self.nonempty.push(span);
        }
        self.spans += 1;
        self.span_free += class.info().objects as usize;
        true
    }

    pub fn stats(&self, class: SizeClass) -> CentralStats {
        CentralStats {
            spans: self.spans,
            transfer_objects: self.transfer_len * class.batch(),
            span_free_objects: self.span_free,
        }
    }

    /// Checks the invariants on the struct for the spans on `nonempty` and the transfer cache.
    pub fn check_invariants(&self, class: SizeClass) {
        for &batch in &self.transfer[..self.transfer_len] {
            // SAFETY: transfer entries are well-formed lists.
            assert_eq!(unsafe { free_list::count(batch) }, class.batch(), "transfer batch size");
        }
        let mut free_on_nonempty = 0;
        let mut nonempty = 0;
        for span in self.nonempty.iter() {
            // SAFETY: list members are valid records of this class.
            let s = unsafe { &*span };
            assert_eq!(s.kind(), SpanKind::Small);
            assert_eq!(s.class_index(), class.index());
            // SAFETY: the span's free list is well formed.
            let listed = unsafe { free_list::count(s.free_list) };
            let untouched = (class.info().objects - s.carved) as usize;
            assert!(listed + untouched > 0, "span without free objects on nonempty");
            assert_eq!(
                s.allocated as usize + listed + untouched,
                class.info().objects as usize,
                "span object accounting"
            );
            free_on_nonempty += listed + untouched;
            nonempty += 1;
        }
        assert!(nonempty <= self.spans);
        assert_eq!(free_on_nonempty, self.span_free, "free objects in spans");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn class_of(size: usize) -> SizeClass {
        crate::size_class::class_for(size, 8).unwrap()
    }

    #[test]
    fn batches_round_trip_through_the_transfer_cache() {
        let heap = Lock::new(PageHeap::new());
        let mut list = CentralFreeList::new();
        let class = class_of(64);
        let batch = class.batch();
        let (head, n) = list.remove_range(class, batch, &heap);
        assert_eq!(n, batch);
        // SAFETY: `head` is the list just handed out.
        assert_eq!(unsafe { free_list::count(head) }, batch);
        list.check_invariants(class);
        // SAFETY: the same objects, unused.
        unsafe { list.insert_range(class, head, n, &heap) };
        assert_eq!(list.stats(class).transfer_objects, batch);
        list.check_invariants(class);
        let (again, m) = list.remove_range(class, batch, &heap);
        assert_eq!((again, m), (head, batch), "the same batch comes back whole");
        // SAFETY: as above.
        unsafe { list.insert_range(class, again, m, &heap) };
        list.drain_transfer_cache(class, &heap);
        list.check_invariants(class);
        assert_eq!(list.stats(class).spans, 0, "an empty span goes back to the page heap");
        assert_eq!(heap.lock().stats().in_use_bytes, 0);
        heap.lock().check_invariants();
    }

    #[test]
    fn objects_are_distinct_aligned_and_inside_their_spans() {
        let heap = Lock::new(PageHeap::new());
        let mut list = CentralFreeList::new();
        let class = class_of(48);
        let mut seen = HashSet::new();
        let mut lists = Vec::new();
        for want in [1, 2, 3, class.batch(), class.batch(), 7] {
            let (head, n) = list.remove_range(class, want, &heap);
            assert_eq!(n, want);
            let mut p = head;
            while !p.is_null() {
                assert!(seen.insert(p as usize), "object handed out twice");
                assert_eq!(p as usize % 16, 0, "48-byte objects are 16-aligned");
                let span = page_map::lookup(p as usize);
                // SAFETY: the page map knows every page of a small span.
                unsafe {
                    assert_eq!((*span).class_index(), class.index());
                    assert_eq!((p as usize - (*span).start_address()) % class.size(), 0);
                    p = (*p).next;
                }
            }
            lists.push((head, n));
            list.check_invariants(class);
        }
        // Odd-sized lists go back to their spans one by one.
        for (head, n) in lists {
            // SAFETY: these lists came from this central list and are unused.
            unsafe { list.insert_range(class, head, n, &heap) };
            list.check_invariants(class);
        }
        list.drain_transfer_cache(class, &heap);
        assert_eq!(list.stats(class).spans, 0);
        assert_eq!(heap.lock().stats().in_use_bytes, 0);
    }

    #[test]
    fn transfer_slots_bound_bytes() {
        for class in SizeClass::all() {
            let slots = transfer_slots(class);
            assert!((1..=MAX_TRANSFER_SLOTS).contains(&slots));
            if slots > 1 {
                assert!(slots * class.batch() * class.size() <= TRANSFER_CACHE_BYTES);
            }
        }
    }
}
