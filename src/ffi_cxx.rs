//! C++'s `operator new` and `operator delete`, under their Itanium ABI names (with `override`
//! only), so that a preloaded C++ program allocates from tcalloc directly instead of through
//! the C++ runtime's operators, which call `malloc` and `free` in turn. Every form is here:
//! plain, array, `nothrow`, sized (C++14) and aligned (C++17).
//!
//! | call | answer |
//! | --- | --- |
//! | `new(n)`, `new[](n)` | a block as `malloc(n)` gives (`n == 0` too: a unique pointer) |
//! | `new(n, align_val_t a)` | a block aligned to `a` (and at least to what `malloc(n)` guarantees) |
//! | out of memory | the C++ runtime's own operator of the same form is called (found with `dlsym(RTLD_NEXT, …)`): it retries through `malloc`, runs the program's `new_handler`, and throws `std::bad_alloc`, or for a `nothrow` form returns null; with no C++ runtime loaded after tcalloc, the throwing forms abort with `tcalloc: operator new(): out of memory` and the `nothrow` forms return null |
//! | `new(n, align_val_t a)` with `a` not a power of two | abort with `tcalloc: operator new(): invalid alignment` |
//! | every `delete` form | `free(p)`, validated as `free` validates, with `operator delete` in the message: a pointer tcalloc never handed out or a double free aborts. The size and alignment of the sized and aligned forms are not checked (the C++ runtime ignores them too) |
//!
//! The throwing forms are `extern "C-unwind"`: the C++ runtime's `std::bad_alloc` passes
//! through them to the program's handler.
//!
//! Layers below: `router`, `front_end` (the thread cache's pop, as `malloc`'s), `diag`.

use crate::diag;
use crate::front_end::{self, FAST_LIMIT};
use crate::router;
use core::ffi::{c_void, CStr};

/// A symbol name with its terminating NUL, as a `CStr`.
const fn c_name(name: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(name.as_bytes()) {
        Ok(name) => name,
        Err(_) => panic!("a symbol name ends with its only NUL"),
    }
}

/// The C++ runtime's `std::nothrow_t` argument: never read.
type Nothrow = *const c_void;

/// The alignment C `malloc(size)` gives, or `align` if larger. Aborts on an alignment that is
/// not a power of two (`std::align_val_t` must be one).
#[inline(always)]
fn alignment(align: usize, size: usize) -> usize {
    if !align.is_power_of_two() {
        bad_alignment(align);
    }
    align.max(router::c_align(size))
}

/// Sizes above `PTRDIFF_MAX` can never be allocated (as `malloc`).
#[inline(always)]
fn too_big(size: usize) -> bool {
    size > isize::MAX as usize
}

/// The aligned forms' allocation; null when out of memory.
#[inline(always)]
fn alloc_aligned(size: usize, align: usize) -> *mut u8 {
    let align = alignment(align, size);
    if too_big(size) {
        return core::ptr::null_mut();
    }
    router::alloc(size, align)
}

#[cold]
#[inline(never)]
fn bad_alignment(align: usize) -> ! {
    diag::fatal(format_args!("operator new(): invalid alignment {align}"))
}

/// The next definition of `symbol` after this library: the C++ runtime's own operator.
#[cold]
#[inline(never)]
fn next(symbol: &CStr) -> *mut c_void {
    // SAFETY: a symbol lookup; `dlsym` may allocate, which re-enters tcalloc with no lock held.
    unsafe { libc::dlsym(libc::RTLD_NEXT, symbol.as_ptr()) }
}

#[cold]
#[inline(never)]
fn no_runtime(size: usize) -> ! {
    diag::fatal(format_args!("operator new(): out of memory ({size} bytes)"))
}

/// `new(size)` past the thread cache's pop: `malloc`'s path, then [`new_failed`].
#[cold]
#[inline(never)]
unsafe fn new_slow(symbol: &CStr, size: usize) -> *mut u8 {
    let p = if too_big(size) { core::ptr::null_mut() } else { router::alloc_c(size) };
    if p.is_null() {
        // SAFETY: forwarded.
        return unsafe { new_failed(symbol, size) }.cast();
    }
    p
}

/// `new(size)` after tcalloc ran out of memory: the C++ runtime's, which throws.
#[cold]
#[inline(never)]
unsafe fn new_failed(symbol: &CStr, size: usize) -> *mut c_void {
    let f = next(symbol);
    if f.is_null() {
        no_runtime(size);
    }
    // SAFETY: the C++ runtime's operator of this form: `void *(size_t)`.
    let f: unsafe extern "C-unwind" fn(usize) -> *mut c_void = unsafe { core::mem::transmute(f) };
    // SAFETY: as above.
    unsafe { f(size) }
}

/// `new(size, align)` after tcalloc ran out of memory: the C++ runtime's, which throws.
#[cold]
#[inline(never)]
unsafe fn new_aligned_failed(symbol: &CStr, size: usize, align: usize) -> *mut c_void {
    let f = next(symbol);
    if f.is_null() {
        no_runtime(size);
    }
    // SAFETY: the C++ runtime's operator of this form: `void *(size_t, align_val_t)`.
    let f: unsafe extern "C-unwind" fn(usize, usize) -> *mut c_void =
        unsafe { core::mem::transmute(f) };
    // SAFETY: as above.
    unsafe { f(size, align) }
}

/// `new(size, nothrow)` after tcalloc ran out of memory: the C++ runtime's (it runs the
/// `new_handler`), else null.
#[cold]
#[inline(never)]
unsafe fn new_nothrow_failed(symbol: &CStr, size: usize, nothrow: Nothrow) -> *mut c_void {
    let f = next(symbol);
    if f.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: the C++ runtime's operator of this form: `void *(size_t, const nothrow_t &)`.
    let f: unsafe extern "C-unwind" fn(usize, Nothrow) -> *mut c_void =
        unsafe { core::mem::transmute(f) };
    // SAFETY: as above.
    unsafe { f(size, nothrow) }
}

/// `new(size, align, nothrow)` after tcalloc ran out of memory: as [`new_nothrow_failed`].
#[cold]
#[inline(never)]
unsafe fn new_aligned_nothrow_failed(
    symbol: &CStr,
    size: usize,
    align: usize,
    nothrow: Nothrow,
) -> *mut c_void {
    let f = next(symbol);
    if f.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: the C++ runtime's operator of this form:
    // `void *(size_t, align_val_t, const nothrow_t &)`.
    let f: unsafe extern "C-unwind" fn(usize, usize, Nothrow) -> *mut c_void =
        unsafe { core::mem::transmute(f) };
    // SAFETY: as above.
    unsafe { f(size, align, nothrow) }
}

/// Defines the throwing and `nothrow` forms of one `operator new`.
macro_rules! new {
    ($(
        $(#[$doc:meta])*
        $name:ident = $symbol:literal;
        $nothrow_name:ident = $nothrow_symbol:literal;
    )*) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        /// - As for the C++ operator.
        #[export_name = $symbol]
        pub unsafe extern "C-unwind" fn $name(size: usize) -> *mut c_void {
            const SYMBOL: &CStr = c_name(concat!($symbol, "\0"));
            if size < FAST_LIMIT {
                // SAFETY: forwarded.
                let slow = |_| unsafe { new_slow(SYMBOL, size) };
                return front_end::alloc_small_c_or(size, slow).cast();
            }
            // SAFETY: forwarded.
            unsafe { new_slow(SYMBOL, size) }.cast()
        }

        /// The `nothrow` form.
        ///
        /// # Safety
        /// - As for the C++ operator.
        #[export_name = $nothrow_symbol]
        pub unsafe extern "C-unwind" fn $nothrow_name(size: usize, nothrow: Nothrow) -> *mut c_void {
            let p = router::alloc_c(size);
            if p.is_null() {
                // SAFETY: forwarded.
                return unsafe {
                    new_nothrow_failed(c_name(concat!($nothrow_symbol, "\0")), size, nothrow)
                };
            }
            p.cast()
        }
    )*};
}

/// Defines the throwing and `nothrow` forms of one aligned `operator new`.
macro_rules! new_aligned {
    ($(
        $(#[$doc:meta])*
        $name:ident = $symbol:literal;
        $nothrow_name:ident = $nothrow_symbol:literal;
    )*) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        /// - As for the C++ operator.
        #[export_name = $symbol]
        pub unsafe extern "C-unwind" fn $name(size: usize, align: usize) -> *mut c_void {
            let p = alloc_aligned(size, align);
            if p.is_null() {
                // SAFETY: forwarded.
                return unsafe { new_aligned_failed(c_name(concat!($symbol, "\0")), size, align) };
            }
            p.cast()
        }

        /// The `nothrow` form.
        ///
        /// # Safety
        /// - As for the C++ operator.
        #[export_name = $nothrow_symbol]
        pub unsafe extern "C-unwind" fn $nothrow_name(
            size: usize,
            align: usize,
            nothrow: Nothrow,
        ) -> *mut c_void {
            let p = alloc_aligned(size, align);
            if p.is_null() {
                // SAFETY: forwarded.
                return unsafe {
                    let symbol = c_name(concat!($nothrow_symbol, "\0"));
                    new_aligned_nothrow_failed(symbol, size, align, nothrow)
                };
            }
            p.cast()
        }
    )*};
}

new! {
    /// `operator new(size_t)`.
    operator_new = "_Znwm";
    operator_new_nothrow = "_ZnwmRKSt9nothrow_t";
    /// `operator new[](size_t)`.
    operator_new_array = "_Znam";
    operator_new_array_nothrow = "_ZnamRKSt9nothrow_t";
}

new_aligned! {
    /// `operator new(size_t, align_val_t)`.
    operator_new_aligned = "_ZnwmSt11align_val_t";
    operator_new_aligned_nothrow = "_ZnwmSt11align_val_tRKSt9nothrow_t";
    /// `operator new[](size_t, align_val_t)`.
    operator_new_array_aligned = "_ZnamSt11align_val_t";
    operator_new_array_aligned_nothrow = "_ZnamSt11align_val_tRKSt9nothrow_t";
}

/// Defines `operator delete` forms: each frees its pointer as `free` does; the other
/// arguments (size, alignment, `nothrow`) are not used.
macro_rules! delete {
    ($(
        $(#[$doc:meta])*
        $name:ident = $symbol:literal ($($arg:ident: $ty:ty),*);
    )*) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        /// - As for the C++ operator.
        #[export_name = $symbol]
        pub unsafe extern "C" fn $name(ptr: *mut c_void $(, $arg: $ty)*) {
            $(let _ = $arg;)*
            // SAFETY: the C++ contract: `ptr` is null or a live block of `new`, now dead;
            // anything else is caught by `free`'s validation.
            unsafe { router::free_unsized(ptr.cast(), "operator delete") }
        }
    )*};
}

delete! {
    /// `operator delete(void *)`.
    operator_delete = "_ZdlPv"();
    /// `operator delete[](void *)`.
    operator_delete_array = "_ZdaPv"();
    /// `operator delete(void *, size_t)`.
    operator_delete_sized = "_ZdlPvm"(size: usize);
    /// `operator delete[](void *, size_t)`.
    operator_delete_array_sized = "_ZdaPvm"(size: usize);
    /// `operator delete(void *, const nothrow_t &)`.
    operator_delete_nothrow = "_ZdlPvRKSt9nothrow_t"(nothrow: Nothrow);
    /// `operator delete[](void *, const nothrow_t &)`.
    operator_delete_array_nothrow = "_ZdaPvRKSt9nothrow_t"(nothrow: Nothrow);
    /// `operator delete(void *, align_val_t)`.
    operator_delete_aligned = "_ZdlPvSt11align_val_t"(align: usize);
    /// `operator delete[](void *, align_val_t)`.
    operator_delete_array_aligned = "_ZdaPvSt11align_val_t"(align: usize);
    /// `operator delete(void *, size_t, align_val_t)`.
    operator_delete_sized_aligned = "_ZdlPvmSt11align_val_t"(size: usize, align: usize);
    /// `operator delete[](void *, size_t, align_val_t)`.
    operator_delete_array_sized_aligned = "_ZdaPvmSt11align_val_t"(size: usize, align: usize);
    /// `operator delete(void *, align_val_t, const nothrow_t &)`.
    operator_delete_aligned_nothrow = "_ZdlPvSt11align_val_tRKSt9nothrow_t"
        (align: usize, nothrow: Nothrow);
    /// `operator delete[](void *, align_val_t, const nothrow_t &)`.
    operator_delete_array_aligned_nothrow = "_ZdaPvSt11align_val_tRKSt9nothrow_t"
        (align: usize, nothrow: Nothrow);
}
