//! Central free lists: where thread caches refill and flush, a whole batch
//! (`SizeClass::batch` objects) at a time.
//!
//! Two stores hold the free objects of a class:
//!
//! - the **transfer caches** (`transfer_cache`): sharded stacks of complete batches. A flush
//!   followed by a refill moves a batch in O(1) without touching its objects;
//! - the **spans** of the class, behind one lock per class on its own cache line
//!   ([`CentralFreeList`]): objects that did not fit the transfer caches go back to the span
//!   they were carved from (found through the page map). A span with a free object is on
//!   `nonempty`; a span whose objects are all back is returned to the page heap at once.
//!
//! [`refill`] and [`flush`] try the transfer caches first and fall back to the spans. Batches
//! idle in a transfer cache for a while are returned to their spans by the release policy's
//! tick ([`drain_idle`]), so that emptied spans can go back to the OS.
//!
//! New spans come from the page heap (lock order: central list, then page heap). Objects are
//! carved lazily, in address order and a page at a time (every object that starts on a page
//! the batch reaches), so a fresh span's untouched tail costs no memory; a page's tag is set
//! when it is carved, so C `free` accepts only objects that a list or the program holds. Before carving a new span, a class may **borrow** free objects from the partly used
//! spans of a slightly larger class (at most a third larger, at least as aligned, and only when
//! that class holds at least [`BORROW_MIN_BYTES`] free): after a phase of the program frees most objects of one
//! size, the holes are reused for the next size instead of growing the heap. A borrowed object
//! goes back to the span (and list) it came from; statistics count it in its span's class.
//! Failing that, it takes returned objects from another shard's spans: of its own class where
//! that shard holds at least a span's worth free, then of the classes it may borrow from, on
//! the same terms as in its own shard (the other shards' locks are only tried): with a shard
//! per CPU, holes left on one CPU are reused on another before the heap grows. After the other
//! shards had nothing, a list leaves them alone for a while ([`BORROW_PAUSE_MAX_BYTES`]), so
//! that a growing heap does not try their locks at every new span.
//!
//! Entry points: [`refill`], [`flush`], [`drain_idle`], [`stats`], [`CentralFreeList`].
//! Layers below: `transfer_cache`, `page_heap`, `page_map`, `size_class`.

use crate::config::{MAX_SHARDS, OS_PAGE_SIZE, PAGE_SIZE};
use crate::diag::{invariant, invariant_eq};
use crate::free_list::{self, FreeObject};
use crate::page_heap::{PageHeap, PAGE_HEAP};
use crate::page_map;
use crate::size_class::{SizeClass, NUM_CLASSES};
use crate::span::{Length, Span, SpanKind, SpanList};
use crate::sync::{Lock, LockGuard};
use crate::transfer_cache;
use core::ptr;

/// The span side of every class, by shard and class (entry 0 unused): each thread carves from
/// the spans of its own shard, so threads on different shards do not contend for one lock. A
/// shard's classes lie together on lines of 64 bytes, so that a program that uses a few
/// classes writes a few pages of this table, not one page per class (a row of 121 classes is
/// two pages).
static CENTRAL: [[Line; NUM_CLASSES]; MAX_SHARDS] =
    [const { [const { Line(Lock::new(CentralFreeList::new())) }; NUM_CLASSES] }; MAX_SHARDS];

/// One class's list in one shard, alone on its cache line: two lists never share a line, so
/// threads of different shards (or classes) do not write each other's lines. Lines of 64
/// bytes, not the 128 that `CachePadded` pads to on x86-64 (for the adjacent-line prefetcher):
/// the neighbours of a list are the other classes of its shard, which the same threads use,
/// and half the size keeps a row of the table in half the pages.
#[repr(align(64))]
struct Line(Lock<CentralFreeList>);

const _: () = assert!(size_of::<Line>() == 64);

impl core::ops::Deref for Line {
    type Target = Lock<CentralFreeList>;
    fn deref(&self) -> &Lock<CentralFreeList> {
        &self.0
    }
}

/// The span side of `class` in `shard`.
#[inline]
pub fn central(class: SizeClass, shard: usize) -> &'static Lock<CentralFreeList> {
    &CENTRAL[shard % MAX_SHARDS][class.index()]
}

/// The span sides of `class` in the first `n` shards.
fn centrals(
    class: SizeClass,
    n: usize,
) -> impl DoubleEndedIterator<Item = &'static Lock<CentralFreeList>> {
    CENTRAL[..n].iter().map(move |row| &*row[class.index()])
}

/// Every span lock, by class from class 1, then by shard (all [`MAX_SHARDS`] of them), for
/// the statistics.
pub fn locks() -> impl DoubleEndedIterator<Item = &'static crate::sync::RawLock> {
    SizeClass::all().flat_map(|class| centrals(class, MAX_SHARDS).map(|l| l.raw()))
}

/// The span locks of the shards in use, for the fork handlers (a shard beyond
/// `transfer_cache::shards()` is never locked: every shard number is taken modulo it).
pub fn locks_in_use() -> impl DoubleEndedIterator<Item = &'static crate::sync::RawLock> {
    let n = transfer_cache::shards();
    SizeClass::all().flat_map(move |class| centrals(class, n).map(|l| l.raw()))
}

/// Takes up to `want` objects of `class` for a thread whose shard is `shard`: a whole batch
/// from the transfer caches when `want` is the batch size, else objects from the shard's
/// spans. Returns a null-terminated list and its length; length 0 means out of memory.
pub fn refill(class: SizeClass, shard: usize, want: usize) -> (*mut FreeObject, usize) {
    let shard = transfer_cache::shard_index(shard);
    if want == class.batch() {
        if let Some(batch) = transfer_cache::pop(class, shard) {
            return (batch, want);
        }
    }
    let got = central(class, shard).lock().remove_range(class, shard, want, &PAGE_HEAP);
    if got.1 > 0 {
        return got;
    }
    // No memory for a new span, but a batch may wait in a transfer cache: use part of it.
    match transfer_cache::pop(class, shard) {
        Some(mut batch) => {
            // SAFETY: transfer batches are lists of exactly `batch() >= want` dead objects of
            // the class; the rest go back to their spans.
            unsafe {
                let head = free_list::split_front(&mut batch, want);
                release_objects(batch);
                (head, want)
            }
        }
        None => got,
    }
}

/// Gives back `count` objects of `class` from a thread whose shard is `shard`; `spread` is
/// how far apart in memory the objects are (highest address minus lowest).
///
/// A whole batch of objects that lie close together goes to the transfer cache (which keeps
/// no whole spans: one-object classes go back to the page heap). A scattered
/// batch (the program frees in random order) goes straight back to its spans instead: kept
/// whole, its objects would pin one span each, and after a program frees a big peak in random
/// order the transfer caches would keep most of the peak's pages resident.
///
/// # Safety
/// - `head` is a well-formed list of exactly `count` dead objects of `class` from this
///   allocator.
pub unsafe fn flush(
    class: SizeClass,
    shard: usize,
    head: *mut FreeObject,
    count: usize,
    spread: usize,
) {
    if count == class.batch() {
        let kept = if !is_scattered(class, spread) {
            transfer_cache::push(class, shard, head)
        } else {
            transfer_cache::push_scattered(class, shard, head)
        };
        if kept {
            return;
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { release_objects(head) };
}

/// Gives back a list of an exiting thread's cache: straight to the objects' spans, not to
/// the transfer caches. The thread will not ask for them again, and spans whose
/// objects are all free then go back to the page heap, where any class can reuse their pages
/// and the release policy can give them back; kept as batches, they pinned their spans until
/// another thread happened to want that class. (glibc-simple, whose second thread exits after
/// each of three phases of one size each, peaked at 1 740 KiB with the batches kept and at
/// 1 612 KiB with them returned, medians of 5 runs.)
///
/// # Safety
/// - `head` is a well-formed list of dead objects from this allocator's small spans.
pub unsafe fn flush_exiting(head: *mut FreeObject) {
    // SAFETY: forwarded from the caller.
    unsafe { release_objects(head) };
}

/// Whether objects of `class` whose addresses spread over `spread` bytes are scattered:
/// farther apart than a batch that [`flush`] hands to the transfer cache as it is.
pub fn is_scattered(class: SizeClass, spread: usize) -> bool {
    spread > compact_spread(class)
}

/// The largest spread of a batch that the transfer cache keeps: a few spans' worth, so that a
/// batch held there pins about as many bytes as it holds.
fn compact_spread(class: SizeClass) -> usize {
    (16 * class.batch() * class.size()).max(16 * span_bytes(class))
}

/// Returns every object of a list to its span, under the lock of the list owning each span
/// (its class and shard: a list of one class may hold objects borrowed from a larger class).
///
/// Consecutive objects of a list were usually freed together and share a span, so the span
/// (and lock) of the previous object is tried before the page map.
///
/// A list freed in random order has about one span per object, whose record is out of the
/// cache: a first pass over the list (a thread cache's flush has just walked it, so its links
/// are in the cache) starts fetching every record, so that their misses overlap instead of
/// coming one after another. (scatter-1m spent 16% of its time on those misses, 10% with the
/// pass.)
///
/// # Safety
/// - `head` is a well-formed list of dead objects from this allocator's small spans.
unsafe fn release_objects(mut head: *mut FreeObject) {
    // SAFETY: per the caller.
    unsafe { prefetch_spans(head) };
    let mut held: Option<((usize, usize), LockGuard<'static, CentralFreeList>)> = None;
    let mut span: *mut Span = ptr::null_mut();
    let mut class = SizeClass::SMALLEST;
    let (mut low, mut high) = (0usize, 0usize);
    loop {
        // SAFETY: the list is well formed per the caller.
        let object = unsafe { free_list::pop(&mut head) };
        if object.is_null() {
            break;
        }
        let address = object as usize;
        if address.wrapping_sub(low) >= high - low {
            span = page_map::lookup(address);
            // SAFETY: the page map records the span of every page of a `Small` span, and the
            // span cannot change while it holds this (allocated) object.
            let (start, bytes, owner) = unsafe {
                let owner = ((*span).class_index(), (*span).shard());
                ((*span).start_address(), (*span).pages().bytes(), owner)
            };
            (low, high) = (start, start + bytes);
            if held.as_ref().is_none_or(|(o, _)| *o != owner) {
                let Some(owner_class) = SizeClass::new(owner.0) else {
                    crate::diag::fatal(format_args!(
                        "free list holds {object:?}, not a small object"
                    ))
                };
                // Never hold two lists' locks at once.
                drop(held.take());
                class = owner_class;
                held = Some((owner, central(class, owner.1).lock()));
            }
        }
        let Some((_, list)) = held.as_mut() else { break };
        // SAFETY: a dead object inside `span`, whose list is held.
        if unsafe { list.release_object(class, span, object, &PAGE_HEAP) } {
            // The span went back to the page heap; look the next object up afresh.
            (low, high) = (0, 0);
        }
    }
}

/// Starts fetching the span record of each object of a list whose objects lie in different
/// spans (consecutive objects of one span are fetched once).
///
/// # Safety
/// - `head` is a well-formed list of objects from this allocator's small spans.
unsafe fn prefetch_spans(mut head: *mut FreeObject) {
    let mut last = ptr::null_mut();
    while !head.is_null() {
        let span = page_map::lookup(head as usize);
        if span != last {
            // The fields `release_object` reads and writes span two cache lines at most.
            crate::os::prefetch(span.cast());
            crate::os::prefetch(span.cast::<u8>().wrapping_add(crate::span::RELEASE_BYTES - 1));
            last = span;
        }
        // SAFETY: per the caller.
        head = unsafe { free_list::next(head) };
    }
}

/// Whether `object`, the start of an object of `class` (as its page's tag says), lies on its
/// span's free list: it is free already, so freeing it is a double free (or the free of a
/// slot carved with its OS page but never handed out). The cold half of the double-free check
/// for a block that has left the thread's cache, run only when the top bytes of the block's
/// first word look like a link's: it locks the list that owns the span and walks the span's
/// list (at most the span's objects).
#[cold]
#[inline(never)]
pub fn span_holds(object: *mut u8, class: SizeClass) -> bool {
    let span = page_map::lookup(object as usize);
    if span.is_null() {
        return false;
    }
    // SAFETY: page-map entries point to metadata records, never unmapped; `shard` is atomic.
    let shard = unsafe { (*span).shard() };
    let _list = central(class, shard).lock();
    // SAFETY: as above; under the lock of the list that owns the span (checked first, with the
    // atomic fields), its free list is well formed and nobody else changes it.
    unsafe {
        let s = &*span;
        let owned = s.kind() == SpanKind::Small
            && s.class_index() == class.index()
            && s.shard() == shard
            && s.start_address() <= object as usize
            && (object as usize) < s.start_address() + s.pages().bytes();
        if !owned {
            return false;
        }
        let mut p = s.free_list;
        while !p.is_null() {
            if p.cast() == object {
                return true;
            }
            p = free_list::next(p);
        }
    }
    false
}

/// Sets `s.carved` to `carved` and tags the pages that are now carved whole: a page gets its
/// tag, and an OS page of the arena its entry in the arena index (where C `free` accepts its
/// object starts on the fast path), only once every object that starts on it has been on a
/// list or handed out, so that a free of a slot no one was given never passes for an object.
///
/// # Safety
/// - `s` is a `Small` span of `class` owned by the list whose lock the caller holds;
///   `carved` is at least `s.carved` and at most the class's objects per span.
unsafe fn tag_carved_pages(s: &mut Span, class: SizeClass, carved: usize) {
    let objects = class.info().objects as usize;
    let bytes = s.pages().bytes();
    // The units of `unit` bytes of the span whose every object start is carved.
    let whole = |carved: usize, unit: usize| {
        if carved == objects {
            bytes / unit
        } else {
            carved * class.size() / unit
        }
    };
    let (from, to) = (whole(s.carved as usize, PAGE_SIZE), whole(carved, PAGE_SIZE));
    if from < to {
        // SAFETY: the span's pages are in the page map; the caller's list owns the span.
        unsafe { page_map::set_tags(s, from..to, class.index()) };
    }
    let (from, to) = (whole(s.carved as usize, OS_PAGE_SIZE), whole(carved, OS_PAGE_SIZE));
    if from < to {
        // SAFETY: as above; the OS pages lie in the span.
        unsafe { page_map::set_arena_tags(s, from..to, class.index()) };
    }
    s.carved = carved as u32;
}

/// C `free`'s slow path for a pointer whose page has no tag, which may be an object handed
/// out from a page of a span that is not carved whole yet: if it is a carved object (an object
/// start below the span's carved count), returns its class, after carving the rest of its OS
/// page (in the arena; outside it, of its page) onto the span's free list and tagging it
/// (unless that happened already), so that later frees of the objects there take the fast
/// path. `None` for anything else (the caller aborts). An OS page, not the whole page: the
/// objects carved are written (their links), and a class that has handed out a few objects
/// from the first half of a page does not make the program's resident set grow by the second
/// half (mimalloc-bench's glibc-thread and espresso peaked 200 and 310 KiB lower). Cold: at
/// most once per OS page, and only for pages whose objects are freed by address (C `free`,
/// `realloc`, `malloc_usable_size`, `hardened` Rust `dealloc`); Rust's sized `dealloc` never
/// reads tags.
#[cold]
#[inline(never)]
pub fn complete_page(object: *mut u8) -> Option<SizeClass> {
    let address = object as usize;
    let span = page_map::lookup(address);
    if span.is_null() {
        return None;
    }
    // SAFETY: page-map entries point to metadata records, never unmapped; the fields read
    // before the lock are atomics.
    let (kind, class, shard) = unsafe { ((*span).kind(), (*span).class_index(), (*span).shard()) };
    // Page runs and large blocks (most pointers that come here) take no lock.
    if kind != SpanKind::Small {
        return None;
    }
    let class = SizeClass::new(class)?;
    let list = central(class, shard).lock();
    // SAFETY: as above; the span's plain fields are read and written only under the lock of
    // the list that owns it, which the atomic fields say this is (checked under the lock).
    unsafe {
        let s = &mut *span;
        let owned = s.kind() == SpanKind::Small
            && s.class_index() == class.index()
            && s.shard() == shard
            && address.wrapping_sub(s.start_address()) < s.pages().bytes();
        if !owned {
            return None;
        }
        let offset = address - s.start_address();
        let size = class.size();
        let objects = class.info().objects as usize;
        let carved = s.carved as usize;
        if offset % size != 0 || offset / size >= carved {
            return None;
        }
        // The arena index validates an OS page at a time, the tags a page at a time.
        let unit = if page_map::in_arena(address) { OS_PAGE_SIZE } else { PAGE_SIZE };
        let unit_end = (offset / unit + 1) * unit;
        // An OS page or page carved whole is tagged already (by another thread since the
        // caller looked, perhaps).
        if carved == objects || carved * size >= unit_end {
            return Some(class);
        }
        // Carve every object that starts on the pointer's OS page (or page) onto the span's
        // own list. The span has uncarved objects, so it is on `nonempty` and stays there; its
        // free count (which counts uncarved objects too) does not change.
        let end = unit_end.div_ceil(size).min(objects);
        let start = s.start_address();
        if s.free_list.is_null() {
            s.free_tail = (start + (end - 1) * size) as *mut FreeObject;
        }
        for i in (carved..end).rev() {
            free_list::push(&mut s.free_list, (start + i * size) as *mut FreeObject);
        }
        tag_carved_pages(s, class, end);
        drop(list);
    }
    Some(class)
}

/// Makes the in-use span `span` a span of `class`: its record and, if `tagged` (its objects
/// are all carved at once), the page-map tags of its pages, which C `free` reads.
///
/// # Safety
/// - `span` is an in-use span from the page heap, recorded in the page map, that holds no
///   object of another class.
unsafe fn own_span(span: *mut Span, class: SizeClass, tagged: bool) {
    // SAFETY: per the caller.
    unsafe {
        (*span).set_class_index(class.index());
        if tagged {
            page_map::set_tags(span, 0..(*span).pages().0, class.index());
        }
    }
}

/// Moves the one-object span of a live block from class `from` to the larger class `to`,
/// growing the span in place into free pages that follow it: the block keeps its address and
/// contents (`realloc` without a copy). Both classes must hold one object per span. Returns
/// false, with nothing changed, when the pages after the span are not free.
///
/// # Safety
/// - `span` is the `Small` span of class `from` holding a live block owned by the caller.
pub unsafe fn regrow_span(span: *mut Span, from: SizeClass, to: SizeClass) -> bool {
    crate::diag::debug_invariant!(from.info().objects == 1 && to.info().objects == 1 && from < to);
    // SAFETY: the span is in use (it holds the caller's block), so its shard is settled.
    let shard = unsafe { (*span).shard() };
    // Lock order: central lists by increasing class, then the page heap.
    let mut old_list = central(from, shard).lock();
    let mut new_list = central(to, shard).lock();
    // SAFETY: per the caller, the span is in use and ours to resize.
    if !unsafe { PAGE_HEAP.lock().extend(span, Length(to.info().pages as usize)) } {
        return false;
    }
    // SAFETY: as above; the span is full (its one object is live), so it is on no list.
    unsafe { own_span(span, to, true) };
    old_list.spans -= 1;
    new_list.spans += 1;
    true
}

/// A block of the one-object class `class` in a new span carved from the front of a free run
/// of at least `room` pages, for a block that is likely to grow again (`realloc`): it can then
/// grow in place ([`regrow_span`]) into the rest of the run. Null when out of memory.
pub fn alloc_growable(class: SizeClass, shard: usize, room: Length) -> *mut u8 {
    crate::diag::debug_invariant!(class.info().objects == 1);
    free_list::init_secret();
    let shard = transfer_cache::shard_index(shard);
    let mut list = central(class, shard).lock();
    let pages = Length(class.info().pages as usize);
    let span = PAGE_HEAP.lock().allocate_with_room(pages, room, SpanKind::Small);
    if span.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: a fresh in-use span from the page heap; its only object is handed out at once,
    // so it is full and on no list.
    unsafe {
        own_span(span, class, true);
        (*span).free_list = ptr::null_mut();
        (*span).allocated = 1;
        (*span).carved = 1;
        (*span).set_shard(shard);
        list.spans += 1;
        let block = (*span).start_address() as *mut FreeObject;
        // The pages may have held a free object before: clear its link, so that the block
        // does not look free.
        free_list::take_object(block);
        block.cast()
    }
}

/// Moves up to `n` objects from the free list of small span `s` onto `head`; returns how many
/// (the caller updates the span's counts). When the whole list fits, it is spliced on in one
/// step through `free_tail`: its objects were freed a while ago and are likely out of the
/// cache, and walking them here would take one miss after another, while the thread cache
/// that receives them prefetches each object before it is handed out.
///
/// # Safety
/// - `s` is a `Small` span whose list's lock is held; its `free_list`/`free_tail` are
///   well formed and its `allocated`/`carved` counts are current.
unsafe fn take_listed(s: &mut Span, n: usize, head: &mut *mut FreeObject) -> usize {
    if s.free_list.is_null() || n == 0 {
        return 0;
    }
    // Invariant of a small span: the returned objects are those carved and not allocated.
    let listed = (s.carved - s.allocated) as usize;
    if listed <= n {
        // SAFETY: `free_tail` is the last object of the non-empty list.
        unsafe { free_list::set_next(s.free_tail, *head) };
        *head = s.free_list;
        s.free_list = ptr::null_mut();
        return listed;
    }
    for _ in 0..n {
        // SAFETY: the list holds more than `n` objects.
        unsafe { free_list::push(head, free_list::pop(&mut s.free_list)) };
    }
    n
}

/// A class borrows from a larger class only if that class has this much free space in its
/// spans: borrowing is for memory left behind by a phase of the program, not for normal churn.
pub const BORROW_MIN_BYTES: usize = 1 << 20;

/// After an attempt to borrow from the other shards that found nothing, a list carves new
/// spans worth one span before it tries them again, then twice as much after each further
/// failure, up to this many bytes. While the heap grows, every new span used to try every
/// other shard's locks first: `(S - 1) x (1 + D)` atomic operations on other CPUs' cache
/// lines (S shards, D donor classes); with 16 shards a 64 MiB growth in 64-byte blocks ran
/// 15% more instructions than with one shard, 32% with 32 (callgrind). Holes left on another
/// CPU then wait for at most this much growth before they are reused: with 1 MiB, mstress
/// (threads that come and go on either CPU) peaked 2% higher than without a pause (median of
/// 60 runs); with 256 KiB, as without (and a growing heap saves as much).
pub const BORROW_PAUSE_MAX_BYTES: usize = 256 << 10;

/// Bytes of a span of `class`.
fn span_bytes(class: SizeClass) -> usize {
    class.info().pages as usize * PAGE_SIZE
}

/// The classes `class` may borrow objects from: the larger ones at most a third bigger whose
/// objects are at least as aligned as `class`'s ([`SizeClass::alignment`]). A request aligned
/// to 64 is served by the 64-byte class and relies on every object it hands out being
/// 64-aligned, so that class never borrows a 72-byte object (8-aligned), while the 48-byte
/// class (16-aligned) may borrow from the 64-byte one.
fn donors(class: SizeClass) -> impl Iterator<Item = SizeClass> {
    let limit = class.size() + class.size() / 3;
    (class.index() + 1..NUM_CLASSES)
        .filter_map(SizeClass::new)
        .take_while(move |d| d.size() <= limit)
        .filter(move |d| d.alignment() >= class.alignment())
}

/// Whether an object of class `class` may live in a span of class `span_class`: the same class,
/// or one it borrows from.
#[cfg(any(feature = "hardened", debug_assertions))]
pub fn may_hold(class: SizeClass, span_class: SizeClass) -> bool {
    class == span_class || donors(class).any(|d| d == span_class)
}

/// Returns batches idle in the transfer caches since epoch `before` (all of them with
/// `u64::MAX`) to their spans, so that emptied spans reach the page heap.
pub fn drain_idle(before: u64) {
    for class in SizeClass::all() {
        while let Some(batch) = transfer_cache::pop_idle(class, before) {
            // SAFETY: transfer batches are well-formed lists of dead objects of the class.
            unsafe { release_objects(batch) };
        }
    }
}

/// Figures of `class`: its spans (all shards) and its transfer caches.
pub fn stats(class: SizeClass) -> CentralStats {
    let mut total = CentralStats::default();
    // Only lists that were ever locked (a read of the counter): locking the others would
    // write, and so back, pages of the table that nothing else touches.
    for list in centrals(class, MAX_SHARDS) {
        if list.raw().stats().acquisitions == 0 {
            continue;
        }
        let s = list.lock().span_stats();
        total.spans += s.spans;
        total.span_free_objects += s.span_free_objects;
    }
    total.transfer_objects = transfer_cache::batches(class) * class.batch();
    total
}

/// Checks the invariants of `class`'s spans and transfer caches.
pub fn check_invariants(class: SizeClass) {
    for (shard, list) in centrals(class, MAX_SHARDS).enumerate() {
        list.lock().check_invariants(class, shard);
    }
    transfer_cache::check_class(class, |batch| {
        // SAFETY: transfer batches are well-formed lists.
        invariant_eq!(unsafe { free_list::count(batch) }, class.batch(), "transfer batch size");
    });
}

/// Figures of one class's central free objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CentralStats {
    /// Spans owned by the class.
    pub spans: usize,
    /// Objects waiting in the transfer caches.
    pub transfer_objects: usize,
    /// Objects free inside the class's spans (returned or never carved).
    pub span_free_objects: usize,
}

/// The span side of one class.
///
/// Invariants (checked by [`CentralFreeList::check_invariants`]):
/// - a span of this class is on `nonempty` iff it has a free object (on its `free_list` or not
///   yet carved); `spans` counts every span of the class, on `nonempty` or not;
/// - `span_free == Σ over spans of (count(free_list) + objects - carved)`.
pub struct CentralFreeList {
    nonempty: SpanList,
    spans: usize,
    span_free: usize,
    /// When `borrow` next tries the other shards.
    borrow_pause: BorrowPause,
}

/// How long a list leaves the other shards alone after they had nothing to lend it: for
/// `pause` more bytes of new spans. The pause is one span after the first such attempt, and
/// doubles after each further one, up to [`BORROW_PAUSE_MAX_BYTES`] (or one span, if bigger);
/// an attempt that finds objects ends it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct BorrowPause {
    /// Bytes of new spans to carve before the next attempt (0: try at once).
    pause: u32,
    /// The pause set after the last attempt (0 after one that found objects).
    step: u32,
}

impl BorrowPause {
    const NONE: BorrowPause = BorrowPause { pause: 0, step: 0 };

    fn may_try(&self) -> bool {
        self.pause == 0
    }

    fn found(&mut self) {
        *self = BorrowPause::NONE;
    }

    fn found_nothing(&mut self, span_bytes: usize) {
        // A span is at most 255 pages: below 4 GiB.
        let span = span_bytes as u32;
        self.step = (self.step * 2).clamp(span, (BORROW_PAUSE_MAX_BYTES as u32).max(span));
        self.pause = self.step;
    }

    fn carved(&mut self, span_bytes: usize) {
        self.pause = self.pause.saturating_sub(span_bytes as u32);
    }
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
            spans: 0,
            span_free: 0,
            borrow_pause: BorrowPause::NONE,
        }
    }

    /// Takes up to `want` objects of `class` from its spans, carving a new span when none has
    /// a free object. Returns a null-terminated list and its length; length 0 means out of
    /// memory.
    pub fn remove_range(
        &mut self,
        class: SizeClass,
        shard: usize,
        want: usize,
        heap: &Lock<PageHeap>,
    ) -> (*mut FreeObject, usize) {
        crate::diag::debug_invariant!(want >= 1 && want <= class.batch());
        let mut head = ptr::null_mut();
        let mut got = 0;
        while got < want {
            if self.nonempty.is_empty() {
                got += self.borrow(class, shard, want - got, &mut head);
                if got == want || !self.populate(class, shard, heap) {
                    break;
                }
            }
            let span = self.nonempty.head;
            // SAFETY: `span` is on `nonempty`, so it has a free object and belongs to `class`.
            got += unsafe { self.take_from_span(class, span, want - got, &mut head) };
        }
        (head, got)
    }

    /// Returns every object of a null-terminated list to its span (all spans of this list).
    ///
    /// # Safety
    /// - `head` is a well-formed list of dead objects of `class` handed out by this list.
    #[cfg(test)]
    pub unsafe fn insert_range(
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
            let span = page_map::lookup(object as usize);
            // SAFETY: a dead object of this list, inside `span`.
            unsafe { self.release_object(class, span, object, heap) };
        }
    }

    /// Puts one object back on its span; gives the span to the page heap when it is empty
    /// (and then returns true).
    ///
    /// # Safety
    /// - `object` is a dead object of `class` handed out by this list, and `span` its span.
    pub unsafe fn release_object(
        &mut self,
        class: SizeClass,
        span: *mut Span,
        object: *mut FreeObject,
        heap: &Lock<PageHeap>,
    ) -> bool {
        // SAFETY: the span outlives its objects; it belongs to this list (checked in debug).
        unsafe {
            crate::diag::debug_invariant!(
                !span.is_null()
                    && (*span).kind() == SpanKind::Small
                    && (*span).class_index() == class.index(),
                "object {object:?} is not of class {}",
                class.index()
            );
            let s = &mut *span;
            let had_free = !s.free_list.is_null() || s.carved < class.info().objects;
            if s.free_list.is_null() {
                s.free_tail = object;
            }
            // A span with no object handed out cannot take one back: that would be an object
            // freed twice, and the counts (unsigned) would wrap.
            invariant!(s.allocated > 0, "object {object:?} returned to a span with none out");
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
                page_map::clear_tags(s.start(), s.pages());
                heap.lock().deallocate(span);
                return true;
            }
            if !had_free {
                self.nonempty.push(span);
            }
        }
        false
    }

    /// Takes up to `n` free objects from `span` onto `head` (returned objects first, then
    /// fresh ones carved in address order, so that a new span is handed out front to back);
    /// removes the span from `nonempty` when it runs out. Returns how many it took.
    ///
    /// # Safety
    /// - `span` is on `nonempty` and belongs to `class`.
    unsafe fn take_from_span(
        &mut self,
        class: SizeClass,
        span: *mut Span,
        n: usize,
        head: &mut *mut FreeObject,
    ) -> usize {
        // SAFETY: per the caller.
        let s = unsafe { &mut *span };
        let objects = class.info().objects as usize;
        // SAFETY: per the caller, a span of this list.
        let mut taken = unsafe { take_listed(s, n, head) };
        let carve = (n - taken).min(objects - s.carved as usize);
        if carve > 0 {
            let first = s.start_address() + s.carved as usize * class.size();
            for i in (0..carve).rev() {
                // SAFETY: objects below `objects` lie inside the span, which this list owns;
                // never-carved objects are unused memory.
                unsafe { free_list::push(head, (first + i * class.size()) as *mut FreeObject) };
            }
            // SAFETY: this list owns the span.
            unsafe { tag_carved_pages(s, class, s.carved as usize + carve) };
            taken += carve;
        }
        s.allocated += taken as u32;
        self.span_free -= taken;
        if s.free_list.is_null() && s.carved as usize == objects {
            // SAFETY: on `nonempty` per the caller.
            unsafe { self.nonempty.remove(span) };
        }
        taken
    }

    /// Before carving a new span for `class`, takes up to `n` free objects from partly used
    /// spans elsewhere: first those of a slightly larger class of this shard ([`donors`]) that
    /// holds at least [`BORROW_MIN_BYTES`] of such free space (memory left free by objects of
    /// one size is reused for another instead of growing the heap), then those of `class` in
    /// another shard that holds at least a span's worth, then those of the donors in the other
    /// shards, on the same terms as here (with a shard per CPU, a thread that moves, or frees
    /// on one CPU and allocates on another, would otherwise leave holes in one shard while
    /// another grows the heap: `tests/fragmentation.rs` grew by 151 MiB instead of reusing its
    /// holes once, when its thread ran on the other CPU after its frees). Classes of one object
    /// per span are never tried: they have nothing to lend. After the other shards had nothing,
    /// they are left alone while the list carves a while (see [`BORROW_PAUSE_MAX_BYTES`]).
    /// Returns how many it took.
    fn borrow(
        &mut self,
        class: SizeClass,
        shard: usize,
        n: usize,
        head: &mut *mut FreeObject,
    ) -> usize {
        // A one-object span goes back to the page heap when its object does: such a class
        // never holds a returned object to lend.
        let lends = |c: SizeClass| c.info().objects > 1;
        let larger = move |shard| {
            donors(class)
                .filter(move |&d| lends(d))
                .map(move |d| (d, shard, BORROW_MIN_BYTES.div_ceil(d.size())))
        };
        let shards = if lends(class) { transfer_cache::shards() } else { 1 };
        let span_worth = class.info().objects as usize;
        let others = move || (1..shards).map(move |k| (shard + k) % shards);
        let same_class = others().map(|other| (class, other, span_worth));
        let donors_elsewhere = others().flat_map(larger);
        // Lock order: the list held is never waited for here (only tried), so whatever class
        // or shard the other list is, no two threads wait for each other.
        let try_list = |(donor, from, min_free): (SizeClass, usize, usize), head: &mut _| {
            let mut list = central(donor, from).try_lock()?;
            if list.span_free < min_free {
                return None;
            }
            Some(list.take_returned(donor, n, head)).filter(|&taken| taken > 0)
        };
        if let Some(taken) = larger(shard).find_map(|list| try_list(list, head)) {
            return taken;
        }
        if shards == 1 || !self.borrow_pause.may_try() {
            return 0;
        }
        if let Some(taken) =
            same_class.chain(donors_elsewhere).find_map(|list| try_list(list, head))
        {
            self.borrow_pause.found();
            return taken;
        }
        self.borrow_pause.found_nothing(span_bytes(class));
        0
    }

    /// Takes up to `n` objects from the free lists (not the uncarved tails) of the first few
    /// spans on `nonempty`.
    fn take_returned(&mut self, class: SizeClass, n: usize, head: &mut *mut FreeObject) -> usize {
        let mut taken = 0;
        let mut span = self.nonempty.head;
        let mut visited = 0;
        while taken < n && !span.is_null() && visited < 16 {
            // SAFETY: members of `nonempty` are valid spans of this list.
            let s = unsafe { &mut *span };
            let next = s.next;
            // SAFETY: a span of this list.
            let from_span = unsafe { take_listed(s, n - taken, head) };
            s.allocated += from_span as u32;
            self.span_free -= from_span;
            taken += from_span;
            if s.free_list.is_null() && s.carved == class.info().objects {
                // SAFETY: on `nonempty`.
                unsafe { self.nonempty.remove(span) };
            }
            span = next;
            visited += 1;
        }
        taken
    }

    /// Takes a new span from the page heap for shard `shard`; false when out of memory.
    fn populate(&mut self, class: SizeClass, shard: usize, heap: &Lock<PageHeap>) -> bool {
        // Objects are about to exist: the list encoding must be fixed first.
        free_list::init_secret();
        let span = heap.lock().allocate(Length(class.info().pages as usize), SpanKind::Small);
        if span.is_null() {
            return false;
        }
        // SAFETY: a fresh in-use span from the page heap; nobody else knows it yet.
        // Untagged: pages are tagged as they are carved (`take_from_span`).
        unsafe {
            own_span(span, class, false);
            (*span).free_list = ptr::null_mut();
            (*span).allocated = 0;
            (*span).carved = 0;
            (*span).set_shard(shard);
            self.nonempty.push(span);
        }
        self.spans += 1;
        self.span_free += class.info().objects as usize;
        self.borrow_pause.carved(span_bytes(class));
        true
    }

    /// Figures of the spans (`transfer_objects` is left 0).
    pub fn span_stats(&self) -> CentralStats {
        CentralStats { spans: self.spans, transfer_objects: 0, span_free_objects: self.span_free }
    }

    /// Checks the invariants on the struct for the spans on `nonempty` (of shard `shard`).
    pub fn check_invariants(&self, class: SizeClass, shard: usize) {
        let mut free_on_nonempty = 0;
        let mut nonempty = 0;
        for span in self.nonempty.iter() {
            // SAFETY: list members are valid records of this class.
            let s = unsafe { &*span };
            invariant_eq!(s.kind(), SpanKind::Small, "mismatch");
            invariant_eq!(s.class_index(), class.index(), "mismatch");
            invariant_eq!(s.shard(), shard, "span on another shard's list");
            // SAFETY: the span's free list is well formed.
            let listed = unsafe { free_list::count(s.free_list) };
            if listed > 0 {
                // SAFETY: as above.
                let last = unsafe { free_list::last(s.free_list) };
                invariant!(last == s.free_tail, "span free list tail");
            }
            let untouched = (class.info().objects - s.carved) as usize;
            invariant!(listed + untouched > 0, "span without free objects on nonempty");
            invariant_eq!(
                s.allocated as usize + listed + untouched,
                class.info().objects as usize,
                "span object accounting"
            );
            free_on_nonempty += listed + untouched;
            nonempty += 1;
        }
        invariant!(nonempty <= self.spans, "nonempty <= self.spans");
        invariant_eq!(free_on_nonempty, self.span_free, "free objects in spans");
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
    fn donors_are_at_least_as_aligned_as_the_borrower() {
        let mut borrowing = 0;
        for class in SizeClass::all() {
            for donor in donors(class) {
                assert!(donor > class && donor.size() * 3 <= class.size() * 4);
                assert!(
                    donor.size() % class.alignment() == 0,
                    "class {} (aligned to {}) borrows {}-byte objects",
                    class.size(),
                    class.alignment(),
                    donor.size()
                );
                borrowing += 1;
            }
        }
        // Borrowing still happens for most classes: 48 from 64, 72 from 80, ...
        assert!(borrowing > NUM_CLASSES, "only {borrowing} donor pairs");
        assert!(donors(class_of(48)).any(|d| d.size() == 64));
        assert!(!donors(class_of(64)).any(|d| d.size() == 72));
    }

    /// The pause after fruitless attempts on the other shards: one span, then doubling up to
    /// 256 KiB (32 spans of one page); carving counts it down; a successful attempt ends it. A
    /// class whose span is bigger than the cap pauses for one span.
    #[test]
    fn the_other_shards_are_tried_again_after_a_growing_pause() {
        let page = PAGE_SIZE;
        let mut p = BorrowPause::NONE;
        assert!(p.may_try());
        let mut pauses = Vec::new();
        for _ in 0..10 {
            p.found_nothing(page);
            pauses.push(p.pause as usize / page);
            let mut spans = 0;
            while !p.may_try() {
                p.carved(page);
                spans += 1;
            }
            assert_eq!(spans, p.step as usize / page, "tried again once the pause is carved");
        }
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 32, 32, 32, 32]);
        assert_eq!(32 * page, BORROW_PAUSE_MAX_BYTES);
        p.found();
        assert_eq!(p, BorrowPause::NONE);
        p.found_nothing(page);
        assert_eq!(p.pause as usize, page, "after a success the pause starts over");
        let mut big = BorrowPause::NONE;
        big.found_nothing(2 * BORROW_PAUSE_MAX_BYTES);
        big.found_nothing(2 * BORROW_PAUSE_MAX_BYTES);
        assert_eq!(big.pause as usize, 2 * BORROW_PAUSE_MAX_BYTES);
        big.carved(2 * BORROW_PAUSE_MAX_BYTES);
        assert!(big.may_try());
    }

    #[test]
    fn empty_spans_go_back_to_the_page_heap() {
        let heap = Lock::new(PageHeap::new());
        let mut list = CentralFreeList::new();
        let class = class_of(64);
        let batch = class.batch();
        let (head, n) = list.remove_range(class, 0, batch, &heap);
        assert_eq!(n, batch);
        // SAFETY: `head` is the list just handed out.
        assert_eq!(unsafe { free_list::count(head) }, batch);
        list.check_invariants(class, 0);
        assert_eq!(list.span_stats().spans, 1);
        // SAFETY: the same objects, unused.
        unsafe { list.insert_range(class, head, &heap) };
        list.check_invariants(class, 0);
        assert_eq!(list.span_stats().spans, 0, "an empty span goes back to the page heap");
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
            let (head, n) = list.remove_range(class, 0, want, &heap);
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
                    p = free_list::next(p);
                }
            }
            lists.push((head, n));
            list.check_invariants(class, 0);
        }
        for (head, _) in lists {
            // SAFETY: these lists came from this central list and are unused.
            unsafe { list.insert_range(class, head, &heap) };
            list.check_invariants(class, 0);
        }
        assert_eq!(list.span_stats().spans, 0);
        assert_eq!(heap.lock().stats().in_use_bytes, 0);
    }
}
