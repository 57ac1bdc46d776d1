//! Routing by size and alignment: the one place that decides where a request is served.
//!
//! | request | served by |
//! | --- | --- |
//! | rounded size <= 1 MiB, alignment <= 8 KiB | a size class, through the thread cache |
//! | size <= 1 MiB, alignment 16 KiB ..= 1 MiB | a page run from the page heap, aligned |
//! | anything larger | `large`: its own mapping |
//!
//! Two kinds of callers use it. The Rust [`GlobalAlloc`](core::alloc::GlobalAlloc) passes the
//! size and alignment back on free (`dealloc_sized`), so a block's class is recomputed from its
//! layout with no page-map lookup. C's `free(p)` does not, so `free_unsized` resolves `p`
//! through the page map, checks that it is a block this allocator handed out, and aborts with
//! a message if it is not.
//!
//! Nothing here panics, prints on a normal path or allocates; failures are null pointers.
//!
//! Layers below: `front_end`, `page_heap` (page runs), `large`, `page_map`, `size_class`.

use crate::central_free_list;
use crate::config::{C_MALLOC_ALIGN, LARGE_THRESHOLD, MIN_ALIGN, PAGE_SIZE};
use crate::diag::double_free;
use crate::free_list;
use crate::front_end::{self, FAST_LIMIT};
use crate::large;
use crate::page_heap::PAGE_HEAP;
use crate::page_map;
use crate::size_class::{self, class_for, SizeClass, MAX_SIZE, MEDIUM_SHIFT};
use crate::span::{Length, SpanKind};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Bytes in page runs (over-aligned blocks served as whole pages); `stats` reads it.
pub static PAGE_RUN_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Largest alignment served by a page run; larger alignments get their own mapping.
pub const MAX_PAGE_RUN_ALIGN: usize = 1 << 20;

/// Allocates `size` bytes aligned to `align` (a power of two). Null when out of memory.
#[inline(always)]
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    // Two separate tests, as in `dealloc_sized`.
    if align > MIN_ALIGN {
        return alloc_other(size, align);
    }
    if size >= FAST_LIMIT {
        return alloc_other(size, align);
    }
    front_end::alloc_small(size)
}

/// The alignment C `malloc(size)` guarantees: 16 (`alignof(max_align_t)`) for blocks larger
/// than 8 bytes, 8 for the rest (nothing of 8 bytes or less needs more).
#[inline(always)]
pub fn c_align(size: usize) -> usize {
    if size <= MIN_ALIGN {
        MIN_ALIGN
    } else {
        C_MALLOC_ALIGN
    }
}

/// Allocates `size` bytes with C `malloc`'s alignment ([`c_align`]). Null when out of memory.
#[inline(always)]
pub fn alloc_c(size: usize) -> *mut u8 {
    if size < FAST_LIMIT {
        return front_end::alloc_small_c(size);
    }
    alloc_other(size, C_MALLOC_ALIGN)
}

/// Frees a block given the size and alignment it was allocated with.
///
/// # Safety
/// - `ptr` came from [`alloc`] (or a realloc) with this `size` and `align`, and is unused.
#[inline(always)]
pub unsafe fn dealloc_sized(ptr: *mut u8, size: usize, align: usize) {
    #[cfg(feature = "hardened")]
    // SAFETY: per the caller.
    if let Some(scaled_class) = unsafe { hardened_small_object(ptr, size, align) } {
        // SAFETY: validated, and checked not free on the way in.
        return unsafe { front_end::dealloc_checked(ptr, scaled_class, "dealloc") };
    }
    #[cfg(all(debug_assertions, not(feature = "hardened")))]
    // SAFETY: per the caller.
    unsafe {
        check_sized_free(ptr, size, align)
    };
    // Two separate tests, each with its own exit: LLVM then emits two compare-and-branch
    // pairs instead of materialising both conditions and combining them.
    if align > MIN_ALIGN {
        // SAFETY: per the caller.
        return unsafe { dealloc_other(ptr, size, align) };
    }
    if size >= FAST_LIMIT {
        // SAFETY: per the caller.
        return unsafe { dealloc_other(ptr, size, align) };
    }
    // SAFETY: per the caller, `ptr` is a dead block of the class of `size`.
    unsafe { front_end::dealloc_small(ptr, size) }
}

/// Whether `size` and `align` take the medium table: classes above `FAST_LIMIT` are multiples
/// of `1 << MEDIUM_SHIFT`, so any alignment up to that lands on the same class as no alignment.
#[inline(always)]
fn is_medium(size: usize, align: usize) -> bool {
    align <= 1 << MEDIUM_SHIFT && size.wrapping_sub(FAST_LIMIT) <= MAX_SIZE - FAST_LIMIT
}

#[inline(never)]
fn alloc_other(size: usize, align: usize) -> *mut u8 {
    if is_medium(size, align) {
        return front_end::alloc_medium(size);
    }
    if let Some(class) = class_for(size, align) {
        return front_end::alloc(class);
    }
    alloc_uncached(size, align)
}

/// Requests that no size class serves.
#[cold]
fn alloc_uncached(size: usize, align: usize) -> *mut u8 {
    if size <= MAX_SIZE && align <= MAX_PAGE_RUN_ALIGN {
        return alloc_page_run(size, align);
    }
    large::alloc(size, align, false)
}

/// A block of whole pages aligned to `align > PAGE_SIZE`.
fn alloc_page_run(size: usize, align: usize) -> *mut u8 {
    let pages = Length::for_bytes(size.max(1));
    let span =
        PAGE_HEAP.lock().allocate_aligned(pages, Length(align / PAGE_SIZE), SpanKind::PageRun);
    if span.is_null() {
        return ptr::null_mut();
    }
    PAGE_RUN_BYTES.fetch_add(pages.bytes(), Relaxed);
    // SAFETY: a live span record.
    unsafe { (*span).start_address() as *mut u8 }
}

#[inline(never)]
unsafe fn dealloc_other(ptr: *mut u8, size: usize, align: usize) {
    if is_medium(size, align) {
        // SAFETY: per the caller, `ptr` is a dead block of the class of `size`.
        return unsafe { front_end::dealloc_medium(ptr, size) };
    }
    if let Some(class) = class_for(size, align) {
        // SAFETY: per the caller, `ptr` is a dead block of this class.
        unsafe { front_end::dealloc(ptr, class) };
        return;
    }
    // SAFETY: per the caller, `ptr` is a page run or a large block.
    unsafe { free_span_block(ptr, "dealloc") }
}

/// Frees a page run or large block found through the page map; aborts on a pointer that is
/// not one.
///
/// # Safety
/// - If `ptr` is a live page run or large block, it is unused.
// Called from Rust only: the `&str` crosses no language boundary.
#[allow(improper_ctypes_definitions)]
#[cold]
unsafe extern "C" fn free_span_block(ptr: *mut u8, caller: &'static str) {
    let span = page_map::lookup(ptr as usize);
    // SAFETY: `resolve` vouched for the record: it is the live block's own.
    unsafe {
        match resolve(ptr) {
            Block::PageRun => {
                let mut heap = PAGE_HEAP.lock();
                // Checked again under the lock: of two threads freeing the same run at once,
                // the second finds it free.
                if (*span).kind() != SpanKind::PageRun || (*span).start_address() != ptr as usize {
                    drop(heap);
                    double_free(caller, ptr);
                }
                PAGE_RUN_BYTES.fetch_sub((*span).pages().bytes(), Relaxed);
                heap.deallocate(span)
            }
            Block::Large => large::free(span),
            _ => bad_pointer(caller, ptr),
        }
    }
}

/// What a pointer is, according to the page map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Block {
    /// The start of an object of a size class (live or free).
    Small(SizeClass),
    /// The start of a page run.
    PageRun,
    /// The start of a large block.
    Large,
    /// Not the start of any block this allocator handed out.
    Invalid,
}

/// The class of `ptr` if it is the start of an object in a span of small objects.
#[inline(always)]
fn small_object(ptr: *mut u8) -> Option<SizeClass> {
    match small_object_scaled(ptr) {
        0 => None,
        // SAFETY: a class index times 16 that a page-map tag held.
        scaled => Some(unsafe { SizeClass::from_tag(scaled / 16) }),
    }
}

/// 16 times the class of `ptr` if it is the start of an object in a span of small objects,
/// else 0: in the arena, two loads from its index; elsewhere one page-map load (the page's
/// tag); then arithmetic, no read of any span record. The scaled class is what the tables
/// `free` reads next are indexed with.
#[inline(always)]
fn small_object_scaled(ptr: *mut u8) -> usize {
    let address = ptr as usize;
    if let Some(scaled) = page_map::arena_object(address) {
        return scaled;
    }
    let tag = page_map::tag(address) as usize;
    // The class index times 16 (`page_map::Tag`), 0 for no class.
    let scaled_class = tag & (PAGE_SIZE - 1);
    if scaled_class == 0 {
        return 0;
    }
    // The page's offset in its span (the tag's high bits) plus the pointer's in its page.
    let offset = (tag & !(PAGE_SIZE - 1)) | (address & (PAGE_SIZE - 1));
    // SAFETY: a non-zero class field of a tag is 16 times a class the central lists wrote.
    if unsafe { size_class::is_object_start_scaled(scaled_class, offset) } {
        scaled_class
    } else {
        0
    }
}

/// 16 times `class`: its row in the tables `free` reads (as a page's tag holds it).
#[inline(always)]
fn scaled_of(class: SizeClass) -> usize {
    class.index() << page_map::TAG_CLASS_SHIFT
}

/// Classifies `ptr`, which may be any value.
///
/// Small objects are recognised from the arena index or the page's tag alone (an object on an
/// OS page not carved whole yet, by its span). Page runs and large blocks are recognised from
/// the span record the page map names, whose fields are atomics: the record may be stale or
/// reused by another thread meanwhile (only for a pointer that is not a live block, since a
/// live block's record does not change), and then the answer is `Invalid` or, for a pointer
/// that is not the start of a live block anyway, undefined but memory-safe.
pub fn resolve(ptr: *mut u8) -> Block {
    if let Some(class) = small_object(ptr) {
        return Block::Small(class);
    }
    let address = ptr as usize;
    let span = page_map::lookup(address);
    if span.is_null() {
        return Block::Invalid;
    }
    // SAFETY: page-map entries point to metadata records, which are never unmapped; every
    // field read here is atomic.
    let s = unsafe { &*span };
    match s.kind() {
        // An object on a page of its span not carved whole yet: validated by the span.
        SpanKind::Small => {
            central_free_list::complete_page(ptr).map_or(Block::Invalid, Block::Small)
        }
        SpanKind::PageRun if s.start_address() == address => Block::PageRun,
        SpanKind::Large if s.block() == address => Block::Large,
        _ => Block::Invalid,
    }
}

/// Aborts for a pointer that `caller` cannot take: `tcalloc: <caller>(): double free 0x…`
/// when `ptr` is a block that was freed already (as far as the page map and the large-mapping
/// cache can tell), else `tcalloc: <caller>(): invalid pointer 0x…`.
#[cold]
#[inline(never)]
pub fn bad_pointer(caller: &'static str, ptr: *mut u8) -> ! {
    if was_freed(ptr) {
        double_free(caller, ptr)
    }
    invalid_pointer(caller, ptr)
}

/// Whether `ptr` is the start of a page run or large block that is free now: its pages are
/// back in the page heap, or its mapping was freed recently.
fn was_freed(ptr: *mut u8) -> bool {
    let address = ptr as usize;
    let span = page_map::lookup(address);
    if !span.is_null() {
        // SAFETY: a metadata record; every field read is atomic.
        let s = unsafe { &*span };
        let inside =
            s.start_address() <= address && address - s.start_address() < s.pages().bytes();
        if matches!(s.kind(), SpanKind::Free | SpanKind::Returned) && inside {
            return address % PAGE_SIZE == 0;
        }
    }
    large::was_freed(address)
}

/// The checks of a Rust `dealloc` in debug builds and with the `hardened` feature: the block
/// is an object of the class its `Layout` names (or of a class that one borrows from), and,
/// with `hardened`, it is not free already. Page runs and large blocks are validated on their
/// (cold) path anyway.
///
/// # Safety
/// - `ptr` is a block of this allocator, or the check aborts.
#[cfg(all(debug_assertions, not(feature = "hardened")))]
#[inline]
unsafe fn check_sized_free(ptr: *mut u8, size: usize, align: usize) {
    let Some(class) = class_for(size, align) else { return };
    let found = small_object(ptr).or_else(|| central_free_list::complete_page(ptr));
    let Some(found) = found else { bad_pointer("dealloc", ptr) };
    check_layout(class, found, ptr, size, align);
}

/// Aborts unless an object of the layout's `class` may be the `found`-class object at `ptr`.
#[cfg(any(feature = "hardened", debug_assertions))]
#[inline(always)]
fn check_layout(class: SizeClass, found: SizeClass, ptr: *mut u8, size: usize, align: usize) {
    if class != found && !central_free_list::may_hold(class, found) {
        layout_mismatch(found, ptr, size, align)
    }
}

#[cfg(any(feature = "hardened", debug_assertions))]
#[cold]
#[inline(never)]
fn layout_mismatch(found: SizeClass, ptr: *mut u8, size: usize, align: usize) -> ! {
    crate::diag::fatal(format_args!(
        "dealloc(): the layout (size {size}, align {align}) does not match the block at \
         {ptr:p}, a {}-byte object",
        found.size()
    ))
}

/// With `hardened`, Rust's `dealloc` of a small object takes C `free`'s path: the block is
/// validated through its page's tag, its layout is checked against the block's class, and
/// it is pushed by the checked push ([`front_end::dealloc_checked`]: the double-free test) onto
/// the list of the block's class (a block borrowed from a larger class goes back there, as
/// with C `free`). Returns that class times 16, or `None` for a layout no class serves (page
/// runs and large blocks take the ordinary path).
///
/// # Safety
/// - `ptr` is a block of this allocator, or the check aborts.
#[cfg(feature = "hardened")]
#[inline(always)]
unsafe fn hardened_small_object(ptr: *mut u8, size: usize, align: usize) -> Option<usize> {
    let class = class_for(size, align)?;
    let mut scaled = small_object_scaled(ptr);
    if scaled == 0 {
        scaled = central_free_list::complete_page(ptr).map_or(0, scaled_of);
    }
    if scaled == 0 {
        bad_pointer("dealloc", ptr);
    }
    // SAFETY: a class index times 16 that a page-map tag held.
    let found = unsafe { SizeClass::from_tag(scaled / 16) };
    check_layout(class, found, ptr, size, align);
    Some(scaled)
}

/// Aborts with `tcalloc: <caller>(): invalid pointer 0x...`.
#[cold]
#[inline(never)]
pub fn invalid_pointer(caller: &'static str, ptr: *mut u8) -> ! {
    crate::diag::fatal(format_args!("{caller}(): invalid pointer {ptr:p}"))
}

/// Double-free check of a small object about to be freed: if the top 16 bits of its first
/// word decode as a free-list link's, the object is probably free already, and the calling
/// thread's cache is searched for it (the cold part). Objects leaving the allocator have that
/// word cleared, so a live object passes unless the program stored those bits there (about
/// 2^-16 for random data), which costs a search and nothing else.
///
/// # Safety
/// - `ptr` is the start of an object of `class` (validated through the page map, or given
///   by a Rust `Layout`).
#[inline(always)]
unsafe fn check_not_free(ptr: *mut u8, class: SizeClass, caller: &'static str) {
    // SAFETY: objects of every class are at least 8 bytes and 8-aligned.
    if free_list::looks_free(unsafe { free_list::link_top(ptr) }) {
        front_end::abort_if_cached(ptr, class, caller);
    }
}

/// Allocates `size` zeroed bytes aligned to `align`.
pub fn alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    let p = if let Some(class) = class_for(size, align) {
        front_end::alloc(class)
    } else if size <= MAX_SIZE && align <= MAX_PAGE_RUN_ALIGN {
        alloc_page_run(size, align)
    } else {
        // Fresh mappings are zero already; `large` clears reused ones.
        return large::alloc(size, align, true);
    };
    if !p.is_null() {
        // SAFETY: `p` is a fresh block of at least `size` bytes.
        unsafe { p.write_bytes(0, size) };
    }
    p
}

/// Resizes a block given the size and alignment it was allocated with. Returns null (and
/// leaves the block alone) when out of memory.
///
/// # Safety
/// - `ptr` came from this allocator with `old_size` and `align` and is owned by the caller.
pub unsafe fn realloc_sized(
    ptr: *mut u8,
    old_size: usize,
    align: usize,
    new_size: usize,
) -> *mut u8 {
    let old_class = class_for(old_size, align);
    let new_class = class_for(new_size, align);
    if old_class.is_some() && old_class == new_class {
        return ptr;
    }
    if let (Some(old), Some(new)) = (old_class, new_class) {
        // SAFETY: `ptr` is a live block of `old` owned by the caller.
        match unsafe { grow_in_place(ptr, old, new) } {
            Growth::InPlace => return ptr,
            // SAFETY: as above; `fresh` is a live block of `new`, which holds `old_size`.
            Growth::Moved(fresh) => unsafe {
                ptr::copy_nonoverlapping(ptr, fresh, old_size);
                dealloc_sized(ptr, old_size, align);
                return fresh;
            },
            Growth::No => {}
        }
    }
    if old_class.is_none() && new_class.is_none() && old_size > LARGE_THRESHOLD {
        let span = page_map::lookup(ptr as usize);
        // `ptr` is a live large block (sizes above the threshold always are).
        if new_size > LARGE_THRESHOLD && resolve(ptr) == Block::Large {
            // SAFETY: the caller owns the block.
            let moved = unsafe { large::realloc(span, new_size, align) };
            if !moved.is_null() {
                return moved;
            }
        }
    }
    let fresh = alloc(new_size, align);
    if !fresh.is_null() {
        // SAFETY: both blocks are live and distinct; each holds at least the bytes copied.
        unsafe {
            ptr::copy_nonoverlapping(ptr, fresh, old_size.min(new_size));
            dealloc_sized(ptr, old_size, align);
        }
    }
    fresh
}

/// What [`grow_in_place`] did.
enum Growth {
    /// The block kept its address.
    InPlace,
    /// The block could not grow; here is a block of the new class with room to grow further,
    /// for the caller to copy into.
    Moved(*mut u8),
    /// Not a growth between one-object classes (or out of memory): the ordinary way applies.
    No,
}

/// Grows a block of class `old` to the one-object class `new` without moving it, when `old`
/// holds one object per span too and the pages after the block's span are free. Otherwise the
/// new block is carved from the front of a free run with room to double again, so that a
/// block grown step by step (a `Vec` being filled) moves about once on its way to 1 MiB
/// instead of at every class.
///
/// # Safety
/// - `ptr` is a live block of class `old` owned by the caller.
unsafe fn grow_in_place(ptr: *mut u8, old: SizeClass, new: SizeClass) -> Growth {
    if old >= new || new.info().objects != 1 {
        return Growth::No;
    }
    let span = page_map::lookup(ptr as usize);
    // SAFETY: a block of a one-object class is its span's only object; the span holds it.
    if old.info().objects == 1 && unsafe { central_free_list::regrow_span(span, old, new) } {
        return Growth::InPlace;
    }
    let room = class_for((new.size() * 2).min(MAX_SIZE), 1).unwrap_or(new);
    // SAFETY: the span is in use (it holds the caller's block), so its shard is settled.
    let shard = unsafe { (*span).shard() };
    let fresh = central_free_list::alloc_growable(new, shard, Length(room.info().pages as usize));
    if fresh.is_null() {
        Growth::No
    } else {
        Growth::Moved(fresh)
    }
}

/// Frees a block by address alone (C `free`): validates it through the page map, checks that
/// it is not free already, and aborts with a message if it is not a live block of this
/// allocator.
///
/// # Safety
/// - If `ptr` is a block of this allocator, it is unused.
///
/// The fast path validates objects of the page heap's arena through the page map's arena
/// index ([`page_map::arena_object`]); everything else, null included (so `free(NULL)` costs
/// the fast path nothing), takes the cold path.
#[inline(always)]
pub unsafe fn free_unsized(ptr: *mut u8, caller: &'static str) {
    match page_map::arena_object(ptr as usize) {
        // SAFETY: a validated object of the class, dead per the caller (or caught as free).
        Some(scaled_class) => unsafe { front_end::dealloc_checked(ptr, scaled_class, caller) },
        // SAFETY: as below, for the other kinds.
        None => unsafe { free_other(ptr, caller) },
    }
}

/// [`free_unsized`] of anything but a small object on a tagged page of the arena: null
/// (nothing to do), a small object outside the arena (validated through its tag), an object on
/// a page of its span not carved whole yet (the page is completed and tagged, and the object
/// freed as any other), a page run or a large block, or a pointer to abort on.
///
/// # Safety
/// - as for [`free_unsized`].
// Called from Rust only: the `&str` crosses no language boundary.
#[allow(improper_ctypes_definitions)]
#[cold]
#[inline(never)]
unsafe extern "C" fn free_other(ptr: *mut u8, caller: &'static str) {
    if ptr.is_null() {
        return;
    }
    let scaled_class = small_object_scaled(ptr);
    if scaled_class != 0 {
        // SAFETY: validated, dead per the caller (or caught as free).
        return unsafe { front_end::dealloc_checked(ptr, scaled_class, caller) };
    }
    if let Some(class) = central_free_list::complete_page(ptr) {
        // SAFETY: validated, dead per the caller (or caught as free).
        return unsafe { front_end::dealloc_checked(ptr, scaled_of(class), caller) };
    }
    // SAFETY: per the caller.
    unsafe { free_span_block(ptr, caller) }
}

/// The size of the live block at `ptr` and what it is; aborts on a pointer this allocator did
/// not hand out, or a small object that is free.
///
/// # Safety
/// - If `ptr` is a block of this allocator, it is live.
unsafe fn live_block(ptr: *mut u8, caller: &'static str) -> (Block, usize) {
    let block = resolve(ptr);
    let span = page_map::lookup(ptr as usize);
    // SAFETY: `resolve` vouched for the record of a page run or large block.
    let size = unsafe {
        match block {
            Block::Small(class) => {
                check_not_free(ptr, class, caller);
                class.size()
            }
            Block::PageRun => (*span).pages().bytes(),
            Block::Large => large::usable_size(span),
            Block::Invalid => bad_pointer(caller, ptr),
        }
    };
    (block, size)
}

/// Frees the live block at `ptr` whose size the caller vouches for (C23 `free_sized`,
/// jemalloc's `sdallocx`): one validation through the page map, then `check(usable size)`
/// compares the size the program gave with the block (and aborts if it does not match).
///
/// # Safety
/// - If `ptr` is a block of this allocator, it is unused.
pub unsafe fn free_checked(ptr: *mut u8, caller: &'static str, check: impl FnOnce(usize)) {
    // SAFETY: per the caller.
    let (block, usable) = unsafe { live_block(ptr, caller) };
    check(usable);
    match block {
        // SAFETY: validated, checked not free, dead per the caller.
        Block::Small(class) => unsafe { front_end::dealloc(ptr, class) },
        // SAFETY: as above; the page run or large block is validated again on its path.
        _ => unsafe { free_span_block(ptr, caller) },
    }
}

/// Bytes usable in the block at `ptr` (C `malloc_usable_size`); aborts on a pointer this
/// allocator did not hand out.
///
/// # Safety
/// - `ptr` is live (freed blocks may be reported or rejected).
pub unsafe fn usable_size(ptr: *mut u8, caller: &'static str) -> usize {
    // SAFETY: per the caller.
    unsafe { live_block(ptr, caller).1 }
}

/// Resizes a block by address alone (C `realloc`, `new_size > 0`) keeping `align`.
///
/// # Safety
/// - `ptr` is a live block of this allocator owned by the caller (otherwise: abort).
pub unsafe fn realloc_unsized(
    ptr: *mut u8,
    new_size: usize,
    align: usize,
    caller: &'static str,
) -> *mut u8 {
    // SAFETY: per the caller.
    let (block, old_size) = unsafe { live_block(ptr, caller) };
    let span = page_map::lookup(ptr as usize);
    match block {
        // Shrinking or growing within the class keeps the block; so does shrinking to no
        // less than half of it.
        Block::Small(class)
            if new_size <= class.size()
                && (new_size * 2 >= class.size() || class_for(new_size, align) == Some(class)) =>
        {
            return ptr;
        }
        Block::Small(class) => {
            if let Some(bigger) = class_for(new_size, align) {
                // SAFETY: a validated live block of `class` owned by the caller.
                match unsafe { grow_in_place(ptr, class, bigger) } {
                    Growth::InPlace => return ptr,
                    // SAFETY: as above; `fresh` is a live block holding `old_size` bytes.
                    Growth::Moved(fresh) => unsafe {
                        ptr::copy_nonoverlapping(ptr, fresh, old_size.min(new_size));
                        free_unsized(ptr, caller);
                        return fresh;
                    },
                    Growth::No => {}
                }
            }
        }
        Block::Large if new_size > LARGE_THRESHOLD => {
            // SAFETY: a validated live large block owned by the caller.
            let moved = unsafe { large::realloc(span, new_size, align) };
            if !moved.is_null() {
                return moved;
            }
        }
        _ => {}
    }
    let fresh = alloc(new_size, align);
    if !fresh.is_null() {
        // SAFETY: both blocks are live and distinct; each holds at least the bytes copied.
        unsafe {
            ptr::copy_nonoverlapping(ptr, fresh, old_size.min(new_size));
            free_unsized(ptr, caller);
        }
    }
    fresh
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::SizeClass;

    /// A block that `realloc` grows in place from one one-object class to the next keeps its
    /// address and changes class: on every page of its span, the arena index then gives the
    /// new class where the tag does (the index holds the class on each page, so every page is
    /// written again), and `free` takes the grown block.
    #[test]
    fn a_block_grown_in_place_is_validated_as_its_new_class() {
        let mut size = 200 << 10;
        // SAFETY: sizes are non-zero; the block is grown with its current size and freed once.
        unsafe {
            let mut p = alloc(size, 8);
            assert!(!p.is_null());
            let mut in_place = 0;
            while size < 900 << 10 {
                let new_size = size + (16 << 10);
                let q = realloc_sized(p, size, 8, new_size);
                assert!(!q.is_null());
                in_place += usize::from(q == p);
                p = q;
                size = new_size;
                let Block::Small(class) = resolve(p) else { panic!("{size}: not a small block") };
                assert_eq!(page_map::arena_object(p as usize), Some(class.index() * 16), "{size}");
                for probe in (p as usize..p as usize + class.size()).step_by(PAGE_SIZE / 2) {
                    let by_tag = small_object_scaled(probe as *mut u8);
                    assert_eq!(page_map::arena_object(probe).unwrap_or(0), by_tag, "{probe:#x}");
                }
            }
            assert!(in_place > 0, "no growth in place: nothing was tested");
            free_unsized(p, "free");
        }
    }

    /// C `free`'s two ways to validate a small object agree: for every address in and around
    /// an object of every class (objects of the process heap, in the arena), the arena index
    /// gives the class exactly where the page's tag does, and nothing elsewhere. Also
    /// addresses that are no object: null, the top of the address space, the stack, the end
    /// of the arena.
    #[test]
    fn the_arena_index_and_the_tags_agree() {
        let mut held = Vec::new();
        for class in SizeClass::all() {
            let size = class.size();
            let p = front_end::alloc(class);
            assert!(!p.is_null());
            // Completes the object's page if it was carved in part (as C `free` would).
            assert_eq!(resolve(p), Block::Small(class), "class {}", class.index());
            let a = p as usize;
            assert_eq!(page_map::arena_object(a), Some(class.index() * 16), "{size}: {p:p}");
            let step = if size <= 4096 { 1 } else { 64 };
            let from = a.saturating_sub(size + 64) & !(PAGE_SIZE - 1);
            for probe in (from..a + 2 * size + 64).step_by(step) {
                // Other tests carve and tag pages meanwhile (the tag first, then the index
                // entry): a disagreement must pass within a few reads.
                let agree = (0..1000).any(|_| {
                    let by_tag = small_object_scaled(probe as *mut u8);
                    page_map::arena_object(probe).unwrap_or(0) == by_tag
                });
                assert!(agree, "class size {size}: {probe:#x} (object {a:#x})");
            }
            held.push((p, class));
        }
        let heap = PAGE_HEAP.lock().stats();
        let (reserved, used) = (heap.arena_reserved_bytes, heap.arena_used_bytes);
        assert!(reserved >= 1 << 30 && used > 0, "the process heap lies in the arena");
        let stack = 0u64;
        for wild in [0, 8, usize::MAX, usize::MAX - 7, 1 << 47, &stack as *const u64 as usize] {
            assert_eq!(page_map::arena_object(wild), None, "{wild:#x}");
        }
        let base = page_map::arena_base();
        let end = base + reserved;
        for probe in [end - PAGE_SIZE, end - 8, end, end + 4096] {
            assert_eq!(page_map::arena_object(probe), None, "{probe:#x}");
        }
        for (p, class) in held {
            // SAFETY: a live block of `class`, freed once.
            unsafe { front_end::dealloc(p, class) };
        }
    }
}
