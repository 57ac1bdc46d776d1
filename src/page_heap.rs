//! The page heap: runs of pages ("spans") carved out of large aligned chunks from the OS.
//!
//! Central free lists take spans from here for their objects; over-aligned blocks take page
//! runs. Freed spans coalesce with free neighbours (found through the page map) and wait on
//! free lists by length: exact lists for up to [`MAX_EXACT_PAGES`] pages, one best-fit list
//! above. Free pages come in two states, kept on separate lists so that allocation prefers
//! memory that is still backed:
//!
//! - `Free`: backed by physical memory (recently used);
//! - `Returned`: given back with `madvise(MADV_DONTNEED)` (or never touched), so it costs no
//!   resident memory and reads as zeros.
//!
//! Neighbours coalesce only with neighbours in the same state, which keeps the byte counts
//! exact. The heap grows by [`HEAP_GROWTH_BYTES`] chunks aligned to their size; fresh chunks
//! start out `Returned`.
//!
//! Release: [`PageHeap::release`] and [`PageHeap::release_older_than`] give free spans back;
//! `deallocate` itself releases the excess beyond a reserve of backed free pages. The reserve
//! is a fixed part (`TCALLOC_FREE_RESERVE_BYTES`) plus an adaptive part: when the program
//! reuses pages within [`ADAPTIVE_HOLD_MS`] of their release — it frees and reallocates in
//! rounds — the adaptive part grows by what was reused (up to 1 GiB), so the next round stays
//! backed instead of faulting its memory in again. It follows demand: it is kept at most at
//! the pages the program took from the free lists in the last [`ADAPTIVE_HOLD_MS`] (counted
//! in [`DEMAND_WINDOWS`] windows), so it stays while the rounds go on, also when a round's
//! allocations and frees each take longer than a window, and drops to zero after a hold time
//! without any. A program that frees one big peak and carries on lightly gets its memory
//! released at its next frees after that. The decay itself is driven by `release`.
//!
//! Huge pages: once the heap holds [`HUGE_PAGE_HEAP_BYTES`] (`TCALLOC_HUGE_PAGE_HEAP_BYTES`),
//! a carve from returned pages (given back, or never touched) first makes the huge page it
//! lies in (2 MiB: one TLB entry where small pages take 512) resident as a transparent huge
//! page (`MADV_COLLAPSE`, which keeps what live pages in it hold) and counts its returned pages
//! as backed free pages, and carves take backed free pages before returned ones, so that the
//! rest of that huge page is what the next carves use. The release policy above gives back a
//! freed peak in pieces as its spans empty, which splits its huge pages for good; they are
//! built again when the heap carves there. A program that frees and reallocates a big heap in
//! rounds runs its rounds on huge pages (scatter-1m: 300 MB, 2.11 s before, 1.53 s after on its
//! own timer, medians of 7 interleaved runs), and resident memory stays where it was
//! (`tcalloc-bench memory`). See [`PageHeap::rebuild_huge_pages`] for why the heap does not
//! advise its chunks with `MADV_HUGEPAGE` instead.
//!
//! Entry points: [`PAGE_HEAP`] and the methods of [`PageHeap`]. Layers below: `page_map`,
//! `metadata`, `os`.

use crate::config::{
    HEAP_GROWTH_BYTES, HUGE_PAGE_HEAP_BYTES, HUGE_PAGE_PAGES, MAX_EXACT_PAGES, PAGE_SIZE,
};
use crate::diag::{invariant, invariant_eq};
use crate::metadata;
use crate::os;
use crate::page_map;
use crate::span::{Length, PageId, Span, SpanKind, SpanList};
use crate::sync::Lock;
use core::ptr;

/// Largest adaptive reserve (see `PageHeap::note_taken`): 1 GiB.
const MAX_ADAPTIVE_PAGES: usize = (1 << 30) / PAGE_SIZE;

/// A release followed by reuse within this many milliseconds (or the decay time, if shorter)
/// marks a program that frees and reallocates in rounds; the adaptive reserve is kept at most
/// at the pages taken from the free lists in as long, so it lapses after as long without any.
/// Long enough that a round's frees may take longer than a window (scatter-1m: a round of
/// about 150 ms), short enough that a program that frees everything and stops gets most of
/// its memory back while it frees: what it frees a hold time or more after its last take
/// (`memory-phases`: with a hold of a second, 82 MiB stayed resident after it freed 512 MiB
/// and went idle, against 36 MiB with 300 ms). What it frees sooner stays backed until its
/// next free or decay tick: there is no background thread.
pub const ADAPTIVE_HOLD_MS: u64 = 300;

/// Huge pages the kernel may refuse to build in a row before a heap stops asking
/// (`PageHeap::collapse`).
const MAX_COLLAPSE_FAILURES: u32 = 64;

/// The hold time is counted in this many windows: the demand that bounds the adaptive reserve
/// is the sum of their pages taken.
pub const DEMAND_WINDOWS: usize = 10;

/// The process's page heap.
pub static PAGE_HEAP: Lock<PageHeap> = Lock::new(PageHeap::in_arena());

/// Byte counts of the page heap.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageHeapStats {
    /// Bytes mapped from the OS for the heap.
    pub system_bytes: usize,
    /// Bytes in free spans still backed by memory.
    pub free_bytes: usize,
    /// Bytes in free spans given back to the OS.
    pub returned_bytes: usize,
    /// Bytes in spans handed out (objects and page runs).
    pub in_use_bytes: usize,
    /// Address space reserved for the arena (0 without one), and bytes of it taken.
    pub arena_reserved_bytes: usize,
    pub arena_used_bytes: usize,
}

/// The page heap.
///
/// Invariants (checked by [`PageHeap::check_invariants`]):
/// - a span of kind `Free` is on `free[pages]` (or `free_large` above `MAX_EXACT_PAGES`),
///   one of kind `Returned` on `returned[..]`/`returned_large` likewise, and no other spans
///   are on these lists;
/// - the page map records every free span at its first and last page;
/// - no two free spans of the same kind are adjacent (they would have been coalesced);
/// - `free_pages`, `returned_pages` are the sums of the pages on the respective lists, and
///   `free_pages + returned_pages + in_use_pages == system_pages`;
/// - after every `deallocate`, `free_pages <= reserve_pages + adaptive_pages`, unless no backed
///   free span is left or the kernel refused to release one (locked memory; not checked by
///   `check_invariants`); `adaptive_pages <= MAX_ADAPTIVE_PAGES`.
pub struct PageHeap {
    free: [SpanList; MAX_EXACT_PAGES + 1],
    returned: [SpanList; MAX_EXACT_PAGES + 1],
    free_large: SpanList,
    returned_large: SpanList,
    system_pages: usize,
    free_pages: usize,
    returned_pages: usize,
    in_use_pages: usize,
    /// Free backed pages allowed before `deallocate` releases the excess: a fixed reserve
    /// plus an adaptive part that grows by the pages the program reuses soon after they were
    /// released, and at each free is cut to the pages it took from the free lists in the
    /// last hold time (see `note_taken`, `roll_window`, `cut_to_demand`).
    reserve_pages: usize,
    adaptive_pages: usize,
    /// When the current window began.
    window_start_ms: u64,
    /// Pages taken from the free lists in each of the last [`DEMAND_WINDOWS`] windows, a ring
    /// whose current window is `taken[window]`.
    taken: [usize; DEMAND_WINDOWS],
    window: usize,
    /// How soon a reuse must follow a release to count, and how long demand is remembered:
    /// the decay time, but at most [`ADAPTIVE_HOLD_MS`].
    hold_ms: u64,
    /// `hold_ms / DEMAND_WINDOWS`, rounded up.
    window_ms: u64,
    /// The heap size (in pages) from which it runs on huge pages (`huge`).
    huge_threshold_pages: usize,
    /// Set once the heap reached `huge_threshold_pages`: a carve from returned pages makes
    /// the huge pages it lies in resident as such (`rebuild_huge_pages`), and backed free
    /// pages are carved before returned ones (`find_backed_first`).
    huge: bool,
    /// Huge pages the kernel refused to build in a row; from [`MAX_COLLAPSE_FAILURES`] on,
    /// the heap stops asking (a kernel before 6.1, THP turned off, or no free huge pages).
    collapse_failures: u32,
    /// Where the process's heap takes its chunks first.
    arena: arena::Arena,
    /// Deallocations so far, to run `check_invariants` now and then in debug builds.
    #[cfg(debug_assertions)]
    debug_ops: usize,
}

/// Debug builds check the page heap's invariants every this many deallocations.
#[cfg(debug_assertions)]
const DEBUG_CHECK_EVERY: usize = 1024;

// SAFETY: the raw span pointers name metadata that any thread may touch under the heap's lock.
unsafe impl Send for PageHeap {}

impl Default for PageHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl PageHeap {
    /// A heap that maps its chunks anywhere (tests make their own).
    pub const fn new() -> PageHeap {
        PageHeap {
            free: [const { SpanList::new() }; MAX_EXACT_PAGES + 1],
            returned: [const { SpanList::new() }; MAX_EXACT_PAGES + 1],
            free_large: SpanList::new(),
            returned_large: SpanList::new(),
            system_pages: 0,
            free_pages: 0,
            returned_pages: 0,
            in_use_pages: 0,
            reserve_pages: usize::MAX,
            adaptive_pages: 0,
            window_start_ms: 0,
            taken: [0; DEMAND_WINDOWS],
            window: 0,
            hold_ms: ADAPTIVE_HOLD_MS,
            window_ms: ADAPTIVE_HOLD_MS.div_ceil(DEMAND_WINDOWS as u64),
            huge_threshold_pages: HUGE_PAGE_HEAP_BYTES / PAGE_SIZE,
            huge: false,
            collapse_failures: 0,
            arena: arena::Arena::new(false),
            #[cfg(debug_assertions)]
            debug_ops: 0,
        }
    }

    /// The process's heap, which takes its chunks from the arena while it can.
    const fn in_arena() -> PageHeap {
        PageHeap { arena: arena::Arena::new(true), ..PageHeap::new() }
    }

    fn list(&mut self, kind: SpanKind, pages: Length) -> &mut SpanList {
        let exact = pages.0 <= MAX_EXACT_PAGES;
        match (kind, exact) {
            (SpanKind::Free, true) => &mut self.free[pages.0],
            (SpanKind::Free, false) => &mut self.free_large,
            (SpanKind::Returned, true) => &mut self.returned[pages.0],
            (SpanKind::Returned, false) => &mut self.returned_large,
            _ => unreachable_kind(kind),
        }
    }

    fn counter(&mut self, kind: SpanKind) -> &mut usize {
        match kind {
            SpanKind::Free => &mut self.free_pages,
            SpanKind::Returned => &mut self.returned_pages,
            _ => unreachable_kind(kind),
        }
    }

    /// Puts a free span on its list.
    ///
    /// # Safety
    /// - `span` is a valid record of kind `Free` or `Returned` on no list.
    unsafe fn link(&mut self, span: *mut Span) {
        // SAFETY: valid per the caller.
        let (kind, pages) = unsafe { ((*span).kind(), (*span).pages()) };
        // SAFETY: unlinked per the caller.
        unsafe { self.list(kind, pages).push(span) };
        *self.counter(kind) += pages.0;
    }

    /// Takes a free span off its list.
    ///
    /// # Safety
    /// - `span` is on one of this heap's free lists.
    unsafe fn unlink(&mut self, span: *mut Span) {
        // SAFETY: valid per the caller.
        let (kind, pages) = unsafe { ((*span).kind(), (*span).pages()) };
        // SAFETY: on that list per the caller.
        unsafe { self.list(kind, pages).remove(span) };
        *self.counter(kind) -= pages.0;
    }

    /// Allocates `pages` pages as a span of `kind` (`Small` or `PageRun`), recorded in the page
    /// map at every page. Null when out of memory.
    pub fn allocate(&mut self, pages: Length, kind: SpanKind) -> *mut Span {
        crate::diag::debug_invariant!(
            pages.0 > 0 && matches!(kind, SpanKind::Small | SpanKind::PageRun)
        );
        let mut span = self.find(pages);
        if span.is_null() {
            if !self.grow(pages) {
                return ptr::null_mut();
            }
            span = self.find(pages);
            if span.is_null() {
                return ptr::null_mut();
            }
        }
        if self.huge {
            // SAFETY: as below.
            span = unsafe { self.rebuild_huge_pages(span, pages) };
        }
        // SAFETY: `find` returned a span on a free list with at least `pages` pages.
        unsafe { self.carve(span, pages, kind) }
    }

    /// In a heap on huge pages, before `pages` pages are carved from the front of `span`:
    /// if `span` is returned (given back to the OS, or never touched), makes the huge page
    /// those pages lie in resident as a huge page (`os::collapse_huge_pages`: the pages of
    /// live spans in it keep what they hold) and counts its returned pages as backed free
    /// pages (and as reused, for the adaptive reserve: kept backed, the next round finds the
    /// huge page whole). Returns the free span to carve from then, which holds those pages
    /// (`span` itself, or a free span it became part of), or `span` when the kernel would not
    /// build the huge page.
    ///
    /// Giving back part of a huge page splits it into small pages for good (the kernel does
    /// not build it again at the next fault), and the release policy gives back a freed peak
    /// in pieces as its spans empty: scatter-1m, which frees 300 MB and allocates it again
    /// every round, ran its later rounds on small pages (1.9-2.1 s, against 1.2-1.35 s with
    /// nothing given back), missing the TLB at nearly every block. The heap builds its huge
    /// pages this way, when it carves, rather than advising its chunks with `MADV_HUGEPAGE`:
    /// in an advised range the kernel's khugepaged also builds huge pages in the background
    /// wherever one small page of them is live, filling what the heap gave back with zeros
    /// that it counts as given back, so a long-running program's resident memory would creep
    /// up to its heap's.
    ///
    /// # Safety
    /// - `span` is on one of this heap's free lists and has at least `pages` pages.
    unsafe fn rebuild_huge_pages(&mut self, span: *mut Span, pages: Length) -> *mut Span {
        // SAFETY: per the caller; spans found through the page map are the neighbours of spans
        // of this heap at their first or last page (recorded for free and in-use spans
        // alike), inside the heap's chunks (huge pages lie in one chunk each).
        unsafe {
            let (kind, start) = ((*span).kind(), (*span).start());
            if kind != SpanKind::Returned || self.collapse_failures >= MAX_COLLAPSE_FAILURES {
                return span;
            }
            let lo = PageId(start.0 / HUGE_PAGE_PAGES * HUGE_PAGE_PAGES);
            let hi = PageId(lo.0 + HUGE_PAGE_PAGES);
            // A carve across two huge pages (at most 1 MiB: a few in a hundred, for the
            // smallest spans) is left on small pages, so that one build covers it.
            if start.0 + pages.0 > hi.0 || !self.collapse(lo, start) {
                return span;
            }
            // The huge page's returned spans become free spans, coalesced with their free
            // neighbours (their parts outside it stay returned), left to right; the one that
            // holds `start` is carved from.
            let mut target = span;
            let mut cur = Self::span_at(span, lo);
            loop {
                if (*cur).kind() == SpanKind::Returned {
                    self.back_returned(cur, lo, hi);
                }
                let end = (*cur).end();
                if (*cur).start() <= start && start < end {
                    target = cur;
                }
                if end >= hi {
                    break;
                }
                cur = page_map::get(end);
            }
            target
        }
    }

    /// The span that holds page `page`, found from `from`, a span of this heap within the same
    /// chunk, through its neighbours.
    ///
    /// # Safety
    /// - `from` is a valid record of this heap; `page` and the pages between lie in spans of
    ///   it.
    unsafe fn span_at(from: *mut Span, page: PageId) -> *mut Span {
        let mut cur = from;
        // SAFETY: per the caller; each step reads the page map at the last page of the span
        // before or the first page of the span after, recorded for every span.
        unsafe {
            while (*cur).start() > page {
                cur = page_map::get(PageId((*cur).start().0 - 1));
            }
            while (*cur).end() <= page {
                cur = page_map::get((*cur).end());
            }
        }
        cur
    }

    /// Builds the huge page at `first` (its first page) from what is mapped there, whole;
    /// false when the kernel would not. A huge page none of whose pages was ever written
    /// since it was mapped or given back (the zero page mapped counts as none) cannot be built
    /// until one is: `free`, a returned page in it, gets a zero written, which it held.
    ///
    /// # Safety
    /// - `free` is a page of a returned span of this heap, inside the huge page.
    unsafe fn collapse(&mut self, first: PageId, free: PageId) -> bool {
        let p = first.address() as *mut u8;
        let bytes = Length(HUGE_PAGE_PAGES).bytes();
        // SAFETY: the huge page lies in one of this heap's chunks, mapped readable and
        // writable; `free` is a returned page per the caller (no one else's, reading as
        // zeros); the build keeps what the pages hold.
        let built = unsafe {
            os::collapse_huge_pages(p, bytes) || {
                ptr::write_volatile(free.address() as *mut u8, 0);
                os::collapse_huge_pages(p, bytes)
            }
        };
        self.collapse_failures = if built { 0 } else { self.collapse_failures + 1 };
        built
    }

    /// Turns the part of `span` (returned, on its list) inside `[lo, hi)`, which is resident
    /// now, into a backed free span, coalesced with its free neighbours (into `span`'s
    /// record) and linked, and counts its pages as reused
    /// (`note_taken`; the carve that follows counts its own pages again as demand, which only
    /// loosens the demand bound by as many). Its parts outside stay returned spans of their
    /// own; without records for them, the span stays returned, resident or not.
    ///
    /// # Safety
    /// - `span` is on a `Returned` free list and overlaps `[lo, hi)`, whose pages are
    ///   resident; the page-map leaves of its pages exist.
    unsafe fn back_returned(&mut self, span: *mut Span, lo: PageId, hi: PageId) {
        // SAFETY: per the caller; new records cover pages of `span`.
        unsafe {
            let (start, end, freed_at) = ((*span).start(), (*span).end(), (*span).freed_at);
            let (from, to) = (start.max(lo), end.min(hi));
            let head = if start < from { metadata::new_span() } else { ptr::null_mut() };
            let tail = if to < end { metadata::new_span() } else { ptr::null_mut() };
            if (start < from && head.is_null()) || (to < end && tail.is_null()) {
                for record in [head, tail] {
                    if !record.is_null() {
                        metadata::delete_span(record);
                    }
                }
                return;
            }
            self.unlink(span);
            for (record, a, b) in [(head, start, from), (tail, to, end)] {
                if !record.is_null() {
                    Span::init(record, a, Length(b.0 - a.0), SpanKind::Returned);
                    (*record).freed_at = freed_at;
                    self.record_free(record);
                    self.link(record);
                }
            }
            self.note_taken(SpanKind::Returned, freed_at, Length(to.0 - from.0));
            (*span).set_start(from);
            (*span).set_pages(Length(to.0 - from.0));
            (*span).set_kind(SpanKind::Free);
            (*span).freed_at = os::now_millis();
            self.merge_and_link(span);
        }
    }

    /// Allocates `pages` pages at the front of a free run of at least `room` pages, so that
    /// the span can later grow in place (`extend`) into the rest. Null when out of memory.
    pub fn allocate_with_room(&mut self, pages: Length, room: Length, kind: SpanKind) -> *mut Span {
        let room = room.max(pages);
        let mut span = self.find(room);
        if span.is_null() {
            if !self.grow(room) {
                return self.allocate(pages, kind);
            }
            span = self.find(room);
            if span.is_null() {
                return ptr::null_mut();
            }
        }
        // SAFETY: `find` returned a free span of at least `room >= pages` pages.
        unsafe { self.carve(span, pages, kind) }
    }

    /// Allocates `pages` pages whose first page is a multiple of `align` pages.
    pub fn allocate_aligned(&mut self, pages: Length, align: Length, kind: SpanKind) -> *mut Span {
        crate::diag::debug_invariant!(align.0.is_power_of_two());
        if align.0 <= 1 {
            return self.allocate(pages, kind);
        }
        let Some(total) = pages.0.checked_add(align.0 - 1) else {
            return ptr::null_mut();
        };
        let span = self.allocate(Length(total), kind);
        if span.is_null() {
            return span;
        }
        // SAFETY: `span` is the in-use span just allocated; the trimmed parts are split off it
        // with fresh records and freed back to the heap.
        unsafe {
            let start = (*span).start();
            let aligned = PageId((start.0 + align.0 - 1) & !(align.0 - 1));
            let head = Length(aligned.0 - start.0);
            let tail = Length(total - head.0 - pages.0);
            let tail_record = if tail.0 > 0 { metadata::new_span() } else { ptr::null_mut() };
            let head_record = if head.0 > 0 { metadata::new_span() } else { ptr::null_mut() };
            if (tail.0 > 0 && tail_record.is_null()) || (head.0 > 0 && head_record.is_null()) {
                for record in [tail_record, head_record] {
                    if !record.is_null() {
                        metadata::delete_span(record);
                    }
                }
                self.deallocate(span);
                return ptr::null_mut();
            }
            // Shrink the span first so that the trimmed parts do not coalesce into it; each
            // part's `deallocate` takes its pages off the in-use count.
            (*span).set_start(aligned);
            (*span).set_pages(pages);
            page_map::set_range(aligned, pages, span);
            if tail.0 > 0 {
                Span::init(tail_record, aligned.add(pages), tail, kind);
                self.deallocate(tail_record);
            }
            if head.0 > 0 {
                Span::init(head_record, start, head, kind);
                self.deallocate(head_record);
            }
            span
        }
    }

    /// The best free span of at least `pages` pages: the shortest, backed before returned;
    /// null if none.
    fn find(&mut self, pages: Length) -> *mut Span {
        if self.huge {
            return self.find_backed_first(pages);
        }
        for n in pages.0..=MAX_EXACT_PAGES {
            if !self.free[n].is_empty() {
                return self.free[n].head;
            }
            if !self.returned[n].is_empty() {
                return self.returned[n].head;
            }
        }
        Self::best_fit(self.free_large.iter().chain(self.returned_large.iter()), pages)
    }

    /// [`find`](Self::find) in a heap on huge pages: the best backed free span, else the best
    /// returned one. A carve from returned pages makes their huge page resident whole
    /// (`rebuild_huge_pages`), so the backed rest of it must be what the next carves take:
    /// with the shortest span of either kind first, a heap that released everything took its
    /// next 128 MiB from returned pieces all over its 580 MiB and made 547 MiB resident
    /// (`tcalloc-bench memory`, phase 5).
    fn find_backed_first(&mut self, pages: Length) -> *mut Span {
        for (exact, large) in
            [(&self.free, &self.free_large), (&self.returned, &self.returned_large)]
        {
            if let Some(n) = (pages.0..=MAX_EXACT_PAGES).find(|&n| !exact[n].is_empty()) {
                return exact[n].head;
            }
            let best = Self::best_fit(large.iter(), pages);
            if !best.is_null() {
                return best;
            }
        }
        ptr::null_mut()
    }

    /// The shortest of `spans` with at least `pages` pages (the lowest first among equals);
    /// null if none.
    fn best_fit(spans: impl Iterator<Item = *mut Span>, pages: Length) -> *mut Span {
        let mut best: *mut Span = ptr::null_mut();
        for span in spans {
            // SAFETY: list members are valid records.
            let (len, start) = unsafe { ((*span).pages(), (*span).start()) };
            if len < pages {
                continue;
            }
            // SAFETY: `best`, when set, is a valid record from the same lists.
            let better =
                best.is_null() || unsafe { (len, start) < ((*best).pages(), (*best).start()) };
            if better {
                best = span;
            }
        }
        best
    }

    /// Takes `span` (free, at least `pages` long) off its list, splits off and frees the
    /// rest, and marks the first `pages` pages in use as `kind`.
    ///
    /// # Safety
    /// - `span` is on one of this heap's free lists and has at least `pages` pages.
    unsafe fn carve(&mut self, span: *mut Span, pages: Length, kind: SpanKind) -> *mut Span {
        // SAFETY: valid per the caller.
        let (len, start, was) = unsafe { ((*span).pages(), (*span).start(), (*span).kind()) };
        crate::diag::debug_invariant!(len >= pages);
        let rest = if len > pages {
            let rest = metadata::new_span();
            if rest.is_null() {
                return ptr::null_mut();
            }
            rest
        } else {
            ptr::null_mut()
        };
        // SAFETY: valid per the caller.
        self.note_taken(was, unsafe { (*span).freed_at }, pages);
        // SAFETY: on a free list per the caller.
        unsafe { self.unlink(span) };
        if !rest.is_null() {
            // SAFETY: `rest` is a fresh record; its pages are the free tail of `span`, whose
            // page-map leaves exist (they were recorded when `span` became free).
            unsafe {
                Span::init(rest, start.add(pages), Length(len.0 - pages.0), was);
                (*rest).freed_at = (*span).freed_at;
                self.record_free(rest);
                self.link(rest);
                (*span).set_pages(pages);
            }
        }
        // SAFETY: `span` is ours now; its pages' leaves exist.
        unsafe {
            (*span).set_kind(kind);
            page_map::set_range(start, pages, span);
        }
        self.in_use_pages += pages.0;
        span
    }

    /// Grows an in-use span to `pages` pages in place, taking the pages right after it if
    /// they are free; false (and nothing changed) if they are not, or when out of metadata.
    ///
    /// # Safety
    /// - `span` is an in-use span of this heap, owned by the caller.
    pub unsafe fn extend(&mut self, span: *mut Span, pages: Length) -> bool {
        // SAFETY: per the caller; the neighbour found through the page map is checked to be a
        // free span of this heap that starts right after `span`.
        unsafe {
            let have = (*span).pages();
            if pages <= have {
                return pages == have;
            }
            let needed = Length(pages.0 - have.0);
            let end = (*span).end();
            let right = page_map::get(end);
            if right.is_null()
                || !matches!((*right).kind(), SpanKind::Free | SpanKind::Returned)
                || (*right).start() != end
                || (*right).pages() < needed
            {
                return false;
            }
            self.note_taken((*right).kind(), (*right).freed_at, needed);
            self.unlink(right);
            if (*right).pages() > needed {
                (*right).set_start(end.add(needed));
                (*right).set_pages(Length((*right).pages().0 - needed.0));
                self.record_free(right);
                self.link(right);
            } else {
                metadata::delete_span(right);
            }
            page_map::set_range(end, needed, span);
            (*span).set_pages(pages);
            self.in_use_pages += needed.0;
        }
        true
    }

    /// Records a free span in the page map at its first and last page.
    ///
    /// # Safety
    /// - `span` is valid and the page-map leaves for its pages exist.
    unsafe fn record_free(&mut self, span: *mut Span) {
        // SAFETY: per the caller.
        unsafe {
            let (start, end) = ((*span).start(), (*span).end());
            page_map::set(start, span);
            page_map::set(PageId(end.0 - 1), span);
        }
    }

    /// Returns an in-use span (`Small` or `PageRun`) to the heap, coalescing it with free
    /// neighbours in the same state.
    ///
    /// # Safety
    /// - `span` came from this heap, is in use, on no list, and nothing of it is live.
    pub unsafe fn deallocate(&mut self, span: *mut Span) {
        // SAFETY: per the caller.
        let pages = unsafe { (*span).pages() };
        self.in_use_pages -= pages.0;
        // SAFETY: per the caller.
        unsafe {
            (*span).set_kind(SpanKind::Free);
            (*span).set_class_index(0);
            (*span).free_list = ptr::null_mut();
            let now = os::now_millis();
            (*span).freed_at = now;
            self.merge_and_link(span);
            if self.adaptive_pages > 0 {
                self.roll_window(now);
                self.cut_to_demand();
            }
        }
        let limit = self.reserve_pages.saturating_add(self.adaptive_pages);
        if self.free_pages > limit {
            self.release(Length(self.free_pages - limit));
        }
        #[cfg(debug_assertions)]
        {
            self.debug_ops += 1;
            if self.debug_ops % DEBUG_CHECK_EVERY == 0 {
                self.check_invariants();
            }
        }
    }

    /// Sets the release policy: how many free pages may stay backed (`usize::MAX` turns the
    /// limit off) and the decay time, which bounds the adaptive reserve's hold time.
    pub fn set_policy(&mut self, reserve: Length, decay_ms: u64) {
        self.reserve_pages = reserve.0;
        self.hold_ms = decay_ms.min(ADAPTIVE_HOLD_MS);
        self.window_ms = self.hold_ms.div_ceil(DEMAND_WINDOWS as u64);
    }

    /// Sets the heap size from which the heap runs on huge pages (see `huge`); a heap past it
    /// already switches at its next growth.
    pub fn set_huge_threshold(&mut self, pages: Length) {
        self.huge_threshold_pages = pages.0;
    }

    /// `pages` pages of a free span of kind `was`, freed (or, `Returned`, released) at
    /// `freed_at` (0: never backed), are being taken. Released pages reused within the hold
    /// time mean the program frees and reallocates in rounds: the adaptive reserve grows by
    /// them, so that the next round stays backed. Every page taken counts as demand in the
    /// current window (see `roll_window`, `cut_to_demand`).
    fn note_taken(&mut self, was: SpanKind, freed_at: u64, pages: Length) {
        let reused = was == SpanKind::Returned && freed_at != 0;
        if !reused && self.adaptive_pages == 0 {
            return;
        }
        let now = os::now_millis();
        self.roll_window(now);
        if reused && now.saturating_sub(freed_at) <= self.hold_ms {
            self.adaptive_pages = (self.adaptive_pages + pages.0).min(MAX_ADAPTIVE_PAGES);
        }
        self.taken[self.window] += pages.0;
    }

    /// Ends the current window if it is over (and the ones that went by without an event),
    /// forgetting the pages taken in the oldest. After a whole hold time without any event
    /// the program paused: the adaptive reserve lapses.
    fn roll_window(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.window_start_ms);
        if elapsed <= self.window_ms {
            return;
        }
        let ended = elapsed.checked_div(self.window_ms).unwrap_or(u64::MAX);
        if ended >= DEMAND_WINDOWS as u64 {
            self.adaptive_pages = 0;
        }
        for _ in 0..ended.min(DEMAND_WINDOWS as u64) {
            self.window = (self.window + 1) % DEMAND_WINDOWS;
            self.taken[self.window] = 0;
        }
        // The windows stay on their grid, so that the ring covers the last hold time (from
        // event to event they would stretch up to twice as long).
        self.window_start_ms = if ended >= DEMAND_WINDOWS as u64 {
            now
        } else {
            self.window_start_ms + ended * self.window_ms
        };
    }

    /// At a free: the adaptive reserve follows demand, so it is cut to the pages taken in the
    /// last hold time (none when a whole hold time went by without any). Rounds of reuse keep
    /// it; a program that frees a peak and then takes pages only now and then gets the rest
    /// back, at its next free after a hold time. Only frees cut it (and only frees release
    /// pages beyond it): while a round takes pages, the hold time may not cover the whole
    /// round yet, and the pages it takes are in use anyway.
    ///
    /// (It used to be cut at the end of each 100 ms window to the pages taken in it: a program
    /// whose frees take longer than that, such as freeing a million blocks in random order,
    /// took nothing in the windows of its frees, lost its reserve in the middle of them, and
    /// faulted half its memory in again at every round.)
    fn cut_to_demand(&mut self) {
        let demand = self.taken.iter().sum();
        self.adaptive_pages = self.adaptive_pages.min(demand);
    }

    /// Coalesces a free span (kind `Free` or `Returned`, on no list) with same-kind
    /// neighbours, records it in the page map and links it.
    ///
    /// # Safety
    /// - `span` is a valid free record on no list whose page-map leaves exist.
    unsafe fn merge_and_link(&mut self, span: *mut Span) {
        // SAFETY: per the caller; neighbours found through the page map are checked to be
        // free spans of this heap that really touch `span` before they are used.
        unsafe {
            let kind = (*span).kind();
            let start = (*span).start();
            if start.0 > 0 {
                let left = page_map::get(PageId(start.0 - 1));
                if !left.is_null() && (*left).kind() == kind && (*left).end() == start {
                    self.unlink(left);
                    (*span).set_start((*left).start());
                    (*span).set_pages(Length((*span).pages().0 + (*left).pages().0));
                    (*span).freed_at = (*span).freed_at.max((*left).freed_at);
                    metadata::delete_span(left);
                }
            }
            let end = (*span).end();
            let right = page_map::get(end);
            if !right.is_null() && (*right).kind() == kind && (*right).start() == end {
                self.unlink(right);
                (*span).set_pages(Length((*span).pages().0 + (*right).pages().0));
                (*span).freed_at = (*span).freed_at.max((*right).freed_at);
                metadata::delete_span(right);
            }
            self.record_free(span);
            self.link(span);
        }
    }

    /// Maps a new chunk big enough for `pages` pages; false when out of memory.
    fn grow(&mut self, pages: Length) -> bool {
        let Some(bytes) = pages.bytes().checked_next_multiple_of(HEAP_GROWTH_BYTES) else {
            return false;
        };
        let record = metadata::new_span();
        if record.is_null() {
            return false;
        }
        let from_arena = self.arena.take(bytes);
        let memory = from_arena.or_else(|| os::map_aligned(bytes, HEAP_GROWTH_BYTES));
        let start = memory.map(|m| PageId::containing(m.as_ptr() as usize));
        let chunk = Length(bytes / PAGE_SIZE);
        let Some(start) = start.filter(|&s| page_map::ensure(s, chunk)) else {
            match (from_arena, memory) {
                // SAFETY: the chunk was just taken and never handed out.
                (Some(m), _) => unsafe { self.arena.put_back(m.as_ptr(), bytes) },
                // SAFETY: the chunk was just mapped and never handed out.
                (None, Some(m)) => unsafe { os::unmap(m.as_ptr(), bytes) },
                (None, None) => {}
            }
            // SAFETY: the record was never used.
            unsafe { metadata::delete_span(record) };
            return false;
        };
        self.system_pages += chunk.0;
        if self.system_pages >= self.huge_threshold_pages {
            self.huge = true;
        }
        // SAFETY: fresh record for fresh, untouched (hence `Returned`) memory whose leaves exist.
        unsafe {
            Span::init(record, start, chunk, SpanKind::Returned);
            self.merge_and_link(record);
        }
        true
    }

    /// Gives free backed spans back to the OS, biggest first, until at least `pages` pages
    /// were released or none are left; returns the pages released. Stops at the first span
    /// the kernel refuses to release (see [`release_span`](Self::release_span)): the next
    /// biggest are most likely locked as well.
    pub fn release(&mut self, pages: Length) -> Length {
        let mut released = 0;
        while released < pages.0 {
            let span = self.biggest_free();
            if span.is_null() {
                break;
            }
            // SAFETY: `span` is on a free list.
            match unsafe { self.release_span(span) } {
                Some(pages) => released += pages.0,
                None => break,
            }
        }
        Length(released)
    }

    /// Gives back free backed spans that were freed at or before `before` (a time from
    /// `os::now_millis`); returns the pages released.
    pub fn release_older_than(&mut self, before: u64) -> Length {
        let mut released = 0;
        for n in (1..=MAX_EXACT_PAGES + 1).rev() {
            loop {
                let list = if n > MAX_EXACT_PAGES { &self.free_large } else { &self.free[n] };
                // SAFETY: list members are valid records.
                let old = list.iter().find(|&s| unsafe { (*s).freed_at } <= before);
                let Some(span) = old else { break };
                // SAFETY: `span` is on a free list. When the kernel refuses, the next spans
                // are most likely locked as well: stop.
                match unsafe { self.release_span(span) } {
                    Some(pages) => released += pages.0,
                    None => return Length(released),
                }
            }
        }
        Length(released)
    }

    fn biggest_free(&self) -> *mut Span {
        if !self.free_large.is_empty() {
            return self.free_large.head;
        }
        (1..=MAX_EXACT_PAGES)
            .rev()
            .map(|n| self.free[n].head)
            .find(|s| !s.is_null())
            .unwrap_or(ptr::null_mut())
    }

    /// Releases one `Free` span to the OS and relinks it as `Returned`; returns its pages.
    ///
    /// `None` when the kernel refuses: `MADV_DONTNEED` fails with `EINVAL` on locked memory,
    /// which is all of the heap in a program that called `mlockall(MCL_CURRENT | MCL_FUTURE)`.
    /// The span then stays backed, and counts as freed now, so that the decay does not try
    /// it again before the decay time; the callers stop at a refusal. (Both release loops
    /// used to take the refused span again and again, forever, holding the heap's lock: such
    /// a program hung at the first free beyond the reserve.)
    ///
    /// # Safety
    /// - `span` is on a free list of kind `Free`.
    unsafe fn release_span(&mut self, span: *mut Span) -> Option<Length> {
        // SAFETY: per the caller; the span's memory is free, so its contents are dead.
        unsafe {
            self.unlink(span);
            let pages = (*span).pages();
            if !os::release((*span).start_address() as *mut u8, pages.bytes()) {
                (*span).freed_at = os::now_millis();
                self.link(span);
                return None;
            }
            // From now on `freed_at` is the time of release, which `note_taken` compares with.
            (*span).freed_at = os::now_millis();
            (*span).set_kind(SpanKind::Returned);
            self.merge_and_link(span);
            Some(pages)
        }
    }

    pub fn stats(&self) -> PageHeapStats {
        PageHeapStats {
            system_bytes: self.system_pages * PAGE_SIZE,
            free_bytes: self.free_pages * PAGE_SIZE,
            returned_bytes: self.returned_pages * PAGE_SIZE,
            in_use_bytes: self.in_use_pages * PAGE_SIZE,
            arena_reserved_bytes: self.arena.bytes().0,
            arena_used_bytes: self.arena.bytes().1,
        }
    }

    /// Checks every invariant listed on the struct; aborts with the offending values.
    pub fn check_invariants(&self) {
        let mut free = 0;
        let mut returned = 0;
        let lists = (0..=MAX_EXACT_PAGES)
            .map(|n| (&self.free[n], SpanKind::Free, Some(n)))
            .chain((0..=MAX_EXACT_PAGES).map(|n| (&self.returned[n], SpanKind::Returned, Some(n))))
            .chain([(&self.free_large, SpanKind::Free, None)])
            .chain([(&self.returned_large, SpanKind::Returned, None)]);
        for (list, kind, exact) in lists {
            for span in list.iter() {
                // SAFETY: list members are valid records.
                let s = unsafe { &*span };
                let pages = s.pages().0;
                invariant_eq!(s.kind(), kind, "span at page {:#x} on the wrong list", s.start().0);
                match exact {
                    Some(n) => invariant_eq!(pages, n, "span of {pages} pages on list {n}"),
                    None => invariant!(pages > MAX_EXACT_PAGES, "pages > MAX_EXACT_PAGES"),
                }
                invariant_eq!(page_map::get(s.start()), span, "first page not recorded");
                invariant_eq!(page_map::get(PageId(s.end().0 - 1)), span, "last page not recorded");
                let right = page_map::get(s.end());
                if !right.is_null() {
                    // SAFETY: page-map entries are valid records (possibly stale).
                    let r = unsafe { &*right };
                    invariant!(
                        !(r.kind() == kind && r.start() == s.end()),
                        "adjacent free spans at pages {:#x} and {:#x} not coalesced",
                        s.start().0,
                        r.start().0
                    );
                }
                match kind {
                    SpanKind::Free => free += pages,
                    _ => returned += pages,
                }
            }
        }
        invariant_eq!(free, self.free_pages, "free page count");
        invariant_eq!(returned, self.returned_pages, "returned page count");
        invariant_eq!(free + returned + self.in_use_pages, self.system_pages, "page totals");
    }
}

/// The arena: one region of address space reserved up front
/// ([`ARENA_BYTES`](crate::config::ARENA_BYTES)), from which the process's page heap takes
/// its chunks in order, so that C `free` can validate its objects through the page map's flat
/// arena index. Chunks are opened with `mprotect` as they are taken; a heap that outgrows the
/// arena, or a process that cannot reserve it, maps its further chunks anywhere. The
/// reservation is at most `TCALLOC_ARENA_BYTES` and, under a limit on address space
/// (`RLIMIT_AS`), a quarter of it; a refused one is halved down to 64 MiB before the heap goes
/// without. (A program that lowers `RLIMIT_AS` after it started to allocate finds the
/// reservation counted against its new limit: `TCALLOC_ARENA_BYTES` sizes it down or, at 0,
/// turns it off.) Part of the page heap, under its lock (which the fork handlers hold).
mod arena {
    use crate::config::{ARENA_BYTES, HEAP_GROWTH_BYTES};
    use crate::os;
    use crate::page_map;
    use core::ptr::NonNull;

    pub struct Arena {
        /// Whether this heap grows into the arena (the process's heap does; the arena is one
        /// per process, and a second heap's chunks beside the first's would coalesce with
        /// them).
        enabled: bool,
        /// Whether the reservation was tried.
        tried: bool,
        /// The start of the reservation, its next chunk and its end (all 0 without one).
        base: usize,
        next: usize,
        end: usize,
    }

    /// The smallest arena worth reserving: 16 chunks.
    const MIN_ARENA_BYTES: usize = 16 * HEAP_GROWTH_BYTES;

    /// The arena's first chunk is never taken: it stays reserved and inaccessible, a guard
    /// below the heap. The kernel places the mappings made after the reservation (the page
    /// map's leaves, metadata) right below it, so without the guard a write 1 MiB below one
    /// of the first blocks (mimalloc-bench's `one_mbyte_underflow`) went silently into the
    /// page map; with it, it faults.
    const GUARD_BYTES: usize = HEAP_GROWTH_BYTES;

    impl Arena {
        pub const fn new(enabled: bool) -> Arena {
            Arena { enabled, tried: false, base: 0, next: 0, end: 0 }
        }

        /// The next `bytes` of the arena (a multiple of `HEAP_GROWTH_BYTES`), opened for
        /// reading and writing; `None` when there is no arena or it is used up.
        pub fn take(&mut self, bytes: usize) -> Option<NonNull<u8>> {
            if !self.enabled {
                return None;
            }
            if !self.tried {
                self.tried = true;
                self.reserve();
            }
            if self.end - self.next < bytes {
                return None;
            }
            let chunk = self.next as *mut u8;
            // The chunk's entries in the arena index are opened first: its spans write them.
            if !page_map::open_arena_index(self.next, bytes) {
                return None;
            }
            // SAFETY: the range lies in the reservation, after every chunk taken so far.
            if !unsafe { os::commit(chunk, bytes) } {
                return None;
            }
            self.next += bytes;
            NonNull::new(chunk)
        }

        fn reserve(&mut self) {
            // `TCALLOC_ARENA_BYTES` first; then, under a limit on address space, at most a
            // quarter of it (the rest of the heap can still grow anywhere; large blocks,
            // stacks and libraries need it too).
            let setting = crate::env::arena_bytes(ARENA_BYTES).min(ARENA_BYTES);
            let most = os::address_space_limit().map_or(setting, |limit| setting.min(limit / 4));
            let mut len = ARENA_BYTES;
            while len > most {
                len /= 2;
            }
            while len >= MIN_ARENA_BYTES {
                if let Some(reserved) = os::reserve(len, HEAP_GROWTH_BYTES) {
                    let base = reserved.as_ptr() as usize;
                    if !page_map::set_arena(base, len) {
                        // No index: no arena either.
                        // SAFETY: the reservation just made, which nothing uses.
                        unsafe { os::unmap(reserved.as_ptr(), len) };
                        return;
                    }
                    self.base = base;
                    self.next = base + GUARD_BYTES;
                    self.end = base + len;
                    return;
                }
                len /= 2;
            }
        }

        /// Bytes of address space reserved for the arena (0 without one), and bytes of it
        /// the heap took.
        pub fn bytes(&self) -> (usize, usize) {
            let taken = if self.base == 0 { 0 } else { self.next - self.base - GUARD_BYTES };
            (self.end - self.base, taken)
        }

        /// Gives back the chunk that [`take`](Self::take) returned last, which was never
        /// used; it stays open and is taken again next.
        ///
        /// # Safety
        /// - `[p, p + bytes)` is the last chunk `take` returned, and nothing uses it.
        pub unsafe fn put_back(&mut self, p: *mut u8, bytes: usize) {
            if self.next == p as usize + bytes {
                self.next = p as usize;
            }
        }
    }
}

#[cold]
fn unreachable_kind(kind: SpanKind) -> ! {
    crate::diag::fatal(format_args!("page heap: span of kind {kind:?} on a free list"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heap() -> Lock<PageHeap> {
        Lock::new(PageHeap::new())
    }

    /// A heap on huge pages from its first page, keeping every free page backed (a new heap's
    /// policy) until a test sets another.
    fn huge_heap() -> Lock<PageHeap> {
        let heap = heap();
        heap.lock().set_huge_threshold(Length(0));
        heap
    }

    #[test]
    fn split_and_coalesce() {
        let heap = heap();
        let mut h = heap.lock();
        let a = h.allocate(Length(3), SpanKind::PageRun);
        let b = h.allocate(Length(5), SpanKind::PageRun);
        let c = h.allocate(Length(2), SpanKind::PageRun);
        assert!(!a.is_null() && !b.is_null() && !c.is_null());
        h.check_invariants();
        // SAFETY: the spans were just allocated and are distinct.
        unsafe {
            assert_eq!((*a).end(), (*b).start(), "carved in address order from one chunk");
            assert_eq!((*b).end(), (*c).start());
            for k in 0..5 {
                assert_eq!(page_map::get((*b).start().add(Length(k))), b);
            }
            let chunk_start = (*a).start();
            let stats = h.stats();
            assert_eq!(stats.in_use_bytes, 10 * PAGE_SIZE);
            // Freed pages are backed (`Free`); they do not merge with the untouched rest.
            h.deallocate(b);
            h.check_invariants();
            h.deallocate(a);
            h.check_invariants();
            assert_eq!(h.stats().free_bytes, 8 * PAGE_SIZE, "a and b coalesced");
            let ab = page_map::get(chunk_start);
            assert_eq!((*ab).pages(), Length(8));
            h.deallocate(c);
            h.check_invariants();
            assert_eq!(h.stats().free_bytes, 10 * PAGE_SIZE);
            assert_eq!(h.stats().in_use_bytes, 0);
            // A request that fits the freed run reuses it.
            let d = h.allocate(Length(10), SpanKind::Small);
            assert_eq!((*d).start(), chunk_start);
            h.deallocate(d);
        }
        h.check_invariants();
    }

    #[test]
    fn release_moves_pages_to_returned() {
        let heap = heap();
        let mut h = heap.lock();
        let a = h.allocate(Length(4), SpanKind::PageRun);
        // SAFETY: `a` is ours; writing to it faults its pages in.
        unsafe {
            core::ptr::write_bytes((*a).start_address() as *mut u8, 0xAB, 4 * PAGE_SIZE);
            h.deallocate(a);
        }
        assert_eq!(h.stats().free_bytes, 4 * PAGE_SIZE);
        let released = h.release(Length(1));
        assert_eq!(released, Length(4));
        assert_eq!(h.stats().free_bytes, 0);
        assert_eq!(h.stats().returned_bytes, h.stats().system_bytes);
        h.check_invariants();
        // Released memory reads as zeros when reused.
        let b = h.allocate(Length(4), SpanKind::PageRun);
        // SAFETY: `b` is ours.
        unsafe {
            let bytes =
                core::slice::from_raw_parts((*b).start_address() as *const u8, 4 * PAGE_SIZE);
            assert!(bytes.iter().all(|&x| x == 0));
            h.deallocate(b);
        }
        h.check_invariants();
    }

    /// A field of the entry of `/proc/self/smaps` for the mapping that holds `address` (the
    /// text after the field's name).
    fn smaps_field(address: usize, field: &str) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().unwrap_or("");
            if let Some((from, to)) = range.split_once('-') {
                if let (Ok(from), Ok(to)) =
                    (usize::from_str_radix(from, 16), usize::from_str_radix(to, 16))
                {
                    inside = (from..to).contains(&address);
                    continue;
                }
            }
            if inside {
                if let Some(value) = line.strip_prefix(field) {
                    return value.trim().to_string();
                }
            }
        }
        panic!("no mapping holds {address:#x}");
    }

    /// The tests that build huge pages, one at a time: another heap's huge pages may share
    /// the mapping whose `AnonHugePages` a test reads (the kernel merges neighbouring
    /// mappings), so the counts are compared before and after, with no build in between.
    static HUGE_PAGE_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// A heap past its huge-page threshold builds the huge page of a carve from returned
    /// pages: of a fresh chunk, at its first carve; of one split by a release, when it carves
    /// there again (the live pages in it keep what they hold). The rest of the huge page counts
    /// as backed free pages.
    #[test]
    fn a_heap_on_huge_pages_builds_the_huge_pages_it_carves_from() {
        let _one_at_a_time = HUGE_PAGE_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        const HUGE: usize = crate::config::HUGE_PAGE_PAGES;
        // Whether this kernel builds a huge page now (Linux 6.1 with THP, and a free huge
        // page): if not, the heap carves as before, which the rest checks.
        let builds = {
            let bytes = 2 * crate::config::HUGE_PAGE_BYTES;
            let p = os::map(bytes).unwrap().as_ptr();
            let huge = p.wrapping_add(p.align_offset(crate::config::HUGE_PAGE_BYTES));
            // SAFETY: a fresh mapping of ours, with a whole huge page in it.
            unsafe {
                huge.write(1);
                let built = os::collapse_huge_pages(huge, crate::config::HUGE_PAGE_BYTES);
                os::unmap(p, bytes);
                built
            }
        };
        let huge_kib = |address: usize| {
            let field = smaps_field(address, "AnonHugePages:");
            field.trim_end_matches("kB").trim().parse::<usize>().unwrap()
        };

        // A fresh chunk: its first carve builds the first huge page.
        let heap = huge_heap();
        let mut h = heap.lock();
        let first = h.allocate(Length(1), SpanKind::PageRun);
        // SAFETY: ours.
        let base = unsafe { (*first).start() };
        assert_eq!(base.0 % HUGE, 0);
        if builds {
            // (At least: the chunk's mapping may have merged with an earlier heap's.)
            assert!(huge_kib(base.address()) >= 2048, "the fresh chunk's first huge page");
            let s = h.stats();
            assert_eq!(s.free_bytes, 255 * PAGE_SIZE, "the rest of it is backed and free");
        }
        h.check_invariants();
        // SAFETY: ours, unused.
        unsafe { h.deallocate(first) };

        // One span of 1024 pages on small pages (a carve across huge pages builds none),
        // backed and free; then live = [0, 10), x = [10, 100), y = [100, 1024) of it, and x and
        // y are freed and given back: x splits the first huge page.
        let heap = huge_heap();
        let mut h = heap.lock();
        let whole = h.allocate(Length(1024), SpanKind::PageRun);
        // SAFETY: ours.
        let base = unsafe { (*whole).start() };
        assert_eq!(base.0 % HUGE, 0);
        // What the mapping holds in huge pages already (the kernel may have merged it with
        // the first heap's).
        let before = huge_kib(base.address());
        // SAFETY: ours; touching makes the pages resident; then it is freed whole (and kept).
        unsafe {
            ((*whole).start_address() as *mut u8).write_bytes(1, 1024 * PAGE_SIZE);
            h.deallocate(whole);
        }
        if builds {
            let kib = huge_kib(base.address());
            assert_eq!(kib, before, "a span across huge pages stays on small ones");
        }
        let [live, x, y] = [10, 90, 924].map(|n| h.allocate(Length(n), SpanKind::PageRun));
        // SAFETY: the spans are ours; x and y are unused when freed.
        unsafe {
            let starts = [(*live).start(), (*x).start(), (*y).start()];
            assert_eq!(starts, [0, 10, 100].map(|p| base.add(Length(p))));
            ((*live).start_address() as *mut u8).write_bytes(7, 10 * PAGE_SIZE);
            h.set_policy(Length(0), u64::MAX);
            h.deallocate(x);
            h.deallocate(y);
        }
        h.check_invariants();
        assert_eq!((h.stats().free_bytes, h.stats().returned_bytes), (0, 1014 * PAGE_SIZE));

        // A carve from the given-back pages: the first huge page is built whole.
        let z = h.allocate(Length(1), SpanKind::PageRun);
        // SAFETY: ours; the live span's pages are ours too.
        unsafe {
            assert_eq!((*z).start(), base.add(Length(10)));
            *((*z).start_address() as *mut u8) = 2;
            let live = (*live).start_address() as *const u8;
            let live = core::slice::from_raw_parts(live, 10 * PAGE_SIZE);
            assert!(live.iter().all(|&b| b == 7), "the live pages keep what they hold");
        }
        h.check_invariants();
        if builds {
            let s = h.stats();
            assert_eq!(
                (s.free_bytes, s.returned_bytes),
                (245 * PAGE_SIZE, 768 * PAGE_SIZE),
                "the rest of the first huge page is backed and free, the other three given back"
            );
            let kib = huge_kib(base.address());
            assert_eq!(kib, before + 2048, "the first huge page is whole again");
        }
        // The next carve takes the backed rest, and builds nothing.
        let w = h.allocate(Length(1), SpanKind::PageRun);
        // SAFETY: ours.
        assert_eq!(unsafe { (*w).start() }, base.add(Length(11)));
        h.check_invariants();
    }

    /// A heap on huge pages carves from backed free pages before returned ones, even where a
    /// returned span fits better: a carve from returned pages makes their whole huge page
    /// resident.
    #[test]
    fn a_heap_on_huge_pages_takes_backed_pages_first() {
        let heap = huge_heap();
        let mut h = heap.lock();
        // One chunk of 1024 pages, backed and free, then a = [0, 5), b = [5, 300) and
        // c = [300, 1024) of it.
        let whole = h.allocate(Length(1024), SpanKind::PageRun);
        // SAFETY: ours; touched, then freed whole (and kept).
        unsafe {
            ((*whole).start_address() as *mut u8).write_bytes(1, 1024 * PAGE_SIZE);
            h.deallocate(whole);
        }
        let [a, b, c] = [5, 295, 724].map(|n| h.allocate(Length(n), SpanKind::PageRun));
        // SAFETY: the spans are ours, and nothing of them is live when they are freed.
        let base = unsafe {
            assert_eq!(
                [(*b).start().0, (*c).start().0],
                [(*a).start().0 + 5, (*a).start().0 + 300]
            );
            h.set_policy(Length(0), u64::MAX);
            h.deallocate(a);
            h.set_policy(Length(usize::MAX), u64::MAX);
            h.deallocate(c);
            (*a).start()
        };
        let s = h.stats();
        assert_eq!((s.free_bytes, s.returned_bytes), (724 * PAGE_SIZE, 5 * PAGE_SIZE));
        let d = h.allocate(Length(1), SpanKind::PageRun);
        // SAFETY: ours.
        assert_eq!(unsafe { (*d).start() }, base.add(Length(300)), "taken from c, backed");
        h.check_invariants();
        // SAFETY: ours.
        unsafe { h.deallocate(b) };
    }

    /// A heap on huge pages under random operations (carves of every kind, growth in place,
    /// frees, release policies, releases): its invariants hold, every page of a live span is
    /// recorded as that span's and keeps what was written there, while it builds huge pages
    /// and gives pages back.
    #[test]
    fn a_heap_on_huge_pages_survives_random_operations() {
        let _one_at_a_time = HUGE_PAGE_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        for seed in 1..=3u64 {
            let heap = huge_heap();
            let mut h = heap.lock();
            let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut next = move |n: u64| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % n) as usize
            };
            // Live spans and the byte written on each of their pages.
            let mut live: Vec<(*mut Span, u8)> = Vec::new();
            let fill = |s: *mut Span, from: usize, byte: u8| {
                // SAFETY: `s` is live and ours; one byte per page of it from page `from`.
                unsafe {
                    for k in from..(*s).pages().0 {
                        *((*s).start().add(Length(k)).address() as *mut u8) = byte;
                    }
                }
            };
            for step in 0..3000u32 {
                let byte = (step % 251 + 1) as u8;
                match next(100) {
                    0..=39 => {
                        let n = Length(1 + next(200));
                        let s = match next(3) {
                            0 => h.allocate(n, SpanKind::PageRun),
                            1 => h.allocate_aligned(n, Length(1 << next(9)), SpanKind::PageRun),
                            _ => h.allocate_with_room(n, Length(n.0 + next(100)), SpanKind::Small),
                        };
                        assert!(!s.is_null());
                        fill(s, 0, byte);
                        live.push((s, byte));
                    }
                    40..=49 if !live.is_empty() => {
                        let (s, b) = live[next(live.len() as u64)];
                        // SAFETY: a live span of ours.
                        let old = unsafe { (*s).pages().0 };
                        // SAFETY: as above.
                        if unsafe { h.extend(s, Length(old + 1 + next(50))) } {
                            fill(s, old, b);
                        }
                    }
                    50..=89 if !live.is_empty() => {
                        let (s, _) = live.swap_remove(next(live.len() as u64));
                        // SAFETY: ours, and nothing of it is used again.
                        unsafe { h.deallocate(s) };
                    }
                    90..=94 => h.set_policy(Length(next(300)), u64::MAX),
                    _ => {
                        h.release(Length(next(2000)));
                    }
                }
                if step % 16 == 0 {
                    h.check_invariants();
                    for &(s, b) in &live {
                        // SAFETY: live spans of ours.
                        unsafe {
                            for k in 0..(*s).pages().0 {
                                let page = (*s).start().add(Length(k));
                                assert_eq!(page_map::get(page), s, "seed {seed}, step {step}");
                                assert_eq!(*(page.address() as *const u8), b, "seed {seed}");
                            }
                        }
                    }
                }
            }
            for (s, _) in live {
                // SAFETY: ours.
                unsafe { h.deallocate(s) };
            }
            h.check_invariants();
        }
    }

    #[test]
    fn reserve_caps_backed_free_pages() {
        let heap = heap();
        let mut h = heap.lock();
        h.set_policy(Length(8), u64::MAX);
        let spans: Vec<_> = (0..6).map(|_| h.allocate(Length(4), SpanKind::PageRun)).collect();
        for &s in &spans {
            // SAFETY: each span is ours; touching it makes it resident.
            unsafe { ((*s).start_address() as *mut u8).write_bytes(1, 4 * PAGE_SIZE) };
        }
        // Free every other span so that they cannot coalesce.
        for &s in spans.iter().step_by(2) {
            // SAFETY: ours, unused.
            unsafe { h.deallocate(s) };
            assert!(h.stats().free_bytes <= 8 * PAGE_SIZE, "{:?}", h.stats());
        }
        assert_eq!(h.stats().free_bytes, 8 * PAGE_SIZE, "the reserve is kept");
        h.check_invariants();
        let before = os::now_millis() + 1;
        assert_eq!(h.release_older_than(before), Length(8), "idle spans decay");
        assert_eq!(h.stats().free_bytes, 0);
        h.check_invariants();
    }

    /// One round of a program that reuses pages: takes `pages` pages, touches them (making
    /// them resident) and frees them whole. The backed free bytes after it.
    fn take_touch_and_free(h: &mut PageHeap, pages: usize) -> usize {
        let s = h.allocate(Length(pages), SpanKind::PageRun);
        // SAFETY: ours; touching makes it resident; then it is freed whole.
        unsafe {
            ((*s).start_address() as *mut u8).write_bytes(3, pages * PAGE_SIZE);
            h.deallocate(s);
        }
        h.check_invariants();
        h.stats().free_bytes
    }

    #[test]
    fn reserve_adapts_to_rounds_of_reuse() {
        let heap = heap();
        let mut h = heap.lock();
        h.set_policy(Length(0), 60_000);
        let round = |h: &mut PageHeap| take_touch_and_free(h, 8);
        assert_eq!(round(&mut h), 0, "no reserve: the first round is released at once");
        assert_eq!(round(&mut h), 8 * PAGE_SIZE, "reuse right after release: kept backed");
        assert_eq!(round(&mut h), 8 * PAGE_SIZE);
        // Without reuse for the decay time, the adaptive part lapses.
        h.set_policy(Length(0), 0);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(round(&mut h), 0);
    }

    /// The adaptive reserve lasts while the rounds go on, also when every round takes back
    /// pages it kept (none released, so none "reused after release"), and lapses after a
    /// pause longer than its hold time. mstress frees and reallocates in rounds of about 70 ms:
    /// its reserve lapsed one window (100 ms) after the last reuse of released pages, and
    /// every other round faulted its pages in again.
    #[test]
    fn the_adaptive_reserve_lasts_while_rounds_take_back_the_pages_it_kept() {
        let heap = heap();
        let mut h = heap.lock();
        h.set_policy(Length(0), 60_000);
        let mut now = 1_000_000;
        let mut round = |h: &mut PageHeap, after_ms: u64| {
            now += after_ms;
            os::set_fake_now_millis(Some(now));
            take_touch_and_free(h, 8)
        };
        assert_eq!(round(&mut h, 0), 0, "no reserve: the first round is released at once");
        assert_eq!(round(&mut h, 10), 8 * PAGE_SIZE, "reused right after release: kept");
        for i in 0..10 {
            assert_eq!(round(&mut h, 60), 8 * PAGE_SIZE, "round {i}, 60 ms after the one before");
        }
        assert_eq!(round(&mut h, 1500), 0, "after a pause longer than the hold: released");
        os::set_fake_now_millis(None);
    }

    /// Rounds whose frees alone take longer than a window keep their reserve: a program that
    /// takes spans for 90 ms and then frees them for 120 ms (scatter-1m allocates a million
    /// blocks and frees them in random order, about 150 ms a round) took nothing in the
    /// windows of its frees. When the reserve was cut at the end of each 100 ms window to what
    /// that window took, it was gone halfway through the frees, and every round faulted half
    /// its pages in again. Frees that go on for longer than the hold time after the last take
    /// (a program that frees everything and stops) give the pages back as they come.
    #[test]
    fn the_adaptive_reserve_lasts_through_frees_longer_than_a_window() {
        let heap = heap();
        let mut h = heap.lock();
        h.set_policy(Length(0), 60_000);
        let mut now = 3_000_000;
        let spans = 6;
        // The pages kept backed after each free of a round.
        let mut round = |h: &mut PageHeap, free_every_ms: u64| {
            let mut taken = Vec::new();
            for _ in 0..spans {
                now += 15;
                os::set_fake_now_millis(Some(now));
                let s = h.allocate(Length(4), SpanKind::PageRun);
                // SAFETY: ours; touching makes it resident.
                unsafe { ((*s).start_address() as *mut u8).write_bytes(3, 4 * PAGE_SIZE) };
                taken.push(s);
            }
            let mut kept = Vec::new();
            for s in taken {
                now += free_every_ms;
                os::set_fake_now_millis(Some(now));
                // SAFETY: ours, nothing of it is live.
                unsafe { h.deallocate(s) };
                kept.push(h.stats().free_bytes / PAGE_SIZE);
            }
            h.check_invariants();
            kept
        };
        let first = round(&mut h, 20);
        assert_eq!(first, [0; 6], "no reserve: the first round is released as it frees");
        for i in 0..5 {
            let kept = round(&mut h, 20);
            assert_eq!(kept, [4, 8, 12, 16, 20, 24], "round {i}: every freed page stays backed");
        }
        // Frees 200 ms apart: the first comes within the hold time of the last take, the
        // second after it, when nothing was taken for a whole hold time.
        let slow = round(&mut h, 200);
        assert_eq!(slow[0], 4, "freed within the hold time after the last take: kept");
        assert_eq!(slow[1..], [0; 5], "freed after a hold time without takes: released");
        os::set_fake_now_millis(None);
    }

    /// A kernel that refuses to release (locked memory) leaves the spans backed; neither the
    /// release at a free beyond the reserve, nor an explicit release, nor the decay loops on
    /// the refused span. Each of them used to retry it forever, holding the heap's lock.
    #[test]
    fn a_refused_release_keeps_the_span_and_returns() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            os::set_release_refused(true);
            let heap = heap();
            let mut h = heap.lock();
            h.set_policy(Length(0), 60_000);
            let spans: Vec<_> = (0..4).map(|_| h.allocate(Length(4), SpanKind::PageRun)).collect();
            for s in spans {
                // SAFETY: ours, untouched, nothing of it is live.
                unsafe { h.deallocate(s) };
            }
            let kept = h.stats().free_bytes;
            let released = h.release(Length(usize::MAX));
            let decayed = h.release_older_than(u64::MAX);
            h.check_invariants();
            os::set_release_refused(false);
            done.send((kept, released, decayed)).unwrap();
        });
        let outcome = finished.recv_timeout(std::time::Duration::from_secs(20));
        let (kept, released, decayed) = outcome.expect("a refused release loops forever");
        assert_eq!(kept, 16 * PAGE_SIZE, "nothing released, everything still backed");
        assert_eq!((released, decayed), (Length(0), Length(0)));
    }

    /// After rounds, light traffic (a page taken now and then) does not keep the adaptive
    /// reserve up: it follows what the program took in the last hold time, and the rest goes
    /// back at the next free.
    #[test]
    fn the_adaptive_reserve_falls_to_what_light_traffic_takes() {
        let heap = heap();
        let mut h = heap.lock();
        h.set_policy(Length(0), 60_000);
        let mut now = 2_000_000;
        let mut cycle = |h: &mut PageHeap, pages: usize, after_ms: u64| {
            now += after_ms;
            os::set_fake_now_millis(Some(now));
            take_touch_and_free(h, pages)
        };
        for after_ms in [0, 10, 10] {
            cycle(&mut h, 64, after_ms);
        }
        assert_eq!(h.stats().free_bytes, 64 * PAGE_SIZE, "rounds of reuse: kept");
        for _ in 0..40 {
            cycle(&mut h, 1, 50);
        }
        let kept = h.stats().free_bytes / PAGE_SIZE;
        assert!(kept <= 6, "{kept} pages kept for one page taken every 50 ms (6 in the hold)");
        let reserve = h.adaptive_pages;
        assert!(reserve <= 6, "adaptive reserve of {reserve} pages for 6 taken in the hold");
        os::set_fake_now_millis(None);
    }

    #[test]
    fn spans_extend_into_free_neighbours_only() {
        let heap = heap();
        let mut h = heap.lock();
        let a = h.allocate(Length(2), SpanKind::PageRun);
        let b = h.allocate(Length(3), SpanKind::PageRun);
        // SAFETY: both spans are ours.
        unsafe {
            assert!(!h.extend(a, Length(3)), "the next pages belong to `b`");
            let b_start = (*b).start();
            h.deallocate(b);
            assert!(h.extend(a, Length(4)), "the next pages are free now");
            assert_eq!((*a).pages(), Length(4));
            assert_eq!(page_map::get(b_start.add(Length(1))), a);
            h.check_invariants();
            assert!(h.extend(a, Length(4)), "already that long");
            h.deallocate(a);
            // A span allocated with room can grow into it.
            let c = h.allocate_with_room(Length(2), Length(64), SpanKind::PageRun);
            let d = h.allocate(Length(1), SpanKind::PageRun);
            assert!(h.extend(c, Length(64)), "the room after `c` is still free");
            assert_ne!((*d).start(), (*c).end(), "`d` did not take the room");
            h.deallocate(c);
            h.deallocate(d);
        }
        h.check_invariants();
    }

    #[test]
    fn aligned_allocation() {
        let heap = heap();
        let mut h = heap.lock();
        let _pad = h.allocate(Length(1), SpanKind::PageRun);
        for align in [2usize, 8, 64, 128] {
            let s = h.allocate_aligned(Length(3), Length(align), SpanKind::PageRun);
            assert!(!s.is_null());
            // SAFETY: `s` is ours.
            unsafe {
                assert_eq!((*s).start().0 % align, 0);
                assert_eq!((*s).pages(), Length(3));
                h.check_invariants();
                h.deallocate(s);
            }
            h.check_invariants();
        }
    }

    #[test]
    fn large_spans_use_best_fit() {
        let heap = heap();
        let mut h = heap.lock();
        let big = h.allocate(Length(MAX_EXACT_PAGES + 50), SpanKind::PageRun);
        assert!(!big.is_null());
        h.check_invariants();
        let bigger = h.allocate(Length(MAX_EXACT_PAGES * 3), SpanKind::PageRun);
        assert!(!bigger.is_null());
        // SAFETY: both are ours.
        unsafe {
            let big_start = (*big).start();
            h.deallocate(big);
            h.check_invariants();
            let again = h.allocate(Length(MAX_EXACT_PAGES + 10), SpanKind::PageRun);
            assert_eq!((*again).start(), big_start, "best fit reuses the freed run");
            h.deallocate(again);
            h.deallocate(bigger);
        }
        h.check_invariants();
    }
}
