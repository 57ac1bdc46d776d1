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
//! Entry points: [`get`], [`lookup`], [`tag`], [`ensure`], [`set`], [`set_range`], [`clear`],
//! [`set_tags`], [`clear_tags`]. Layer
//! below: `os` (for leaves), `metadata` (accounting).

use crate::config::{ADDRESS_BITS, PAGE_SHIFT};
use crate::metadata;
use crate::os;
use crate::span::{Length, PageId, Span};
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

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

/// Tags pages `pages` (indices from `start`, the span's first page, below 256) as pages of a
/// span of small objects of class `class_index`.
///
/// # Safety
/// - [`ensure`] succeeded for the range (the span's pages are recorded already).
pub unsafe fn set_tags(start: PageId, pages: core::ops::Range<usize>, class_index: usize) {
    crate::diag::debug_invariant!(class_index != 0 && class_index < 256 && pages.end <= 256);
    for k in pages {
        let (i, j) = split(PageId(start.0 + k));
        let leaf = ROOT[i].load(Ordering::Acquire);
        // SAFETY: the caller ensured the leaf; `j < LEAF_LEN`.
        unsafe { (*leaf).tags.get_unchecked(j).store(make_tag(class_index, k), Ordering::Relaxed) };
    }
}

/// Clears the tags of `[start, start + pages)`.
///
/// # Safety
/// - [`ensure`] succeeded for the range.
pub unsafe fn clear_tags(start: PageId, pages: Length) {
    for k in 0..pages.0 {
        let (i, j) = split(PageId(start.0 + k));
        let leaf = ROOT[i].load(Ordering::Acquire);
        // SAFETY: the caller ensured the leaf; `j < LEAF_LEN`.
        unsafe { (*leaf).tags.get_unchecked(j).store(0, Ordering::Relaxed) };
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
