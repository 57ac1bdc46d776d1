//! Thread caches: one free list per size class per thread, so that most allocations and frees
//! touch no lock and no shared cache line.
//!
//! The fast path ([`alloc`], [`dealloc`]) pops or pushes the thread's list for a class and
//! counts: nothing more. Each list keeps `room`, the number of objects it may still take
//! before it is too long (`room = max_len - len`); `dealloc` pushes and decrements `room`, and
//! only when `room` goes negative does it leave the fast path. `alloc` leaves it only when the
//! list is empty. Both slow paths move whole batches to or from the central free list.
//!
//! Limits, as in tcmalloc:
//! - **slow start**: a list's `max_len` starts at 0 and doubles per miss (from 1) up to the
//!   class's batch size, then grows by a batch at a time up to [`MAX_LIST_LENGTH`] objects and
//!   [`MAX_LIST_BYTES`] bytes (but at least a batch);
//! - **overages**: a list that keeps overflowing at a `max_len` above the batch size shrinks by
//!   a batch after [`MAX_LIST_OVERAGES`] overflows;
//! - **budget**: `Σ max_len × size` over a thread's lists stays within its budget, a share of
//!   the total cap for all threads ([`TOTAL_THREAD_CACHE_BYTES`]); a list that wants to grow
//!   past it first shrinks the other lists, a quarter at a time, in turn;
//! - **idle lists shrink**: every [`SCAVENGE_INTERVAL`] slow-path events, each list that had no
//!   slow-path event since the last scavenge and has the same length as then (so it was most
//!   likely not used on the fast path either) gives back half its objects and limit;
//! - **total cap**: the caches publish their sizes (at slow-path events) to a process-wide
//!   total; when it exceeds the cap, a trim generation starts and each thread halves its lists
//!   at its next slow-path check. A thread that never calls the allocator again keeps its cache
//!   (at most its budget) until it exits: the fast path takes no lock, so no other thread may
//!   touch its lists.
//!
//! Life cycle. A thread's cache is a `const`-initialised thread-local with no destructor, so
//! the fast path reaches it with a plain TLS address. Its state starts `Uninit` with every
//! list empty and every `room` zero, which sends the first `alloc` and `dealloc` of each class
//! to the slow path; there the cache activates: it registers a destructor guard (a second
//! thread-local with `Drop`) and joins the registry. Registering the guard may call back into
//! the allocator (glibc's `__cxa_thread_atexit_impl` allocates); during that the state is
//! `Initializing`, and re-entrant calls are served straight from the central lists. When the
//! thread exits, the guard returns every cached object to the central lists and marks the
//! cache `Dead`; any later use (other thread-local destructors) goes to the central lists too.
//!
//! Entry points: [`alloc`], [`dealloc`] (fast), [`cached_bytes`], [`for_each_registered`].
//! Layers below: `release` (its tick runs from the slow paths), `central_free_list`.

use crate::central_free_list;
use crate::config::{
    C_MALLOC_ALIGN, MAX_LIST_BYTES, MAX_LIST_LENGTH, MAX_LIST_OVERAGES, MIN_ALIGN,
    MIN_THREAD_CACHE_BYTES, THREAD_CACHE_BYTES, TOTAL_THREAD_CACHE_BYTES,
};
use crate::diag::{invariant, invariant_eq};
use crate::free_list::{self, FreeObject};
use crate::size_class::{self, SizeClass, NUM_CLASSES};
use crate::sync::Lock;
#[cfg(not(all(feature = "override", target_arch = "x86_64", target_os = "linux")))]
use core::cell::UnsafeCell;
use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Slow-path events between two scavenges of a thread's cache.
pub const SCAVENGE_INTERVAL: u32 = 1024;

/// Slow-path events between two calls of the release policy's tick.
const TICK_EVERY: u32 = 64;

/// The part of a list the fast path touches: 16 bytes, so a class index scales to it with
/// one shift.
#[repr(C, align(16))]
struct HotList {
    /// Free objects, most recently freed first.
    head: *mut FreeObject,
    /// Objects the list may still take: `max_len - len`. Negative only transiently, between
    /// the push in `dealloc` and its slow path.
    room: i32,
}

/// The rest of a list's state, touched only on slow paths.
#[derive(Clone, Copy)]
struct ListLimits {
    max_len: u32,
    overages: u32,
    /// Slow-path events since the last scavenge.
    events: u32,
    /// The length last published to `published_bytes`.
    published_len: u32,
    /// The length at the last scavenge.
    scavenged_len: u32,
}

impl ListLimits {
    const EMPTY: ListLimits =
        ListLimits { max_len: 0, overages: 0, events: 0, published_len: 0, scavenged_len: 0 };
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum State {
    Uninit = 0,
    Initializing,
    Active,
    Dead,
}

/// One thread's cache.
///
/// Invariants (checked by [`ThreadCache::check_invariants`], for an `Active` cache):
/// - `len(c) = count(hot[c].head)` and `hot[c].room == limits[c].max_len - len(c) >= 0`;
/// - `limits[c].max_len <= list_limit(c)` (at most `MAX_LIST_LENGTH` objects and
///   `MAX_LIST_BYTES` bytes, or a batch);
/// - `capacity == Σ_c limits[c].max_len × size(c)` and `capacity <= budget` except that a
///   list never shrinks below its batch size to meet the budget;
/// - the cache is on the registry iff `state == Active`.
///
/// When not `Active`, every list is empty with `room == 0` (between slow paths).
#[repr(C)]
pub struct ThreadCache {
    /// The key the lists' links are encoded with (`free_list`): 0 until the cache activates,
    /// then the process's key, read here on the fast path instead of from a static (which a
    /// program linking tcalloc reaches through its GOT: two loads instead of one). First, so
    /// that it shares a cache line with the lists of the smallest classes.
    key: usize,
    /// [`free_list::LINK_LIMIT`] rotated right by 3 (2^45): the fast path's check of a link
    /// (never changes).
    link_limit: usize,
    hot: [HotList; NUM_CLASSES],
    limits: [ListLimits; NUM_CLASSES],
    state: State,
    capacity: usize,
    budget: usize,
    events: u32,
    /// The transfer-cache shard this thread flushes to and refills from.
    shard: usize,
    /// The last trim generation this cache acted on.
    trim_seen: u64,
    /// Bit `c` is set iff class `c`'s list has a non-zero limit.
    active: u128,
    /// Where `make_room` starts shrinking next.
    room_cursor: u32,
    /// Registry links.
    next: *mut ThreadCache,
    prev: *mut ThreadCache,
    /// Bytes cached, as of each list's last slow-path event; read by other threads.
    published_bytes: AtomicUsize,
}

#[cfg(not(all(feature = "override", target_arch = "x86_64", target_os = "linux")))]
thread_local! {
    static CACHE: UnsafeCell<ThreadCache> = const { UnsafeCell::new(ThreadCache::new()) };
}

thread_local! {
    static EXIT_GUARD: ExitGuard = const { ExitGuard };
}

/// Dropped when its thread exits: flushes the thread's cache.
struct ExitGuard;

impl Drop for ExitGuard {
    fn drop(&mut self) {
        let cache = cache();
        // SAFETY: the cache belongs to this thread, and no fast-path borrow is live while a
        // thread-local destructor runs.
        unsafe { ThreadCache::retire(cache) };
    }
}

/// The calling thread's cache.
#[inline(always)]
fn cache() -> *mut ThreadCache {
    let cache = cache_fast();
    if cache.is_null() {
        return cache_slow();
    }
    cache
}

/// The calling thread's cache where it is reachable without a call, else null (only in the
/// prefixed library without `override`, whose thread-locals are reached through
/// `__tls_get_addr`). The fast paths take their slow path on null, as a tail call: a call in
/// the middle of a fast path would make it save and restore registers on every call.
#[inline(always)]
fn cache_fast() -> *mut ThreadCache {
    #[cfg(all(feature = "override", target_arch = "x86_64", target_os = "linux"))]
    {
        static_tls::cache()
    }
    #[cfg(not(all(feature = "override", target_arch = "x86_64", target_os = "linux")))]
    {
        CACHE.with(|c| c.get())
    }
}

#[cold]
#[inline(never)]
fn cache_slow() -> *mut ThreadCache {
    #[cfg(all(feature = "override", target_arch = "x86_64", target_os = "linux"))]
    {
        static_tls::cache()
    }
    #[cfg(not(all(feature = "override", target_arch = "x86_64", target_os = "linux")))]
    {
        CACHE.with(|c| c.get())
    }
}

// The slow paths are `extern "C"`: such a function cannot unwind, so a fast path can end in a
// tail call to it (a call that might unwind needs a landing pad in the exported C functions,
// which then save registers and keep a frame on every call).

/// The cache as an initial-exec thread-local in the preloadable library.
///
/// A shared library's thread-locals are reached through `__tls_get_addr` (a call into the
/// dynamic linker) because the library might be loaded with `dlopen`. `libtcalloc.so` must be
/// loaded at start-up (preloaded or linked; see the README), so its cache can live in the
/// static TLS area instead, at an offset from the thread pointer that the dynamic linker
/// writes into the GOT once: the initial-exec TLS model, which Rust offers no attribute for.
/// The cache is therefore a symbol of its own in `.tbss`, defined and reached in assembly:
/// two instructions (`%fs:0` plus the GOT's offset) instead of a call. `.tbss` starts
/// zeroed, which is what [`ThreadCache::new`] is (a test checks it).
#[cfg(all(feature = "override", target_arch = "x86_64", target_os = "linux"))]
mod static_tls {
    use super::ThreadCache;

    const _: () = assert!(ThreadCache::new().is_zero(), "a new cache must be all zero bytes");

    core::arch::global_asm!(
        ".pushsection .tbss,\"awT\",@nobits",
        ".p2align 6",
        // Global for the other codegen units of this crate, hidden from other modules.
        ".globl tcalloc_thread_cache",
        ".hidden tcalloc_thread_cache",
        ".type tcalloc_thread_cache,@object",
        ".size tcalloc_thread_cache,{size}",
        "tcalloc_thread_cache:",
        ".zero {size}",
        ".popsection",
        size = const core::mem::size_of::<ThreadCache>(),
    );

    /// The calling thread's cache: the thread pointer (`%fs:0` holds the thread control
    /// block's own address on x86-64 Linux) plus the cache's offset from it.
    #[inline(always)]
    pub fn cache() -> *mut ThreadCache {
        let cache: usize;
        // SAFETY: reads `%fs:0`, always valid on x86-64 Linux (glibc and musl set it), and the
        // GOT entry the dynamic linker filled in at load time.
        unsafe {
            core::arch::asm!(
                "mov {cache}, qword ptr fs:[0]",
                "add {cache}, qword ptr [rip + tcalloc_thread_cache@GOTTPOFF]",
                cache = out(reg) cache,
                options(nostack, pure, readonly),
            );
        }
        let cache = cache as *mut ThreadCache;
        // SAFETY: a thread's static TLS block is never at address 0. Telling the compiler lets
        // it drop the callers' null tests.
        unsafe { core::hint::assert_unchecked(!cache.is_null()) };
        cache
    }
}

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
    let cache = cache_fast();
    if cache.is_null() {
        return alloc_slow(offset / size_of::<HotList>());
    }
    // SAFETY: the cache is this thread's; `offset` is the offset of one of its lists (a class
    // index times the list size); the list's objects are free objects of the class, whose
    // first word links the list.
    unsafe {
        let list = (*cache).hot.as_mut_ptr().byte_add(offset);
        let head = (*list).head;
        if head.is_null() {
            return alloc_slow(offset / size_of::<HotList>());
        }
        // Decode and check the link (see `free_list`): rotated right by 3, a valid link (below
        // 2^48, 8-aligned) is below 2^45, so one compare with a field of the cache checks both
        // (the mask would need its constant loaded first).
        let next = if free_list::CHECKS {
            let next = (*head).link_word() ^ (*cache).key;
            if next.rotate_right(3) >= (*cache).link_limit {
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
        prefetch(next);
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

/// Hints the CPU to fetch the cache line at `p` (which may be null: prefetches never fault).
#[inline(always)]
fn prefetch(p: *const FreeObject) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p.cast(), core::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
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
/// ([`free_list::looks_free`], read here with the cache's copy of the key): then the cold path
/// searches the cache's list and aborts on a double free. Every call it makes is a tail call,
/// so the fast path saves no registers.
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
    // SAFETY: as in `push`; every object is at least 8 bytes, 8-aligned.
    unsafe {
        if free_list::CHECKS {
            let word = ptr.cast::<usize>().read() ^ (*cache).key;
            if word.rotate_right(3) < (*cache).link_limit {
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
        if free_list::looks_free(ptr.cast::<usize>().read()) {
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
/// `object` on its list of `class` (it was freed already). The cold half of every double-free
/// check: C `free`, `realloc`, `malloc_usable_size` and the `hardened` Rust `dealloc`.
#[cold]
#[inline(never)]
pub fn abort_if_cached(object: *mut u8, class: SizeClass, caller: &'static str) {
    if holds(object, class) {
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

/// The most objects the list of `class` may hold: [`MAX_LIST_LENGTH`], and at most
/// [`MAX_LIST_BYTES`] of them, but never fewer than a batch.
fn list_limit(class: SizeClass) -> u32 {
    let by_bytes = (MAX_LIST_BYTES / class.size()).max(class.batch());
    (by_bytes as u32).min(MAX_LIST_LENGTH)
}

/// The registry of active caches, for statistics and the thread count.
struct Registry {
    head: *mut ThreadCache,
    threads: usize,
}

// SAFETY: registered caches stay valid until their thread unregisters them under the lock.
unsafe impl Send for Registry {}

static REGISTRY: Lock<Registry> = Lock::new(Registry { head: ptr::null_mut(), threads: 0 });
static LIVE_THREADS: AtomicUsize = AtomicUsize::new(0);
/// The cap on all caches together (changeable at start-up through the environment).
static TOTAL_BUDGET: AtomicUsize = AtomicUsize::new(TOTAL_THREAD_CACHE_BYTES);
/// Bytes in all caches, as published.
static TOTAL_CACHED: AtomicUsize = AtomicUsize::new(0);
/// Bumped when the caches together exceed their cap; each cache halves itself when it sees a
/// new generation on a slow path.
static TRIM_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Sets the cap on the bytes of all thread caches together.
pub fn set_total_budget(bytes: usize) {
    TOTAL_BUDGET.store(bytes, Relaxed);
}

/// The budget of one thread's cache given the number of live threads.
fn thread_budget() -> usize {
    let threads = LIVE_THREADS.load(Relaxed).max(1);
    let total = TOTAL_BUDGET.load(Relaxed);
    let share = total / threads;
    // Between the per-thread floor and ceiling, but never above the total.
    share.clamp(MIN_THREAD_CACHE_BYTES, THREAD_CACHE_BYTES).min(total)
}

impl ThreadCache {
    #[allow(dead_code)] // the preloadable library's cache starts as zeroed `.tbss` instead
    const fn new() -> ThreadCache {
        ThreadCache {
            hot: [const { HotList { head: ptr::null_mut(), room: 0 } }; NUM_CLASSES],
            limits: [ListLimits::EMPTY; NUM_CLASSES],
            state: State::Uninit,
            capacity: 0,
            budget: 0,
            events: 0,
            shard: 0,
            trim_seen: 0,
            active: 0,
            room_cursor: 0,
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            published_bytes: AtomicUsize::new(0),
            key: 0,
            link_limit: 0,
        }
    }

    /// Whether every field of this cache is zero: a new cache is, so that the preloadable
    /// library's cache can start as `.tbss` (zeroed) memory.
    #[allow(dead_code)]
    const fn is_zero(&self) -> bool {
        let mut c = 0;
        while c < NUM_CLASSES {
            let (hot, limits) = (&self.hot[c], &self.limits[c]);
            if !hot.head.is_null() || hot.room != 0 {
                return false;
            }
            if limits.max_len != 0 || limits.overages != 0 || limits.events != 0 {
                return false;
            }
            if limits.published_len != 0 || limits.scavenged_len != 0 {
                return false;
            }
            c += 1;
        }
        self.key == 0
            && self.link_limit == 0
            && self.state as u8 == 0
            && self.capacity == 0
            && self.budget == 0
            && self.events == 0
            && self.shard == 0
            && self.trim_seen == 0
            && self.active == 0
            && self.room_cursor == 0
            && self.next.is_null()
            && self.prev.is_null()
            // SAFETY: a plain read of an atomic nobody else can see yet.
            && unsafe { *self.published_bytes.as_ptr() } == 0
    }

    /// Activates the cache on first use; false if it cannot be used (re-entered while
    /// activating, or its thread is exiting).
    ///
    /// # Safety
    /// - `cache` is the calling thread's cache and no reference into it is live.
    unsafe fn ensure_active(cache: *mut ThreadCache) -> bool {
        // SAFETY: per the caller.
        unsafe {
            match (*cache).state {
                State::Active => true,
                State::Uninit => Self::activate(cache),
                State::Initializing | State::Dead => false,
            }
        }
    }

    /// # Safety
    /// - as for [`ensure_active`](Self::ensure_active); the state is `Uninit`.
    #[cold]
    unsafe fn activate(cache: *mut ThreadCache) -> bool {
        // SAFETY: per the caller; re-entrant calls during the two calls below see
        // `Initializing` and keep out of the cache's lists.
        unsafe {
            (*cache).state = State::Initializing;
            // From now on the lists are linked with the process's key: first send on what was
            // pushed with the old one (an `Uninit` cache's key is 0).
            free_list::init_secret();
            for class in SizeClass::all() {
                if !(*cache).hot[class.index()].head.is_null() {
                    (*cache).drain_inactive(class);
                }
            }
            (*cache).key = free_list::secret();
            (*cache).link_limit = free_list::LINK_LIMIT >> 3;
            crate::lifecycle::ensure_initialized();
            if EXIT_GUARD.try_with(|_| ()).is_err() {
                (*cache).state = State::Dead;
                return false;
            }
            let mut registry = REGISTRY.lock();
            (*cache).prev = ptr::null_mut();
            (*cache).next = registry.head;
            if !registry.head.is_null() {
                (*registry.head).prev = cache;
            }
            registry.head = cache;
            registry.threads += 1;
            LIVE_THREADS.store(registry.threads, Relaxed);
            drop(registry);
            (*cache).budget = thread_budget();
            (*cache).shard = crate::transfer_cache::assign_shard();
            (*cache).state = State::Active;
        }
        true
    }

    /// Returns everything to the central lists, leaves the registry and marks the cache dead.
    ///
    /// # Safety
    /// - `cache` is the calling thread's cache and no reference into it is live.
    unsafe fn retire(cache: *mut ThreadCache) {
        // SAFETY: per the caller.
        unsafe {
            if (*cache).state != State::Active {
                (*cache).state = State::Dead;
                return;
            }
            (*cache).state = State::Dead;
            for class in SizeClass::all() {
                let c = &mut *cache;
                let len = c.len(class);
                c.release(class, len);
                c.hot[class.index()].room = 0;
                c.limits[class.index()] = ListLimits::EMPTY;
            }
            (*cache).capacity = 0;
            TOTAL_CACHED.fetch_sub((*cache).published_bytes.swap(0, Relaxed), Relaxed);
            let mut registry = REGISTRY.lock();
            let (prev, next) = ((*cache).prev, (*cache).next);
            if prev.is_null() {
                registry.head = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            registry.threads -= 1;
            LIVE_THREADS.store(registry.threads, Relaxed);
        }
    }

    /// Whether the list of `class` holds `object` (a walk of the list: for double-free checks).
    fn list_holds(&self, class: SizeClass, object: *mut u8) -> bool {
        let mut p = self.hot[class.index()].head;
        while !p.is_null() {
            if p.cast() == object {
                return true;
            }
            // SAFETY: the list is this thread's and well formed, encoded with `key`.
            p = unsafe { free_list::next_keyed(p, self.key) };
        }
        false
    }

    /// Number of objects on the list of `class`.
    #[inline]
    fn len(&self, class: SizeClass) -> usize {
        let i = class.index();
        (self.limits[i].max_len as i64 - self.hot[i].room as i64) as usize
    }

    /// An inactive cache's list got an object (or more, from re-entrant frees): send them all
    /// to the central list. They were linked with the cache's `key`, which may not be the
    /// process's link key yet, so they are linked afresh.
    fn drain_inactive(&mut self, class: SizeClass) {
        let key = self.key;
        let list = &mut self.hot[class.index()];
        let mut old = core::mem::replace(&mut list.head, ptr::null_mut());
        list.room = 0;
        let mut head = ptr::null_mut();
        let mut n = 0;
        // SAFETY: the list holds dead objects of `class` pushed by `dealloc` with `key`.
        unsafe {
            while !old.is_null() {
                let object = old;
                old = free_list::next_keyed(object, key);
                free_list::push(&mut head, object);
                n += 1;
            }
            if n > 0 {
                central_free_list::flush(class, 0, head, n, usize::MAX);
            }
        }
    }

    /// The list of `class` is empty: fetch objects from the central list and return one.
    fn refill(&mut self, class: SizeClass) -> *mut u8 {
        let i = class.index();
        // Defensive: a re-entrant free during activation may have left an object here.
        // SAFETY: the list is well formed.
        let object = unsafe { free_list::pop(&mut self.hot[i].head) };
        if !object.is_null() {
            self.hot[i].room += 1;
            return object.cast();
        }
        self.note_event(class);
        let batch = class.batch() as u32;
        let want = self.limits[i].max_len.clamp(1, batch) as usize;
        let (head, n) = central_free_list::refill(class, self.shard, want);
        if n == 0 {
            return ptr::null_mut();
        }
        // SAFETY: `head` is a fresh list of `n` objects; the first leaves it for the program.
        self.hot[i].head = unsafe { free_list::next(head) };
        // SAFETY: as above.
        unsafe { free_list::take_object(head) };
        let len = n as u32 - 1;
        let max_len = self.limits[i].max_len;
        // Slow start: double up to the batch size (a new thread reaches full batches after a
        // handful of misses), then a batch at a time.
        let grown = if max_len < batch {
            (max_len * 2).clamp(1, batch)
        } else {
            (max_len + batch).min(MAX_LIST_LENGTH)
        };
        self.try_set_max_len(class, grown);
        self.hot[i].room = (self.limits[i].max_len - len) as i32;
        self.publish(class);
        self.maybe_scavenge();
        head.cast()
    }

    /// The list of `class` overflowed its `max_len`: give a batch back and adjust the limit.
    fn list_too_long(&mut self, class: SizeClass) {
        let i = class.index();
        // The object just freed is the head. It stays in the cache (the batch goes from the
        // objects after it), so that freeing it again right away is still caught: the
        // double-free check searches this list.
        // The list is empty only when activation just sent its objects on.
        // SAFETY: the list is this thread's and well formed.
        let kept = unsafe { free_list::pop(&mut self.hot[i].head) };
        if !kept.is_null() {
            self.hot[i].room += 1;
        }
        self.note_event(class);
        let batch = class.batch();
        let len = self.len(class);
        self.release(class, len.min(batch));
        let max_len = self.limits[i].max_len;
        if max_len < batch as u32 {
            self.try_set_max_len(class, (max_len * 2).clamp(1, batch as u32));
        } else if max_len > batch as u32 {
            self.limits[i].overages += 1;
            if self.limits[i].overages > MAX_LIST_OVERAGES {
                self.limits[i].overages = 0;
                self.set_max_len_and_trim(class, max_len - batch as u32);
            }
        }
        if self.hot[i].room == 0 && self.len(class) > 0 {
            self.release(class, 1);
        }
        // SAFETY: `kept` is a dead object of `class`, on no list.
        unsafe {
            if kept.is_null() {
                // Nothing was kept.
            } else if self.hot[i].room > 0 {
                free_list::push(&mut self.hot[i].head, kept);
                self.hot[i].room -= 1;
            } else {
                // No room at all (the budget refused the list any): it goes on alone.
                free_list::set_next(kept, ptr::null_mut());
                central_free_list::flush(class, self.shard, kept, 1, 0);
            }
        }
        self.publish(class);
        self.maybe_scavenge();
    }

    fn note_event(&mut self, class: SizeClass) {
        self.limits[class.index()].events = self.limits[class.index()].events.saturating_add(1);
        self.events += 1;
        if self.events % TICK_EVERY == 0 {
            crate::release::tick();
            // Over the cap on all caches: every thread that passes here next halves its lists.
            if TOTAL_CACHED.load(Relaxed) > TOTAL_BUDGET.load(Relaxed) {
                TRIM_GENERATION.fetch_add(1, Relaxed);
            }
            let generation = TRIM_GENERATION.load(Relaxed);
            if generation != self.trim_seen {
                self.trim_seen = generation;
                self.trim_all();
            }
        }
    }

    /// Halves every list (limit and contents) and refreshes the budget.
    #[cold]
    fn trim_all(&mut self) {
        self.budget = thread_budget();
        for class in self.active_classes() {
            let max_len = self.limits[class.index()].max_len;
            if max_len > 0 {
                self.set_max_len_and_trim(class, max_len / 2);
                self.publish(class);
            }
        }
    }

    /// Moves the first `n` objects of the list of `class` to the central list, in batches,
    /// and widens `room` accordingly.
    fn release(&mut self, class: SizeClass, mut n: usize) {
        let i = class.index();
        while n > 0 {
            let chunk = n.min(class.batch());
            // SAFETY: the list holds at least `n >= chunk` objects (callers pass at most
            // `len`); they are dead objects of `class`.
            unsafe {
                let (objects, spread) =
                    free_list::split_front_with_spread(&mut self.hot[i].head, chunk);
                central_free_list::flush(class, self.shard, objects, chunk, spread);
            }
            self.hot[i].room += chunk as i32;
            n -= chunk;
        }
    }

    /// Raises or lowers `max_len` of `class` to `new`, keeping `capacity` within the budget
    /// (by shrinking other lists first if needed). Returns whether it was set.
    fn try_set_max_len(&mut self, class: SizeClass, new: u32) -> bool {
        let i = class.index();
        let new = new.min(list_limit(class));
        let old = self.limits[i].max_len;
        if new > old {
            let extra = (new - old) as usize * class.size();
            if self.capacity + extra > self.budget {
                self.make_room(class, self.capacity + extra - self.budget);
                if self.capacity + extra > self.budget {
                    return false;
                }
            }
        }
        self.set_max_len_and_trim(class, new);
        true
    }

    /// Sets `max_len` of `class`, releasing objects beyond it, and fixes `room` and
    /// `capacity`.
    fn set_max_len_and_trim(&mut self, class: SizeClass, new: u32) {
        let i = class.index();
        let len = self.len(class);
        if len > new as usize {
            self.release(class, len - new as usize);
        }
        let old = self.limits[i].max_len;
        self.capacity = self.capacity - old as usize * class.size() + new as usize * class.size();
        self.hot[i].room += new as i32 - old as i32;
        self.limits[i].max_len = new;
        if new > 0 {
            self.active |= 1 << i;
        } else {
            self.active &= !(1 << i);
        }
    }

    /// The classes whose lists have a non-zero limit.
    fn active_classes(&self) -> impl Iterator<Item = SizeClass> {
        let mut mask = self.active;
        core::iter::from_fn(move || {
            if mask == 0 {
                return None;
            }
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            SizeClass::new(i)
        })
    }

    /// Frees at least `needed` bytes of the budget for `keep` by shrinking the other lists,
    /// a quarter of each (at least a batch) in turn, starting where the last call stopped so
    /// that the cost is spread over the lists.
    #[cold]
    fn make_room(&mut self, keep: SizeClass, needed: usize) {
        let mut freed = 0;
        let mask = self.active & !(1 << keep.index());
        // Rotate the starting point: classes from the cursor up first, then the rest.
        let above = mask & (u128::MAX << self.room_cursor.min(127));
        let order = [above, mask & !above];
        for mut part in order {
            while part != 0 && freed < needed {
                let i = part.trailing_zeros() as usize;
                part &= part - 1;
                let Some(class) = SizeClass::new(i) else { continue };
                let old = self.limits[i].max_len;
                let cut = (old / 4).max(class.batch() as u32).min(old);
                self.set_max_len_and_trim(class, old - cut);
                self.publish(class);
                freed += cut as usize * class.size();
                self.room_cursor = i as u32 + 1;
            }
        }
    }

    /// Every [`SCAVENGE_INTERVAL`] events: halve the lists that saw no slow-path event since
    /// the last scavenge, and refresh the budget from the number of live threads.
    fn maybe_scavenge(&mut self) {
        if self.events < SCAVENGE_INTERVAL {
            return;
        }
        self.scavenge();
    }

    #[cold]
    fn scavenge(&mut self) {
        #[cfg(debug_assertions)]
        self.check_invariants();
        self.events = 0;
        self.budget = thread_budget();
        for class in self.active_classes() {
            let i = class.index();
            let len = self.len(class) as u32;
            // Idle: no refill or overflow, and (as far as one can tell without counting on
            // the fast path) no pops or pushes either, since the last scavenge.
            if self.limits[i].events == 0 && len == self.limits[i].scavenged_len {
                self.set_max_len_and_trim(class, self.limits[i].max_len.min(len) / 2);
                self.publish(class);
            }
            self.limits[i].events = 0;
            self.limits[i].scavenged_len = self.len(class) as u32;
        }
        if self.capacity > self.budget {
            for class in self.active_classes() {
                if self.capacity <= self.budget {
                    break;
                }
                self.set_max_len_and_trim(class, self.limits[class.index()].max_len / 2);
                self.publish(class);
            }
        }
    }

    /// Publishes the list length of `class` to `published_bytes` (for other threads' stats)
    /// and to the process-wide total.
    fn publish(&mut self, class: SizeClass) {
        let i = class.index();
        let len = self.len(class) as u32;
        let old = self.limits[i].published_len;
        if len != old {
            let (new_bytes, old_bytes) = (len as usize * class.size(), old as usize * class.size());
            let bytes = self.published_bytes.load(Relaxed);
            self.published_bytes.store(bytes + new_bytes - old_bytes, Relaxed);
            if new_bytes > old_bytes {
                TOTAL_CACHED.fetch_add(new_bytes - old_bytes, Relaxed);
            } else {
                TOTAL_CACHED.fetch_sub(old_bytes - new_bytes, Relaxed);
            }
            self.limits[i].published_len = len;
        }
    }

    /// Exact bytes cached by this (the calling thread's) cache.
    fn exact_bytes(&self) -> usize {
        if self.state != State::Active {
            return 0;
        }
        SizeClass::all().map(|c| self.len(c) * c.size()).sum()
    }

    /// Checks the invariants on the struct; aborts with the offending values.
    pub fn check_invariants(&self) {
        if self.state != State::Active {
            for class in SizeClass::all() {
                let list = &self.hot[class.index()];
                invariant!(list.head.is_null() && list.room == 0, "inactive cache holds objects");
            }
            return;
        }
        let mut capacity = 0;
        for class in SizeClass::all() {
            let i = class.index();
            // SAFETY: the list is well formed.
            let counted = unsafe { free_list::count(self.hot[i].head) };
            let limits = &self.limits[i];
            invariant!(self.hot[i].room >= 0, "class {i}: room {}", self.hot[i].room);
            invariant_eq!(
                counted,
                self.len(class),
                "class {i}: {counted} objects, max_len {} room {}",
                limits.max_len,
                self.hot[i].room
            );
            invariant!(
                limits.max_len <= list_limit(class),
                "class {i}: max_len {}",
                limits.max_len
            );
            invariant_eq!(self.active >> i & 1 == 1, limits.max_len > 0, "active bit of class {i}");
            capacity += limits.max_len as usize * class.size();
        }
        invariant_eq!(capacity, self.capacity, "capacity");
    }
}

/// Bytes held by all thread caches: exact for the calling thread, and as of each list's last
/// slow-path event for the others.
pub fn cached_bytes() -> usize {
    let me = cache();
    let registry = REGISTRY.lock();
    let mut total = 0;
    let mut c = registry.head;
    while !c.is_null() {
        // SAFETY: registered caches are valid while the registry lock is held; only the
        // atomic `published_bytes` of other threads' caches is read.
        unsafe {
            if c != me {
                total += (*c).published_bytes.load(Relaxed);
            }
            c = (*c).next;
        }
    }
    drop(registry);
    // SAFETY: our own cache, read on our own thread outside any fast path.
    total + unsafe { (*me).exact_bytes() }
}

/// Number of threads with an active cache.
pub fn live_threads() -> usize {
    LIVE_THREADS.load(Relaxed)
}

/// Checks the calling thread's cache.
pub fn check_current() {
    // SAFETY: our own cache, read on our own thread outside any fast path.
    unsafe { (*cache()).check_invariants() }
}

/// Returns every object in the calling thread's cache to the central lists (the cache stays
/// active, its limits restart from slow start).
pub fn flush_current() {
    let cache = cache();
    // SAFETY: our own cache, on our own thread, outside any fast path.
    unsafe {
        if (*cache).state != State::Active {
            return;
        }
        let c = &mut *cache;
        for class in SizeClass::all() {
            c.set_max_len_and_trim(class, 0);
            c.publish(class);
        }
    }
}

/// The registry's lock, for the fork handlers.
pub fn registry_lock() -> &'static crate::sync::RawLock {
    REGISTRY.raw()
}

/// After `fork`, in the child: only the forking thread survives, so forget the other caches
/// (their objects are lost to the child, as with every thread-caching allocator).
///
/// # Safety
/// - Called only in a `fork` child while the registry lock is held by this thread.
pub unsafe fn forget_other_threads_after_fork() {
    let me = cache();
    // SAFETY: we hold the registry lock (taken before fork); only this thread runs.
    unsafe {
        let registry = &mut *REGISTRY.data_ptr();
        if (*me).state == State::Active {
            (*me).next = ptr::null_mut();
            (*me).prev = ptr::null_mut();
            registry.head = me;
            registry.threads = 1;
            TOTAL_CACHED.store((*me).published_bytes.load(Relaxed), Relaxed);
        } else {
            registry.head = ptr::null_mut();
            registry.threads = 0;
            TOTAL_CACHED.store(0, Relaxed);
        }
        LIVE_THREADS.store(registry.threads, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::class_for;

    fn class_of(size: usize) -> SizeClass {
        class_for(size, 8).unwrap()
    }

    /// Runs `f` on a fresh thread, so that the cache under test starts `Uninit`.
    fn on_fresh_thread(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(f).join().unwrap();
    }

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

    #[test]
    fn slow_start_then_batches() {
        on_fresh_thread(|| {
            let class = class_of(96);
            let batch = class.batch();
            let mut blocks = Vec::new();
            // Slow start fetches 1, 2, 3, ... objects per miss until the batch size.
            for _ in 0..batch * batch + 4 * batch {
                let p = alloc(class);
                assert!(!p.is_null());
                blocks.push(p);
            }
            check_current();
            // SAFETY: our own cache on our own thread.
            let (max_len, state) = unsafe {
                let c = &*cache();
                (c.limits[class.index()].max_len, c.state)
            };
            assert_eq!(state, State::Active);
            assert!(max_len as usize > batch, "grew past the batch: {max_len}");
            for p in blocks {
                // SAFETY: blocks of `class` from `alloc`, unused.
                unsafe { dealloc(p, class) };
            }
            check_current();
            // SAFETY: as above.
            let len = unsafe { (*cache()).len(class) };
            assert!(len <= MAX_LIST_LENGTH as usize);
            assert!(cached_bytes() >= len * class.size());
        });
    }

    #[test]
    fn lists_respect_the_budget() {
        on_fresh_thread(|| {
            let class = class_of(200 * 1024);
            let mut blocks = Vec::new();
            for _ in 0..64 {
                blocks.push(alloc(class));
            }
            for p in blocks {
                // SAFETY: blocks of `class` from `alloc`, unused.
                unsafe { dealloc(p, class) };
                check_current();
            }
            // SAFETY: our own cache.
            let c = unsafe { &*cache() };
            assert!(c.capacity <= c.budget, "capacity {} budget {}", c.capacity, c.budget);
            assert!(c.exact_bytes() <= c.budget);
        });
    }

    #[test]
    fn idle_lists_shrink_on_scavenge() {
        on_fresh_thread(|| {
            let idle = class_of(512);
            let busy = class_of(32);
            let blocks: Vec<_> = (0..200).map(|_| alloc(idle)).collect();
            for p in blocks {
                // SAFETY: blocks of `idle`, unused.
                unsafe { dealloc(p, idle) };
            }
            // SAFETY: our own cache.
            let before = unsafe { (*cache()).len(idle) };
            assert!(before > 0);
            // Churn another class past its list limit until two scavenges have run: each
            // round takes about 2500 refills and 1500 overflows.
            for _ in 0..4 {
                let q: Vec<_> = (0..80_000).map(|_| alloc(busy)).collect();
                for p in q {
                    // SAFETY: just allocated.
                    unsafe { dealloc(p, busy) };
                }
            }
            check_current();
            // SAFETY: our own cache.
            let after = unsafe { (*cache()).len(idle) };
            assert!(after < before, "idle list kept {after} of {before}");
        });
    }

    #[test]
    fn thread_exit_returns_everything() {
        let class = class_of(4000);
        let threads_before = live_threads();
        on_fresh_thread(move || {
            let blocks: Vec<_> = (0..50).map(|_| alloc(class)).collect();
            for p in blocks {
                // SAFETY: blocks of `class`, unused.
                unsafe { dealloc(p, class) };
            }
            assert!(live_threads() >= 1);
        });
        // Other tests run threads concurrently; ours is gone from the count.
        assert!(live_threads() <= threads_before + 8);
    }
}
