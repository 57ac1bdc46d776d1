//! List mechanics and the fast paths: the tables from a size to the byte offset of its list,
//! the pop and the push (with the link checks of `free_list`), C `free`'s checked push, and
//! the `#[cold]` slow paths they leave by (a refill, a list that is too long, a cache that is
//! not active, a suspected double free).

use super::tls::{cache, cache_fast};
use super::{HotList, ThreadCache};
use crate::central_free_list;
use crate::config::{C_MALLOC_ALIGN, MIN_ALIGN};
use crate::free_list::{self, FreeObject};
use crate::size_class::{self, SizeClass, NUM_CLASSES};
use core::mem::size_of;
use core::ptr;

// The slow paths are `extern "C"`: such a function cannot unwind, so a fast path can end in a
// tail call to it (a call that might unwind needs a landing pad in the exported C functions,
// which then save registers and keep a frame on every call).

/// Requests below this size (with the minimum alignment) take [`alloc_small`] and
/// [`dealloc_small`], which index the thread's lists straight from the size.
pub const FAST_LIMIT: usize = 1025;

/// Byte offset of the list of each class in `ThreadCache::hot`.
const fn list_offset(class_index: u8) -> u16 {
    (class_index as usize * size_of::<HotList>()) as u16
}

/// `FAST_OFFSET[size]`: the offset of the list serving `size` bytes at the minimum alignment.
static FAST_OFFSET: [u16; FAST_LIMIT] = {
    let mut t = [0u16; FAST_LIMIT];
    let mut size = 0;
    while size < FAST_LIMIT {
        t[size] = list_offset(size_class::smallest_class_for(size));
        size += 1;
    }
    t
};

/// `FAST_OFFSET_C[size]`: the same for C `malloc`, which aligns blocks above 8 bytes to 16.
static FAST_OFFSET_C: [u16; FAST_LIMIT] = {
    let mut t = [0u16; FAST_LIMIT];
    let mut size = 0;
    while size < FAST_LIMIT {
        let rounded = if size <= MIN_ALIGN { size } else { size.next_multiple_of(C_MALLOC_ALIGN) };
        t[size] = list_offset(size_class::smallest_class_for(rounded));
        size += 1;
    }
    t
};

/// `MEDIUM_OFFSET[(size + 127) >> 7]`: the offset of the list serving `size` bytes at the
/// minimum alignment, for `FAST_LIMIT <= size <= MAX_SIZE`.
static MEDIUM_OFFSET: [u16; (size_class::MAX_SIZE >> size_class::MEDIUM_SHIFT) + 1] = {
    let mut t = [0u16; (size_class::MAX_SIZE >> size_class::MEDIUM_SHIFT) + 1];
    let mut i = 0;
    while i < t.len() {
        t[i] = list_offset(size_class::smallest_class_for(i << size_class::MEDIUM_SHIFT));
        i += 1;
    }
    t
};

const _: () = assert!(size_of::<HotList>() == 16 && NUM_CLASSES * 16 <= u16::MAX as usize);
const _: () = assert!(NUM_CLASSES <= 128, "the active-class mask is a u128");
const _: () = assert!(FAST_LIMIT <= crate::config::SMALL_LOOKUP_MAX + 1);

/// Pops from the list at byte offset `offset` of the calling thread's cache.
#[inline(always)]
fn pop(offset: usize) -> *mut u8 {
    pop_or(offset, |class| alloc_slow(class))
}

/// Marks the branch that calls it as rarely taken, as a call of the `#[cold]` [`alloc_slow`]
/// does when it is not hidden behind a closure: the pop then stays in line in the caller's
/// loop, and the refill out of it.
#[cold]
#[inline(always)]
fn cold_path() {}

/// [`pop`], with `slow(class index)` (a refill) in place of [`alloc_slow`] when the list is
/// empty or the thread has no cache yet.
#[inline(always)]
fn pop_or(offset: usize, slow: impl FnOnce(usize) -> *mut u8) -> *mut u8 {
    let cache = cache_fast();
    if cache.is_null() {
        cold_path();
        return slow(offset / size_of::<HotList>());
    }
    // SAFETY: the cache is this thread's; `offset` is the offset of one of its lists (a class
    // index times the list size); the list's objects are free objects of the class, whose
    // first word links the list.
    unsafe {
        let list = (*cache).hot.as_mut_ptr().byte_add(offset);
        let head = (*list).head;
        if head.is_null() {
            cold_path();
            return slow(offset / size_of::<HotList>());
        }
        // Decode and check the link (see `free_list`): a valid link (below 2^48, 8-aligned)
        // has no bit of the mask set, which one `test` with the cache's copy of the mask
        // checks (a constant mask would need its own load first).
        let next = if free_list::CHECKS {
            let next = (*head).link_word() ^ (*cache).key;
            if next & (*cache).link_mask != 0 {
                return pop_corrupted(head);
            }
            next
        } else {
            (*head).link_word()
        };
        let next = next as *mut FreeObject;
        (*list).head = next;
        (*list).room += 1;
        // Builds with C `free` checks clear the link of a block leaving the cache, so that a
        // block the program never writes does not look free when it is freed (see
        // `free_list::looks_free`); elsewhere that costs an instruction for nothing.
        #[cfg(any(feature = "override", feature = "hardened"))]
        if free_list::CHECKS {
            free_list::take_object(head);
        }
        // The next pop will read `next`'s link; start fetching its cache line now, so that a
        // list of cold objects costs one miss in flight instead of one per allocation.
        crate::os::prefetch(next.cast());
        head.cast()
    }
}

/// Aborts for the pop of `head`, whose link was overwritten; a function that "returns" a
/// block, so that the pop ends in a tail call and keeps no stack frame for the abort.
#[cold]
#[inline(never)]
extern "C" fn pop_corrupted(head: *mut FreeObject) -> *mut u8 {
    // SAFETY: `head` is a free object of the list being popped (readable).
    free_list::corrupted(head, unsafe { (*head).link_word() })
}

/// Pushes `ptr` on the list at byte offset `offset` of the calling thread's cache.
///
/// # Safety
/// - `ptr` is a dead block of the class of that list.
#[inline(always)]
unsafe fn push(ptr: *mut u8, offset: usize) {
    let cache = cache_fast();
    if cache.is_null() {
        // SAFETY: per the caller.
        return unsafe { push_slow(ptr, offset) };
    }
    // SAFETY: per the caller.
    unsafe { push_to(cache, ptr, offset) }
}

/// [`push`] when the cache is not reachable without a call.
///
/// # Safety
/// - as for [`push`].
#[cold]
#[inline(never)]
unsafe extern "C" fn push_slow(ptr: *mut u8, offset: usize) {
    // SAFETY: per the caller.
    unsafe { push_to(cache(), ptr, offset) }
}

/// Pushes `ptr` on the list at byte offset `offset` of `cache`.
///
/// # Safety
/// - `cache` is the calling thread's cache; `ptr` is a dead block of the list's class.
#[inline(always)]
unsafe fn push_to(cache: *mut ThreadCache, ptr: *mut u8, offset: usize) {
    // SAFETY: as in `pop`; `ptr` is a dead block of the list's class per the caller.
    unsafe {
        let list = (*cache).hot.as_mut_ptr().byte_add(offset);
        let object = ptr.cast::<FreeObject>();
        let key = if free_list::CHECKS { (*cache).key } else { 0 };
        free_list::set_next_keyed(object, (*list).head, key);
        (*list).head = object;
        (*list).room -= 1;
        if (*list).room < 0 {
            dealloc_slow(offset);
        }
    }
}

/// C `free`'s push: pushes `ptr`, a validated object of the class whose index times 16 is
/// `scaled_class` (as the page-map tag holds it, and the byte offset of the class's list),
/// onto the calling thread's cache, unless its first word says it may be free already
/// ([`free_list::looks_free`] of its top two bytes, with the cache's copies of the key and the
/// mask): then the cold path searches the cache's list and the block's span and aborts on a
/// double free. Every call it makes is a tail call, so the fast path saves no registers.
///
/// # Safety
/// - `ptr` is the start of an object of that class (validated through the page map); if it is
///   live, the caller is done with it.
#[inline(always)]
pub unsafe fn dealloc_checked(ptr: *mut u8, scaled_class: usize, caller: &'static str) {
    crate::diag::debug_invariant!(scaled_class == list_offset((scaled_class / 16) as u8) as usize);
    let cache = cache_fast();
    if cache.is_null() {
        // SAFETY: per the caller.
        return unsafe { dealloc_checked_slow(ptr, scaled_class, caller) };
    }
    // SAFETY: as in `push`; every object is at least 8 bytes, 8-aligned; the two bytes of the
    // key read alone lie inside the cache's `key` field.
    unsafe {
        if free_list::CHECKS {
            // As `free_list::looks_free_keyed`, under the cache's mask: an `Uninit` cache's is
            // 0, so that its first free always takes the search. The key's top bytes are read
            // alone (volatile: else the compiler derives them from the whole key, which the
            // push loads anyway, with a move and a shift: one more instruction).
            let key_top = ptr::read_volatile(
                (&raw const (*cache).key).cast::<u8>().add(free_list::TOP_OFFSET).cast::<u16>(),
            );
            let top = free_list::link_top(ptr) ^ key_top;
            if top & ((*cache).link_mask >> 48) as u16 == 0 {
                return dealloc_suspect(ptr, scaled_class, caller);
            }
        }
        push_to(cache, ptr, scaled_class)
    }
}

/// [`dealloc_checked`] when the cache is not reachable without a call.
///
/// # Safety
/// - as for [`dealloc_checked`].
// Called from Rust only: the `&str` crosses no language boundary.
#[allow(improper_ctypes_definitions)]
#[cold]
#[inline(never)]
unsafe extern "C" fn dealloc_checked_slow(ptr: *mut u8, scaled_class: usize, caller: &'static str) {
    let cache = cache();
    // SAFETY: as in `dealloc_checked`.
    unsafe {
        if free_list::looks_free(free_list::link_top(ptr)) {
            return dealloc_suspect(ptr, scaled_class, caller);
        }
        push_to(cache, ptr, scaled_class)
    }
}

/// [`dealloc_checked`]'s cold path: aborts if this thread's cache holds `ptr` already, else
/// pushes it.
///
/// # Safety
/// - as for [`dealloc_checked`].
// Called from Rust only: the `&str` crosses no language boundary.
#[allow(improper_ctypes_definitions)]
#[cold]
#[inline(never)]
unsafe extern "C" fn dealloc_suspect(ptr: *mut u8, scaled_class: usize, caller: &'static str) {
    // SAFETY: per the caller, a class index times 16.
    let class = unsafe { SizeClass::from_tag(scaled_class / size_of::<HotList>()) };
    abort_if_cached(ptr, class, caller);
    // SAFETY: per the caller.
    unsafe { push(ptr, scaled_class) }
}

/// Pops an object of `class` from the calling thread's cache; null only when out of memory.
#[inline(always)]
pub fn alloc(class: SizeClass) -> *mut u8 {
    pop(list_offset(class.index() as u8) as usize)
}

/// Pushes an object of `class` onto the calling thread's cache.
///
/// # Safety
/// - `ptr` is a block of `class` handed out by this allocator and no longer used.
#[inline(always)]
pub unsafe fn dealloc(ptr: *mut u8, class: SizeClass) {
    // SAFETY: forwarded.
    unsafe { push(ptr, list_offset(class.index() as u8) as usize) }
}

/// Allocates `size < FAST_LIMIT` bytes at the minimum alignment: one table load, then a pop.
#[inline(always)]
pub fn alloc_small(size: usize) -> *mut u8 {
    crate::diag::debug_invariant!(size < FAST_LIMIT);
    // SAFETY: `size < FAST_LIMIT`, the table's length.
    pop(unsafe { *FAST_OFFSET.get_unchecked(size) } as usize)
}

/// Frees a block that [`alloc_small`] returned for `size`.
///
/// # Safety
/// - `ptr` came from `alloc_small(size)` (or any block of the same class) and is dead.
#[inline(always)]
pub unsafe fn dealloc_small(ptr: *mut u8, size: usize) {
    crate::diag::debug_invariant!(size < FAST_LIMIT);
    // SAFETY: `size < FAST_LIMIT`; `ptr` is a dead block of the class per the caller.
    unsafe { push(ptr, *FAST_OFFSET.get_unchecked(size) as usize) }
}

/// Allocates `FAST_LIMIT <= size <= MAX_SIZE` bytes at the minimum alignment.
#[inline(always)]
pub fn alloc_medium(size: usize) -> *mut u8 {
    crate::diag::debug_invariant!((FAST_LIMIT..=size_class::MAX_SIZE).contains(&size));
    let index = (size + (1 << size_class::MEDIUM_SHIFT) - 1) >> size_class::MEDIUM_SHIFT;
    // SAFETY: `size <= MAX_SIZE`, so `index` is within the table.
    pop(unsafe { *MEDIUM_OFFSET.get_unchecked(index) } as usize)
}

/// Frees a block that [`alloc_medium`] returned for `size`.
///
/// # Safety
/// - `ptr` came from `alloc_medium(size)` (or any block of the same class) and is dead.
#[inline(always)]
pub unsafe fn dealloc_medium(ptr: *mut u8, size: usize) {
    crate::diag::debug_invariant!((FAST_LIMIT..=size_class::MAX_SIZE).contains(&size));
    let index = (size + (1 << size_class::MEDIUM_SHIFT) - 1) >> size_class::MEDIUM_SHIFT;
    // SAFETY: `index` is within the table; `ptr` is a dead block of the class per the caller.
    unsafe { push(ptr, *MEDIUM_OFFSET.get_unchecked(index) as usize) }
}

/// Allocates `size < FAST_LIMIT` bytes with C `malloc`'s alignment.
#[inline(always)]
pub fn alloc_small_c(size: usize) -> *mut u8 {
    crate::diag::debug_invariant!(size < FAST_LIMIT);
    // SAFETY: `size < FAST_LIMIT`, the table's length.
    pop(unsafe { *FAST_OFFSET_C.get_unchecked(size) } as usize)
}

/// [`alloc_small_c`] whose slow path is `slow(class index)` (C++ `operator new`: its own
/// answer to running out of memory, and no register kept across the pop for it).
#[cfg(feature = "override")]
#[inline(always)]
pub fn alloc_small_c_or(size: usize, slow: impl FnOnce(usize) -> *mut u8) -> *mut u8 {
    crate::diag::debug_invariant!(size < FAST_LIMIT);
    // SAFETY: `size < FAST_LIMIT`, the table's length.
    pop_or(unsafe { *FAST_OFFSET_C.get_unchecked(size) } as usize, slow)
}

/// The pop's slow path: a refill from the central lists. Out of memory is null with `errno`
/// set to `ENOMEM` (as C `malloc` must; harmless for Rust).
#[cold]
#[inline(never)]
extern "C" fn alloc_slow(class_index: usize) -> *mut u8 {
    let p = refill_slow(class_index);
    if p.is_null() {
        // SAFETY: `__errno_location` returns the calling thread's errno slot.
        unsafe { *libc::__errno_location() = libc::ENOMEM };
    }
    p
}

fn refill_slow(class_index: usize) -> *mut u8 {
    let Some(class) = SizeClass::new(class_index) else {
        return ptr::null_mut();
    };
    let cache = cache();
    // SAFETY: the cache is this thread's. No reference into it is held across `activate`,
    // which may re-enter the allocator.
    unsafe {
        if !ThreadCache::ensure_active(cache) {
            let (object, n) = central_free_list::refill(class, 0, 1);
            if n > 0 {
                // SAFETY: a list of one object, which leaves it for the program.
                free_list::take_object(object);
            }
            return object.cast();
        }
        (*cache).refill(class)
    }
}

#[cold]
#[inline(never)]
extern "C" fn dealloc_slow(offset: usize) {
    let Some(class) = SizeClass::new(offset / size_of::<HotList>()) else {
        return;
    };
    let cache = cache();
    // SAFETY: as in `alloc_slow`.
    unsafe {
        if !ThreadCache::ensure_active(cache) {
            (*cache).drain_inactive(class);
            return;
        }
        (*cache).list_too_long(class);
    }
}

/// Aborts with `tcalloc: <caller>(): double free 0x…` if the calling thread's cache holds
/// `object` on its list of `class`, or its span holds it on its own free list (it was freed
/// already). The cold half of every double-free check: C `free`, `realloc`,
/// `malloc_usable_size` and the `hardened` Rust `dealloc`.
#[cold]
#[inline(never)]
pub fn abort_if_cached(object: *mut u8, class: SizeClass, caller: &'static str) {
    if holds(object, class) || central_free_list::span_holds(object, class) {
        crate::diag::fatal(format_args!("{caller}(): double free {object:p}"));
    }
}

/// Whether the calling thread's cache holds `object` on its list of `class`: the object was
/// freed already (a double free), unless it is on another list. Walks the list (cold).
#[cold]
fn holds(object: *mut u8, class: SizeClass) -> bool {
    let cache = cache();
    // SAFETY: the cache is this thread's; no other reference into it is live here.
    unsafe { (*cache).list_holds(class, object) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::class_for;

    #[test]
    fn fast_tables_agree_with_the_class_lookup() {
        for size in 0..FAST_LIMIT {
            let class = class_for(size, MIN_ALIGN).unwrap();
            assert_eq!(FAST_OFFSET[size], list_offset(class.index() as u8), "size {size}");
            let c = class_for(size, if size <= MIN_ALIGN { MIN_ALIGN } else { C_MALLOC_ALIGN });
            let c = c.unwrap();
            assert_eq!(FAST_OFFSET_C[size], list_offset(c.index() as u8), "malloc({size})");
            if size > MIN_ALIGN {
                assert_eq!(c.size() % C_MALLOC_ALIGN, 0, "malloc({size}) is 16-aligned");
            }
        }
    }

    #[test]
    fn medium_table_agrees_with_the_class_lookup() {
        for size in FAST_LIMIT..=size_class::MAX_SIZE {
            let index = (size + 127) >> 7;
            for align in [1, 8, 16, 64, 128] {
                let class = class_for(size, align).unwrap();
                assert_eq!(MEDIUM_OFFSET[index], list_offset(class.index() as u8), "size {size}");
            }
        }
    }
}
