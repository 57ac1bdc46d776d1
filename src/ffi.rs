//! The C entry points: the malloc family with glibc semantics, errno included.
//!
//! Every function exists under a `tcalloc_` prefix in every build. With the `override`
//! feature, the same functions are also exported under their glibc names (and glibc's
//! `__libc_*` aliases), so that `LD_PRELOAD=libtcalloc.so` replaces the system allocator.
//!
//! | call | answer |
//! | --- | --- |
//! | `malloc(0)` | a unique pointer (an 8-byte block) |
//! | `free(NULL)` | nothing |
//! | out of memory, or a size above `PTRDIFF_MAX` | NULL, `errno = ENOMEM` |
//! | `calloc`/`reallocarray` whose product overflows | NULL, `errno = ENOMEM` |
//! | `realloc(NULL, n)` | `malloc(n)` |
//! | `realloc(p, 0)`, `p != NULL` | frees `p`, returns NULL (as glibc) |
//! | `posix_memalign` with an alignment that is not a power of two or is below `sizeof(void *)` | `EINVAL`, `*out` untouched |
//! | `aligned_alloc` with an alignment that is not a power of two | NULL, `errno = EINVAL` |
//! | `memalign` with an alignment that is not a power of two | rounded up to one (as glibc) |
//! | `valloc(n)` / `pvalloc(n)` | page-aligned; `pvalloc` rounds `n` up to whole pages (0 -> one page) |
//! | `malloc_usable_size(NULL)` | 0; otherwise at least the size asked for, all writable |
//! | `free`/`realloc`/`malloc_usable_size` of a pointer tcalloc never handed out | abort with `tcalloc: free(): invalid pointer 0x…` on stderr |
//!
//! Alignment: `malloc` results are 16-aligned above 8 bytes, 8-aligned at 8 bytes or less.
//!
//! Layer below: `router`.

use crate::config::OS_PAGE_SIZE;
use crate::front_end;
use crate::router;
use core::ffi::{c_int, c_void};
use core::ptr;

#[inline]
fn set_errno(value: c_int) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = value };
}

/// Null with `errno = ENOMEM`.
#[cold]
fn out_of_memory() -> *mut c_void {
    set_errno(libc::ENOMEM);
    ptr::null_mut()
}

#[inline]
fn checked(p: *mut u8) -> *mut c_void {
    if p.is_null() {
        out_of_memory()
    } else {
        p.cast()
    }
}

/// Sizes above `PTRDIFF_MAX` can never be allocated.
#[inline(always)]
fn too_big(size: usize) -> bool {
    size > isize::MAX as usize
}

#[inline(always)]
fn malloc_impl(size: usize) -> *mut c_void {
    // Small sizes first, with no other test: their path sets `errno` itself when out of
    // memory, so the pop is the whole of `malloc`.
    if size < front_end::FAST_LIMIT {
        return front_end::alloc_small_c(size).cast();
    }
    malloc_other(size)
}

#[inline(never)]
extern "C" fn malloc_other(size: usize) -> *mut c_void {
    if too_big(size) {
        return out_of_memory();
    }
    checked(router::alloc_c(size))
}

#[inline(always)]
unsafe fn free_impl(ptr: *mut c_void) {
    // SAFETY: C's contract: `ptr` is null, or came from this allocator and is dead; anything
    // else is caught by the page-map validation in `free_unsized` (null too, on its cold path).
    unsafe { router::free_unsized(ptr.cast(), "free") }
}

fn calloc_impl(count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        Some(total) if !too_big(total) => {
            checked(router::alloc_zeroed(total, router::c_align(total)))
        }
        _ => out_of_memory(),
    }
}

unsafe fn realloc_impl(ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        return malloc_impl(size);
    }
    if size == 0 {
        // SAFETY: C's contract for realloc's pointer.
        unsafe { free_impl(ptr) };
        return ptr::null_mut();
    }
    if too_big(size) {
        return out_of_memory();
    }
    // SAFETY: C's contract: `ptr` is a live block of ours (validated inside).
    checked(unsafe { router::realloc_unsized(ptr.cast(), size, router::c_align(size), "realloc") })
}

unsafe fn reallocarray_impl(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: forwarded.
        Some(total) => unsafe { realloc_impl(ptr, total) },
        None => out_of_memory(),
    }
}

/// Allocates `size` bytes aligned to `align` (a power of two, any size).
fn aligned(align: usize, size: usize) -> *mut c_void {
    if too_big(size) {
        return out_of_memory();
    }
    let align = align.max(router::c_align(size));
    checked(router::alloc(size, align))
}

unsafe fn posix_memalign_impl(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || align < core::mem::size_of::<*mut c_void>() {
        return libc::EINVAL;
    }
    if too_big(size) {
        return libc::ENOMEM;
    }
    let p = router::alloc(size, align.max(router::c_align(size)));
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: C's contract: `out` points to writable storage for a pointer.
    unsafe { *out = p.cast() };
    0
}

fn aligned_alloc_impl(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    aligned(align, size)
}

fn memalign_impl(align: usize, size: usize) -> *mut c_void {
    match align.max(1).checked_next_power_of_two() {
        Some(align) if !too_big(align) => aligned(align, size),
        _ => {
            set_errno(libc::EINVAL);
            ptr::null_mut()
        }
    }
}

fn valloc_impl(size: usize) -> *mut c_void {
    aligned(OS_PAGE_SIZE, size)
}

fn pvalloc_impl(size: usize) -> *mut c_void {
    match size.max(1).checked_next_multiple_of(OS_PAGE_SIZE) {
        Some(rounded) => aligned(OS_PAGE_SIZE, rounded),
        None => out_of_memory(),
    }
}

unsafe fn malloc_usable_size_impl(ptr: *mut c_void) -> usize {
    if ptr.is_null() {
        return 0;
    }
    // SAFETY: C's contract: `ptr` is a live block of ours (validated inside).
    unsafe { router::usable_size(ptr.cast(), "malloc_usable_size") }
}

/// Defines each C function under its prefixed name, and with `override` under its glibc names.
macro_rules! export {
    ($(
        $(#[$doc:meta])*
        fn $prefixed:ident / [$($plain:ident),*] $params:tt -> $ret:ty = $imp:ident;
    )*) => {$(
        export!(@one [$(#[$doc])*] $prefixed $params -> $ret = $imp);
        $(
            #[cfg(feature = "override")]
            export!(@one [#[doc = concat!("The glibc name of [`", stringify!($prefixed), "`].")]]
                $plain $params -> $ret = $imp);
        )*
    )*};
    (@one [$($attr:tt)*] $name:ident ($($arg:ident : $ty:ty),*) -> $ret:ty = $imp:ident) => {
        $($attr)*
        ///
        /// # Safety
        /// - As for the glibc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            #[allow(unused_unsafe)]
            // SAFETY: the caller upholds the glibc contract of this function.
            unsafe { $imp($($arg),*) }
        }
    };
}

export! {
    /// `malloc(3)`.
    fn tcalloc_malloc / [malloc, __libc_malloc] (size: usize) -> *mut c_void = malloc_impl;
    /// `free(3)`.
    fn tcalloc_free / [free, __libc_free, cfree] (ptr: *mut c_void) -> () = free_impl;
    /// `calloc(3)`.
    fn tcalloc_calloc / [calloc, __libc_calloc] (count: usize, size: usize) -> *mut c_void
        = calloc_impl;
    /// `realloc(3)`.
    fn tcalloc_realloc / [realloc, __libc_realloc] (ptr: *mut c_void, size: usize) -> *mut c_void
        = realloc_impl;
    /// `reallocarray(3)`.
    fn tcalloc_reallocarray / [reallocarray]
        (ptr: *mut c_void, count: usize, size: usize) -> *mut c_void = reallocarray_impl;
    /// `posix_memalign(3)`.
    fn tcalloc_posix_memalign / [posix_memalign]
        (out: *mut *mut c_void, align: usize, size: usize) -> c_int = posix_memalign_impl;
    /// `aligned_alloc(3)`.
    fn tcalloc_aligned_alloc / [aligned_alloc] (align: usize, size: usize) -> *mut c_void
        = aligned_alloc_impl;
    /// `memalign(3)`.
    fn tcalloc_memalign / [memalign, __libc_memalign] (align: usize, size: usize) -> *mut c_void
        = memalign_impl;
    /// `valloc(3)`.
    fn tcalloc_valloc / [valloc, __libc_valloc] (size: usize) -> *mut c_void = valloc_impl;
    /// `pvalloc(3)`.
    fn tcalloc_pvalloc / [pvalloc, __libc_pvalloc] (size: usize) -> *mut c_void = pvalloc_impl;
    /// `malloc_usable_size(3)`.
    fn tcalloc_malloc_usable_size / [malloc_usable_size] (ptr: *mut c_void) -> usize
        = malloc_usable_size_impl;
}

/// Prints the statistics report to standard error.
#[no_mangle]
pub extern "C" fn tcalloc_stats_print() {
    crate::stats::print_to_stderr();
}

/// Gives every free page back to the OS now (see `tcalloc::release_free_memory`).
#[no_mangle]
pub extern "C" fn tcalloc_release_free_memory() {
    crate::release_free_memory();
}
