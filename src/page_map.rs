//! The page map: a two-level radix tree from page number to the [`Span`] that holds it.
//!
//! It lets `free(p)` find the span of any pointer with no header in front of the block: two
//! dependent loads, no lock. The root is a static array (1 MiB of zero pages the OS only backs
//! where touched); each leaf covers 2 GiB of address space with one span pointer and one
//! four-byte [`Tag`] per 8 KiB page and is mapped on first use. Leaves are installed with a
//! compare-and-swap and never removed, so a reader holding a leaf pointer can always
//! dereference it.
//!
//! Who writes which entries:
//! - the page heap, for spans it hands out (every page) and free spans (first and last page,
//!   which is what coalescing reads);
//! - `large`, for the first page of each direct mapping;
//! - the central free lists, for the tags of the spans they own: C `free` reads the tag alone
//!   (class and page index) and never the span record, so validating and freeing a small
//!   object costs two dependent loads and no read of memory that other threads rewrite.
//!
//! **The arena index.** The page heap takes its memory from one reserved region, the arena
//! ([`ARENA_BYTES`](crate::config::ARENA_BYTES), see `page_heap`), as long as it can. For the
//! pages of the arena two flat arrays, one mapping made with the arena ([`set_arena`]), serve
//! C `free`'s fast path ([`arena_object`]): per OS page (two per page), the address of its
//! span's first byte (a word) and 16 times the span's class (two bytes), both 0 where the OS
//! page has no tag. A span's objects are carved and tagged for `free` an OS page at a time
//! ([`set_arena_tags`]), so that a class that uses a few objects of a page does not write its
//! second half. Class 0's row of the object test passes no address, so such an OS page needs
//! no test of its own. Validating a small object is then a subtraction, a compare and two
//! independent loads from dense arrays (a few cache lines cover the pages of a heap of many
//! megabytes), then the class's row of the object test, which stays in the cache; nothing of
//! the span record is read, and no branch is taken for a missing leaf. The tags serve
//! everything else (and chunks outside the arena). [`set_tags`] and [`clear_tags`] keep both
//! in step for whole pages; an OS page whose objects are all carved before its page's are is
//! in the index alone.
//!
//! Entry points: [`get`], [`lookup`], [`tag`], [`ensure`], [`set`], [`set_range`], [`clear`],
//! [`set_tags`], [`set_arena_tags`], [`clear_tags`], [`set_arena`], [`open_arena_index`],
//! [`in_arena`], [`arena_object`]. Layers below: `size_class` (the object test), `os` (for
//! leaves and the index), `metadata` (accounting).

use crate::config::{ADDRESS_BITS, ARENA_BYTES, OS_PAGE_SIZE, PAGE_SHIFT};
use crate::metadata;
use crate::os;
use crate::size_class;
use crate::span::{Length, PageId, Span};
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU16, AtomicU32, AtomicUsize, Ordering};

const LEAF_BITS: usize = 18;
const ROOT_BITS: usize = ADDRESS_BITS - PAGE_SHIFT - LEAF_BITS;
const LEAF_LEN: usize = 1 << LEAF_BITS;
const ROOT_LEN: usize = 1 << ROOT_BITS;

/// Number of pages the map can describe.
pub const MAX_PAGES: usize = 1 << (ADDRESS_BITS - PAGE_SHIFT);

/// One leaf: a span pointer and a [`Tag`] per page (null and 0 where nothing is recorded).
struct Leaf {
    spans: [AtomicPtr<Span>; LEAF_LEN],
    tags: [AtomicU32; LEAF_LEN],
}

/// What C `free` needs to know about a page of small objects, in one load: the page's byte
/// offset inside its span (a multiple of the page size, below 256 pages) plus 16 times the
/// size class (below one page), or 0 for a page that is not one of small objects. The low bits
/// are then both the test for a small object and the class already scaled to index the tables
/// of 16-byte rows that `free` reads next; the offset of a pointer from its span's start is the
/// tag with its low bits replaced by the pointer's. Set while the span belongs to a central
/// free list ([`set_tags`]), cleared before it goes back to the page heap ([`clear_tags`]); a
/// page of a span that holds a live object keeps its tag.
pub type Tag = u32;

/// The tag of page `page_index` of a span of class `class_index`.
pub const fn make_tag(class_index: usize, page_index: usize) -> Tag {
    (class_index << TAG_CLASS_SHIFT | page_index << PAGE_SHIFT) as Tag
}

/// The class index of a tag sits this far up (16-byte rows).
pub const TAG_CLASS_SHIFT: u32 = 4;

const _: () =
    assert!((256 << TAG_CLASS_SHIFT) <= 1 << PAGE_SHIFT && 256u64 << PAGE_SHIFT <= 1 << 32);

/// Invariant: `ROOT[i]` is null or a leaf mapped by [`ensure`]; it never changes once set.
/// `ROOT[ROOT_LEN]` is always null (see [`tag`]).
static ROOT: [AtomicPtr<Leaf>; ROOT_LEN + 1] =
    [const { AtomicPtr::new(ptr::null_mut()) }; ROOT_LEN + 1];

#[inline(always)]
fn split(page: PageId) -> (usize, usize) {
    (page.0 >> LEAF_BITS, page.0 & (LEAF_LEN - 1))
}

/// The span recorded for `page`, or null. Pages beyond the map read as null.
#[inline(always)]
pub fn get(page: PageId) -> *mut Span {
    let (i, j) = split(page);
    if i >= ROOT_LEN {
        return ptr::null_mut();
    }
    let leaf = ROOT[i].load(Ordering::Acquire);
    if leaf.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: installed leaves are valid forever (ROOT invariant); `j < LEAF_LEN`.
    unsafe { (*leaf).spans.get_unchecked(j).load(Ordering::Acquire) }
}

/// The span recorded for the page holding `address`, or null.
#[inline(always)]
pub fn lookup(address: usize) -> *mut Span {
    get(PageId::containing(address))
}

/// Makes sure leaves exist for `pages` pages from `start`; false when out of memory or the
/// range lies beyond the map.
pub fn ensure(start: PageId, pages: Length) -> bool {
    ensure_leaves(start, pages, false)
}

/// A leaf mapped ahead by [`reserve_spare_leaf`], for [`ensure_with_spare`].
static SPARE: AtomicPtr<Leaf> = AtomicPtr::new(ptr::null_mut());

/// Makes sure a spare leaf is mapped, so that a later [`ensure_with_spare`] cannot fail; false
/// when out of memory. For a caller about to take a step it cannot undo (moving a mapping
/// with `mremap`) after which it must record a page wherever the kernel put it. Callers
/// serialise the reserve and the use (one spare serves one of them at a time).
pub fn reserve_spare_leaf() -> bool {
    #[cfg(test)]
    if test_hooks::ENSURE_FAILS.get() {
        return false;
    }
    if !SPARE.load(Ordering::Acquire).is_null() {
        return true;
    }
    let bytes = core::mem::size_of::<Leaf>();
    let Some(fresh) = os::map(bytes) else {
        return false;
    };
    metadata::account_mapped(bytes);
    SPARE.store(fresh.as_ptr().cast(), Ordering::Release);
    true
}

/// [`ensure`] for one page, taking the spare leaf when no new one can be mapped; never fails
/// after a [`reserve_spare_leaf`] that succeeded.
pub fn ensure_with_spare(page: PageId) -> bool {
    ensure_leaves(page, Length(1), true)
}

fn ensure_leaves(start: PageId, pages: Length, spare: bool) -> bool {
    #[cfg(test)]
    if test_hooks::ENSURE_FAILS.get() && !spare {
        return false;
    }
    if pages.0 == 0 {
        return true;
    }
    let Some(last) = start.0.checked_add(pages.0 - 1) else {
        return false;
    };
    if last >= MAX_PAGES {
        return false;
    }
    let (first_leaf, _) = split(start);
    let (last_leaf, _) = split(PageId(last));
    for slot in &ROOT[first_leaf..=last_leaf] {
        if !slot.load(Ordering::Acquire).is_null() {
            continue;
        }
        let bytes = core::mem::size_of::<Leaf>();
        #[cfg(test)]
        let mapped = if test_hooks::ENSURE_FAILS.get() { None } else { os::map(bytes) };
        #[cfg(not(test))]
        let mapped = os::map(bytes);
        let fresh = match mapped {
            Some(fresh) => {
                metadata::account_mapped(bytes);
                fresh.as_ptr().cast::<Leaf>()
            }
            None if spare => SPARE.swap(ptr::null_mut(), Ordering::AcqRel),
            None => ptr::null_mut(),
        };
        if fresh.is_null() {
            return false;
        }
        // Zeroed memory is a leaf of null pointers.
        if slot
            .compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: our leaf lost the race and was never published.
            unsafe { os::unmap(fresh.cast(), bytes) };
            metadata::account_mapped(bytes.wrapping_neg());
        }
    }
    true
}

/// Fault injection for unit tests: out of memory for page-map leaves, on one thread.
#[cfg(test)]
pub mod test_hooks {
    std::thread_local! {
        /// While true, [`ensure`](super::ensure) fails on this thread as if no leaf could be
        /// mapped.
        pub static ENSURE_FAILS: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
    }
}

/// The tag of the page holding `address` (0 where none is recorded, or beyond the map).
#[inline(always)]
pub fn tag(address: usize) -> Tag {
    let (i, j) = (address >> (PAGE_SHIFT + LEAF_BITS), (address >> PAGE_SHIFT) & (LEAF_LEN - 1));
    // `ROOT[ROOT_LEN]` is always null: only beyond it is a test needed (one compare with a
    // bound that is not a power of two, which the compiler would otherwise test with a second
    // shift of the address).
    if i > ROOT_LEN {
        return 0;
    }
    // SAFETY: `i <= ROOT_LEN`, in bounds.
    let leaf = unsafe { ROOT.get_unchecked(i) }.load(Ordering::Acquire);
    if leaf.is_null() {
        return 0;
    }
    // SAFETY: installed leaves are valid forever (ROOT invariant); `j < LEAF_LEN`.
    unsafe { (*leaf).tags.get_unchecked(j).load(Ordering::Relaxed) }
}

/// Tags pages `pages` (indices from the first page of `span`, below 256) as pages of a span
/// of small objects of class `class_index`, and sets their entries in the arena index (in
/// the arena). A span that grows in place into a larger class is tagged again, every page.
///
/// # Safety
/// - `span` is a live record; [`ensure`] succeeded for its pages (they are recorded already).
pub unsafe fn set_tags(span: *mut Span, pages: core::ops::Range<usize>, class_index: usize) {
    crate::diag::debug_invariant!(class_index != 0 && class_index < 256 && pages.end <= 256);
    // SAFETY: per the caller.
    let start = unsafe { (*span).start() };
    for k in pages {
        let page = PageId(start.0 + k);
        let (i, j) = split(page);
        let leaf = ROOT[i].load(Ordering::Acquire);
        // SAFETY: the caller ensured the leaf; `j < LEAF_LEN`.
        unsafe { (*leaf).tags.get_unchecked(j).store(make_tag(class_index, k), Ordering::Relaxed) };
        if let Some(first) = arena_slot(page.address()) {
            for slot in first..first + SLOTS_PER_PAGE {
                set_slot(slot, start.address(), class_index);
            }
        }
    }
}

/// Sets the arena index's entries of the OS pages `os_pages` of `span` (indices of
/// [`OS_PAGE_SIZE`] from its first byte) to its start and class `class_index`, and leaves its
/// tags alone: the arena's pages are validated an OS page at a time (see [`arena_object`]).
/// Nothing for a span outside the arena.
///
/// # Safety
/// - `span` is a live record of a span of small objects of `class_index`; the OS pages lie
///   inside it.
pub unsafe fn set_arena_tags(
    span: *mut Span,
    os_pages: core::ops::Range<usize>,
    class_index: usize,
) {
    crate::diag::debug_invariant!(class_index != 0 && class_index < 256);
    // SAFETY: per the caller.
    let start = unsafe { (*span).start_address() };
    if let Some(first) = arena_slot(start) {
        for slot in os_pages {
            set_slot(first + slot, start, class_index);
        }
    }
}

/// Sets entry `slot` of the arena index.
fn set_slot(slot: usize, start: usize, class_index: usize) {
    // A page is cleared before its span goes back to the page heap: a page run or a large
    // block carved from it later must not pass for the old span's objects.
    crate::diag::debug_invariant!(
        // SAFETY: an entry of the arena (`arena_slot`), in a chunk the heap took: open.
        [0, start].contains(&unsafe { start_entry(slot) }.load(Ordering::Relaxed)),
        "arena OS page {slot} still holds another span's start"
    );
    // SAFETY: as above.
    unsafe {
        start_entry(slot).store(start, Ordering::Relaxed);
        class_entry(slot).store((class_index << TAG_CLASS_SHIFT) as u16, Ordering::Relaxed);
    }
}

/// Clears the tags of `[start, start + pages)` (and their entries in the arena index).
///
/// # Safety
/// - [`ensure`] succeeded for the range.
pub unsafe fn clear_tags(start: PageId, pages: Length) {
    for k in 0..pages.0 {
        let page = PageId(start.0 + k);
        let (i, j) = split(page);
        let leaf = ROOT[i].load(Ordering::Acquire);
        // SAFETY: the caller ensured the leaf; `j < LEAF_LEN`.
        unsafe { (*leaf).tags.get_unchecked(j).store(0, Ordering::Relaxed) };
        if let Some(first) = arena_slot(page.address()) {
            for slot in first..first + SLOTS_PER_PAGE {
                // SAFETY: an entry of the arena, in a chunk the heap took: open.
                unsafe {
                    class_entry(slot).store(0, Ordering::Relaxed);
                    start_entry(slot).store(0, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The arena index has an entry per OS page ([`OS_PAGE_SIZE`]), two per page: a span's page
/// is carved and validated an OS page at a time (`central_free_list::complete_page`), so that
/// a class whose few objects lie in the first half of a page does not write the second half.
const SLOT_SHIFT: u32 = OS_PAGE_SIZE.trailing_zeros();

/// Entries in the arena index per page.
pub const SLOTS_PER_PAGE: usize = 1 << (PAGE_SHIFT - SLOT_SHIFT as usize);

/// OS pages in the arena, and entries in its index.
const ARENA_SLOTS: usize = ARENA_BYTES >> SLOT_SHIFT;

/// What `free`'s fast path reads of the arena besides the index itself, on one cache line (so
/// that every `free` reaches one line of statics, not three).
#[repr(C, align(64))]
struct Arena {
    /// The arena's first address, negated (wrapping), so that [`arena_object`] can add the
    /// address to the register the compiler loads it into (it does not fold an atomic load
    /// into arithmetic); 0 until [`set_arena`].
    base_neg: AtomicUsize,
    /// The entries of the arena index [`arena_object`] may read: one fewer than the arena's
    /// OS pages (0 until [`set_arena`], so that every address is rejected before the index
    /// exists).
    limit: AtomicUsize,
    /// The arena index (see the module docs), mapped by [`set_arena`]: for OS page `k` of the
    /// arena, the first address of its span (a word at `k * 8`) and 16 times the span's class
    /// (two bytes at [`CLASSES_OFFSET`]` + k * 2`), both 0 for an OS page that is not tagged.
    /// One mapping, so that `free` reaches both arrays from one base address, and the classes
    /// at a fixed offset, which the compiler folds into the load. It is mapped readable only
    /// (zero pages, no memory and no overcommit charge behind them), and the entries of each
    /// chunk of the arena are opened for writing when the heap takes the chunk
    /// ([`open_arena_index`]): only those are ever written.
    index: AtomicPtr<u8>,
    /// The arena's length in bytes (0 until [`set_arena`]).
    len: AtomicUsize,
}

static ARENA: Arena = Arena {
    base_neg: AtomicUsize::new(0),
    limit: AtomicUsize::new(0),
    index: AtomicPtr::new(ptr::null_mut()),
    len: AtomicUsize::new(0),
};

/// Where the classes start in the arena index: after the starts of the largest arena.
const CLASSES_OFFSET: usize = ARENA_SLOTS * size_of::<usize>();

/// The arena index's bytes.
const INDEX_BYTES: usize = CLASSES_OFFSET + ARENA_SLOTS * size_of::<u16>();

const _: () = assert!(256 << TAG_CLASS_SHIFT <= u16::MAX as usize);

/// The arena's first address (0 before [`set_arena`]).
fn arena_start() -> usize {
    ARENA.base_neg.load(Ordering::Relaxed).wrapping_neg()
}

/// The start entry of OS page `slot` of the arena.
///
/// # Safety
/// - [`set_arena`] succeeded and `slot` lies in the arena.
unsafe fn start_entry(slot: usize) -> &'static AtomicUsize {
    // SAFETY: per the caller, the index is mapped and the entry inside it, and never unmapped.
    unsafe { &*ARENA.index.load(Ordering::Relaxed).cast::<AtomicUsize>().add(slot) }
}

/// The class entry of OS page `slot` of the arena.
///
/// # Safety
/// - as for [`start_entry`].
unsafe fn class_entry(slot: usize) -> &'static AtomicU16 {
    // SAFETY: as above.
    unsafe {
        &*ARENA.index.load(Ordering::Relaxed).add(CLASSES_OFFSET).cast::<AtomicU16>().add(slot)
    }
}

/// Records `[base, base + len)` (aligned to a page, at most [`ARENA_BYTES`]) as the arena,
/// once, before any of its pages is tagged, and maps its index. False when the index cannot
/// be mapped: the caller then goes without an arena.
pub fn set_arena(base: usize, len: usize) -> bool {
    crate::diag::debug_invariant!(base % (1 << PAGE_SHIFT) == 0 && base != 0);
    crate::diag::debug_invariant!(len <= ARENA_BYTES && len % (1 << PAGE_SHIFT) == 0);
    crate::diag::debug_invariant!(arena_start() == 0, "arena set twice");
    let Some(index) = os::map_readable(INDEX_BYTES) else { return false };
    ARENA.index.store(index.as_ptr(), Ordering::Relaxed);
    ARENA.len.store(len, Ordering::Relaxed);
    ARENA.base_neg.store(base.wrapping_neg(), Ordering::Relaxed);
    // Last: `arena_object` reads the index only below the limit, and the index's zero pages
    // are readable from the start. Its loads of the limit and the index's address are in no
    // order (x86-64 keeps them in program order; a weaker CPU may not): a reader that sees the
    // new limit with a null index is freeing a pointer into the arena while it is being
    // reserved, which no block of the heap can be yet.
    ARENA.limit.store((len >> SLOT_SHIFT) - 1, Ordering::Release);
    true
}

/// Opens the arena index's entries of `[chunk, chunk + len)`, a chunk of the arena that the
/// heap takes, for writing; false when the kernel refuses (the heap then does not take it).
pub fn open_arena_index(chunk: usize, len: usize) -> bool {
    let Some(first) = arena_slot(chunk) else { return false };
    let slots = len >> SLOT_SHIFT;
    let index = ARENA.index.load(Ordering::Relaxed) as usize;
    let open = |from: usize, to: usize| {
        let from = from & !(OS_PAGE_SIZE - 1);
        let to = to.next_multiple_of(OS_PAGE_SIZE);
        // SAFETY: a page-aligned range inside the index's mapping, which only this module
        // writes, and only through entries opened here.
        unsafe { os::commit(from as *mut u8, to - from) }
    };
    let starts = index + first * size_of::<usize>();
    let classes = index + CLASSES_OFFSET + first * size_of::<u16>();
    open(starts, starts + slots * size_of::<usize>())
        && open(classes, classes + slots * size_of::<u16>())
}

/// The arena's first address (0 before the page heap reserved it), for tests.
#[cfg(test)]
pub fn arena_base() -> usize {
    arena_start()
}

/// Whether `address` lies in the arena.
pub fn in_arena(address: usize) -> bool {
    let base = arena_start();
    base != 0 && address.wrapping_sub(base) < ARENA.len.load(Ordering::Relaxed)
}

/// The arena index's entry for the OS page of `address`, if it lies in the arena.
fn arena_slot(address: usize) -> Option<usize> {
    if !in_arena(address) {
        return None;
    }
    Some((address - arena_start()) >> SLOT_SHIFT)
}

/// C `free`'s validation of `address` in the arena: 16 times its class if it is the start of
/// an object on a tagged page of a span of small objects there, else `None` (anything
/// outside the arena too: the caller then asks the tags). A subtraction and a compare, two
/// loads from the index, and the class's object test; no branch for pages with nothing
/// recorded, whose class 0 passes no address.
#[inline(always)]
pub fn arena_object(address: usize) -> Option<usize> {
    let k = address.wrapping_add(ARENA.base_neg.load(Ordering::Relaxed)) >> SLOT_SHIFT;
    // The index's last entry is never read: against a bound that is not a power of two, the
    // test is one compare of `k` (with the limit in memory), which the OS page number needs
    // anyway. The limit is 0 until the index is mapped, and set once after it (a plain load,
    // which the compiler folds into the compare, as the entries' below; it changes only from
    // 0, once, and either value gives a safe answer).
    // SAFETY: a word-aligned static, read whole.
    if k >= unsafe { *ARENA.limit.as_ptr() } {
        return None;
    }
    // The entries are read with plain loads, which the compiler folds into the arithmetic (it
    // keeps an atomic load apart); each is an aligned word or half-word, read whole, but the
    // two loads are in no order with each other or with the two stores that set or clear a
    // page, so a read may meet any mix of a page's old and new start and class. An entry
    // changes while a `free` may read it only:
    // - for a pointer that is not a live block of its page (a stale pointer freed while its
    //   span is reused, which C leaves undefined): the mix takes or rejects the pointer, as a
    //   stale tag would (a start of 0 with a class passes an address only by chance, about
    //   one in 2^43);
    // - for an object on an OS page that is tagged after the object was handed out (its span
    //   carves the rest of it: `central_free_list::complete_page`, or another batch):
    //   the entries go from 0 to the span's own start and class, and a span's pages were
    //   cleared before the span was last given back (under the page heap's lock), so every
    //   mix has class 0 (rejected: the slow path, which takes the list's lock) or the right
    //   class with the right start or 0, which either frees the object or takes the slow
    //   path;
    // - for the one block of a span that grows in place (`regrow_span`; the start stays, the
    //   class changes), which its owner is reallocating, not freeing.
    let index = ARENA.index.load(Ordering::Relaxed);
    // SAFETY: `k` is below the limit, so the index is mapped (`set_arena` stored the pointer
    // before the limit) and both entries lie in it.
    let (start, scaled_class) = unsafe {
        (*index.cast::<usize>().add(k), *index.add(CLASSES_OFFSET).cast::<u16>().add(k) as usize)
    };
    // SAFETY: `scaled_class` is 16 times a class below `NUM_CLASSES`, or 0, as `set_tags`,
    // `set_arena_tags` and `clear_tags` store it. (The offset from a span's start to an
    // address on one of its pages is below 256 pages, `OBJECT_CHECK_RANGE`, where the test is
    // exact.)
    if unsafe { size_class::row_passes(scaled_class, address.wrapping_sub(start)) } {
        Some(scaled_class)
    } else {
        None
    }
}

/// Records `span` for `page`.
///
/// # Safety
/// - [`ensure`] succeeded for `page`.
#[inline]
pub unsafe fn set(page: PageId, span: *mut Span) {
    let (i, j) = split(page);
    let leaf = ROOT[i].load(Ordering::Acquire);
    crate::diag::debug_invariant!(!leaf.is_null(), "page map leaf missing for page {:#x}", page.0);
    // SAFETY: the caller ensured the leaf exists; `j < LEAF_LEN`.
    unsafe { (*leaf).spans.get_unchecked(j).store(span, Ordering::Release) };
}

/// Records `span` for every page of `[start, start + pages)`.
///
/// # Safety
/// - [`ensure`] succeeded for the range.
pub unsafe fn set_range(start: PageId, pages: Length, span: *mut Span) {
    for k in 0..pages.0 {
        // SAFETY: forwarded from the caller.
        unsafe { set(PageId(start.0 + k), span) };
    }
}

/// Forgets the span of `page` (no-op where no leaf exists).
pub fn clear(page: PageId) {
    let (i, j) = split(page);
    if i >= ROOT_LEN {
        return;
    }
    let leaf = ROOT[i].load(Ordering::Acquire);
    if !leaf.is_null() {
        // SAFETY: installed leaves are valid forever; `j < LEAF_LEN`.
        unsafe { (*leaf).spans.get_unchecked(j).store(ptr::null_mut(), Ordering::Release) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_clear() {
        // Pages far above anything the OS hands out in a test.
        let base = PageId(MAX_PAGES - 3 * LEAF_LEN - 5);
        let mut record = Span::empty();
        let span = &mut record as *mut Span;
        assert!(get(base).is_null());
        assert!(ensure(base, Length(10)));
        // SAFETY: ensured just above.
        unsafe { set_range(base, Length(10), span) };
        for k in 0..10 {
            assert_eq!(get(PageId(base.0 + k)), span);
        }
        assert!(get(PageId(base.0 + 10)).is_null(), "crosses into the next leaf");
        assert_eq!(lookup(base.address() + 12345), span);
        for k in 0..10 {
            clear(PageId(base.0 + k));
        }
        assert!(get(base).is_null());
    }

    #[test]
    fn out_of_range_is_null() {
        assert!(get(PageId(MAX_PAGES)).is_null());
        assert!(lookup(usize::MAX).is_null());
        assert!(!ensure(PageId(MAX_PAGES - 1), Length(2)));
        clear(PageId(MAX_PAGES + 7));
    }
}
