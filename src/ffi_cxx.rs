//! C++'s `operator new` and `operator delete`, under their Itanium ABI names (with `override`
//! only), so that a preloaded C++ program allocates from tcalloc directly instead of through
//! the C++ runtime's operators, which call `malloc` and `free` in turn. Every form is here:
//! plain, array, `nothrow`, sized (C++14) and aligned (C++17).
//!
//! | call | answer |
//! | --- | --- |
//! | `new(n)`, `new[](n)` | a block as `malloc(n)` gives (`n == 0` too: a unique pointer) |
//! | `new(n, align_val_t a)` | a block aligned to `a` (and at least to what `malloc(n)` guarantees) |
//! | out of memory | the C++ runtime's own operator of the same form is called: it retries through `malloc`, runs the program's `new_handler`, and throws `std::bad_alloc`, or for a `nothrow` form returns null; with no C++ runtime to be found, the throwing forms abort with `tcalloc: operator new(): out of memory` and the `nothrow` forms return null |
//! | `new(n, align_val_t a)` with `a` not a power of two | abort with `tcalloc: operator new(): invalid alignment` |
//! | every `delete` form | `free(p)`, validated as `free` validates, with `operator delete` in the message: a pointer tcalloc never handed out or a double free aborts. The size and alignment of the sized and aligned forms are not checked (the C++ runtime ignores them too) |
//! | a program that defines some of the operators itself | every form is the C++ runtime's (see below) |
//!
//! **Programs that replace operators.** The standard lets a program define its own `new` and
//! `delete` (to track its allocations, say), and the forms it leaves out call the ones it
//! defines: the runtime's sized `delete` calls the plain `delete`, its `new[]` the plain `new`.
//! tcalloc's forms would break that pairing (a block of the program's `new`, with its header,
//! freed by tcalloc's sized `delete`). So the first call of any form looks each name up in the
//! process (`dlsym(RTLD_DEFAULT, …)`): if one of them is not tcalloc's, every form of tcalloc's
//! from then on calls the C++ runtime's of the same form, which calls the program's or
//! `malloc`/`free`, exactly as without tcalloc's operators. Until that look-up has found them
//! all tcalloc's, `new`'s fast-path limit is 0 and `delete` takes its slow path, so the check
//! costs the fast paths nothing but the limit's load (a compare with memory instead of a
//! constant) and one test in `delete`.
//!
//! **Finding the C++ runtime.** `dlsym(RTLD_NEXT, …)` finds it where the program links it;
//! for one opened with `dlopen(RTLD_LOCAL)` (a Python extension in C++), or whose constructors
//! are still running, the runtime is looked up by its name (`libstdc++.so.6`, `libc++.so.1`)
//! among the loaded objects (`RTLD_NOLOAD`).
//!
//! **Exceptions.** The throwing forms are `extern "C-unwind"`: the C++ runtime's
//! `std::bad_alloc` passes through them (and through [`new_slow`] and the `*_by_runtime`
//! functions) to the program's handler. None of these frames may need a cleanup (no value with
//! `Drop` alive across the runtime's call): a frame with a cleanup would have the unwinder
//! call Rust's personality routine, which this library links against its own copy of libgcc's
//! unwinder (`build.rs`), not the copy that raised the exception, and the program would abort.
//! `tests/c/cxx_test.cpp` throws through them.
//!
//! Layers below: `router`, `front_end` (the thread cache's pop, as `malloc`'s), `diag`.

use crate::diag;
use crate::front_end::{self, FAST_LIMIT};
use crate::router;
use core::ffi::{c_void, CStr};
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering::Relaxed};

/// A symbol name with its terminating NUL, as a `CStr`.
const fn c_name(name: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(name.as_bytes()) {
        Ok(name) => name,
        Err(_) => panic!("a symbol name ends with its only NUL"),
    }
}

/// The C++ runtime's `std::nothrow_t` argument: never read.
type Nothrow = *const c_void;

/// `new`'s fast-path limit: [`FAST_LIMIT`] once every operator of the process was found to be
/// tcalloc's, 0 before that and when the program replaced one (every call then takes the slow
/// path). `delete` takes its slow path while it is 0.
static NEW_LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Whether the operators were looked up yet, and what was found.
static OPERATORS: AtomicU8 = AtomicU8::new(NOT_LOOKED_UP);
const NOT_LOOKED_UP: u8 = 0;
const TCALLOCS: u8 = 1;
const REPLACED: u8 = 2;

/// Whether the calls must go to the C++ runtime's operators: the program replaced one of
/// them. Looks the operators up on the first call.
#[cold]
#[inline(never)]
fn forwarding() -> bool {
    match OPERATORS.load(Relaxed) {
        TCALLOCS => false,
        REPLACED => true,
        _ => look_up_operators(),
    }
}

/// Looks each operator up in the process and says whether one is not tcalloc's. (Taking the
/// address of tcalloc's own definition would not do: an exported function's address is read
/// from the GOT, which names the definition that won, so the object each one found lives in is
/// compared with this library's.)
#[cold]
#[inline(never)]
fn look_up_operators() -> bool {
    let ours = object_of(look_up_operators as *const c_void);
    let replaced = ALL.iter().any(|name| {
        // SAFETY: a symbol lookup; it may allocate, which re-enters tcalloc with no lock held.
        let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        !found.is_null() && object_of(found) != ours
    });
    // Racing first calls find the same answer; the last store wins with it.
    OPERATORS.store(if replaced { REPLACED } else { TCALLOCS }, Relaxed);
    if !replaced {
        NEW_LIMIT.store(FAST_LIMIT, Relaxed);
    }
    replaced
}

/// The base address of the loaded object that holds `address` (null if none does).
fn object_of(address: *const c_void) -> *mut c_void {
    // SAFETY: `dladdr` only reads the loader's tables and writes `info`.
    unsafe {
        let mut info: libc::Dl_info = core::mem::zeroed();
        if libc::dladdr(address, &mut info) == 0 {
            return core::ptr::null_mut();
        }
        info.dli_fbase
    }
}

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

/// A size the C++ runtime gets for a request tcalloc could not serve: the same, but no more
/// than `PTRDIFF_MAX + 1`, still impossible, which the runtime's aligned `new` cannot round up
/// past `SIZE_MAX` to a tiny block (libstdc++ 12's does: `(size + align - 1) & ~(align - 1)`).
#[inline(always)]
fn for_runtime(size: usize) -> usize {
    size.min(isize::MAX as usize + 1)
}

#[cold]
#[inline(never)]
fn bad_alignment(align: usize) -> ! {
    diag::fatal(format_args!("operator new(): invalid alignment {align}"))
}

/// One operator of the C++ runtime: its name, and its definition once found.
struct Runtime {
    symbol: &'static CStr,
    found: AtomicPtr<c_void>,
}

impl Runtime {
    const fn new(symbol: &'static CStr) -> Self {
        Runtime { symbol, found: AtomicPtr::new(core::ptr::null_mut()) }
    }

    /// The C++ runtime's own definition: the next one after this library, else the one in a
    /// loaded C++ runtime library that is not in the global scope. Null if there is none.
    /// Looked up once (a forwarding program calls it on every allocation).
    #[inline]
    fn get(&self) -> *mut c_void {
        let found = self.found.load(Relaxed);
        if !found.is_null() {
            return found;
        }
        let found = look_up_runtime(self.symbol);
        self.found.store(found, Relaxed);
        found
    }
}

#[cold]
#[inline(never)]
fn look_up_runtime(symbol: &CStr) -> *mut c_void {
    // SAFETY: symbol lookups; they may allocate, which re-enters tcalloc with no lock held.
    unsafe {
        let next = libc::dlsym(libc::RTLD_NEXT, symbol.as_ptr());
        if !next.is_null() {
            return next;
        }
        for library in [c"libstdc++.so.6", c"libc++.so.1"] {
            let handle = libc::dlopen(library.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
            if handle.is_null() {
                continue;
            }
            // The library's own definition: a handle's lookup starts with the library itself.
            let found = libc::dlsym(handle, symbol.as_ptr());
            libc::dlclose(handle);
            if !found.is_null() {
                return found;
            }
        }
        core::ptr::null_mut()
    }
}

#[cold]
#[inline(never)]
fn no_runtime(size: usize) -> ! {
    diag::fatal(format_args!("operator new(): out of memory ({size} bytes)"))
}

/// `new(size)` past the thread cache's pop: the C++ runtime's when forwarding, else `malloc`'s
/// path, then the runtime's when out of memory.
#[cold]
#[inline(never)]
unsafe fn new_slow(runtime: &Runtime, size: usize) -> *mut u8 {
    let p = unless_forwarding(runtime, || {
        if too_big(size) {
            core::ptr::null_mut()
        } else {
            router::alloc_c(size)
        }
    });
    if p.is_null() {
        // SAFETY: forwarded.
        return unsafe { new_by_runtime(runtime, size) }.cast();
    }
    p
}

/// The C++ runtime's `new(size)` (which throws when out of memory).
#[cold]
#[inline(never)]
unsafe fn new_by_runtime(runtime: &Runtime, size: usize) -> *mut c_void {
    let f = runtime.get();
    if f.is_null() {
        no_runtime(size);
    }
    // SAFETY: the C++ runtime's operator of this form: `void *(size_t)`.
    let f: unsafe extern "C-unwind" fn(usize) -> *mut c_void = unsafe { core::mem::transmute(f) };
    // SAFETY: as above.
    unsafe { f(for_runtime(size)) }
}

/// The C++ runtime's `new(size, align)`.
#[cold]
#[inline(never)]
unsafe fn new_aligned_by_runtime(runtime: &Runtime, size: usize, align: usize) -> *mut c_void {
    let f = runtime.get();
    if f.is_null() {
        no_runtime(size);
    }
    // SAFETY: the C++ runtime's operator of this form: `void *(size_t, align_val_t)`.
    let f: unsafe extern "C-unwind" fn(usize, usize) -> *mut c_void =
        unsafe { core::mem::transmute(f) };
    // SAFETY: as above.
    unsafe { f(for_runtime(size), align) }
}

/// The C++ runtime's `new(size, nothrow)` (it runs the `new_handler`), else null.
#[cold]
#[inline(never)]
unsafe fn new_nothrow_by_runtime(runtime: &Runtime, size: usize, nothrow: Nothrow) -> *mut c_void {
    let f = runtime.get();
    if f.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: the C++ runtime's operator of this form: `void *(size_t, const nothrow_t &)`.
    let f: unsafe extern "C-unwind" fn(usize, Nothrow) -> *mut c_void =
        unsafe { core::mem::transmute(f) };
    // SAFETY: as above.
    unsafe { f(for_runtime(size), nothrow) }
}

/// The C++ runtime's `new(size, align, nothrow)`, else null.
#[cold]
#[inline(never)]
unsafe fn new_aligned_nothrow_by_runtime(
    runtime: &Runtime,
    size: usize,
    align: usize,
    nothrow: Nothrow,
) -> *mut c_void {
    let f = runtime.get();
    if f.is_null() {
        return core::ptr::null_mut();
    }
    // SAFETY: the C++ runtime's operator of this form:
    // `void *(size_t, align_val_t, const nothrow_t &)`.
    let f: unsafe extern "C-unwind" fn(usize, usize, Nothrow) -> *mut c_void =
        unsafe { core::mem::transmute(f) };
    // SAFETY: as above.
    unsafe { f(for_runtime(size), align, nothrow) }
}

/// tcalloc's block from `alloc()` (null when out of memory), or null without calling it when
/// this call goes to `runtime` instead ([`forwarding_to`]).
#[inline(always)]
fn unless_forwarding(runtime: &Runtime, alloc: impl FnOnce() -> *mut u8) -> *mut u8 {
    if forwarding_to(runtime) {
        return core::ptr::null_mut();
    }
    alloc()
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
            static RUNTIME: Runtime = Runtime::new(c_name(concat!($symbol, "\0")));
            if size < NEW_LIMIT.load(Relaxed) {
                // SAFETY: forwarded.
                let slow = |_| unsafe { new_slow(&RUNTIME, size) };
                return front_end::alloc_small_c_or(size, slow).cast();
            }
            // SAFETY: forwarded.
            unsafe { new_slow(&RUNTIME, size) }.cast()
        }

        /// The `nothrow` form.
        ///
        /// # Safety
        /// - As for the C++ operator.
        #[export_name = $nothrow_symbol]
        pub unsafe extern "C-unwind" fn $nothrow_name(size: usize, nothrow: Nothrow) -> *mut c_void {
            static RUNTIME: Runtime = Runtime::new(c_name(concat!($nothrow_symbol, "\0")));
            let p = unless_forwarding(&RUNTIME, || {
                if too_big(size) { core::ptr::null_mut() } else { router::alloc_c(size) }
            });
            if p.is_null() {
                // SAFETY: forwarded.
                return unsafe { new_nothrow_by_runtime(&RUNTIME, size, nothrow) };
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
            static RUNTIME: Runtime = Runtime::new(c_name(concat!($symbol, "\0")));
            let p = unless_forwarding(&RUNTIME, || alloc_aligned(size, align));
            if p.is_null() {
                // SAFETY: forwarded.
                return unsafe { new_aligned_by_runtime(&RUNTIME, size, align) };
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
            static RUNTIME: Runtime = Runtime::new(c_name(concat!($nothrow_symbol, "\0")));
            let p = unless_forwarding(&RUNTIME, || alloc_aligned(size, align));
            if p.is_null() {
                // SAFETY: forwarded.
                return unsafe {
                    new_aligned_nothrow_by_runtime(&RUNTIME, size, align, nothrow)
                };
            }
            p.cast()
        }
    )*};
}

/// Whether this call goes to `runtime`, the C++ runtime's form of the operator: the program
/// replaced an operator ([`forwarding`]) and the runtime's form exists (a program that brings
/// every operator it uses has none, and tcalloc's serves). One load once the operators were
/// found to be tcalloc's.
#[inline(always)]
fn forwarding_to(runtime: &Runtime) -> bool {
    NEW_LIMIT.load(Relaxed) == 0 && forwarding() && !runtime.get().is_null()
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

/// Defines `operator delete` forms: each frees its pointer as `free` does, the other
/// arguments (size, alignment, `nothrow`) unused; or, when forwarding, calls the C++ runtime's
/// form with all of them.
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
            if NEW_LIMIT.load(Relaxed) == 0 {
                #[cold]
                #[inline(never)]
                unsafe fn slow(ptr: *mut c_void $(, $arg: $ty)*) {
                    static RUNTIME: Runtime = Runtime::new(c_name(concat!($symbol, "\0")));
                    let f = if forwarding_to(&RUNTIME) { RUNTIME.get() } else { core::ptr::null_mut() };
                    if f.is_null() {
                        // SAFETY: as in the fast path below.
                        return unsafe { router::free_unsized(ptr.cast(), "operator delete") };
                    }
                    let f: unsafe extern "C" fn(*mut c_void $(, $ty)*) =
                        // SAFETY: the C++ runtime's operator of this form.
                        unsafe { core::mem::transmute(f) };
                    // SAFETY: forwarded.
                    unsafe { f(ptr $(, $arg)*) }
                }
                // SAFETY: forwarded.
                return unsafe { slow(ptr $(, $arg)*) };
            }
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

/// Every operator's name.
static ALL: [&CStr; 20] = [
    c"_Znwm",
    c"_ZnwmRKSt9nothrow_t",
    c"_Znam",
    c"_ZnamRKSt9nothrow_t",
    c"_ZnwmSt11align_val_t",
    c"_ZnwmSt11align_val_tRKSt9nothrow_t",
    c"_ZnamSt11align_val_t",
    c"_ZnamSt11align_val_tRKSt9nothrow_t",
    c"_ZdlPv",
    c"_ZdaPv",
    c"_ZdlPvm",
    c"_ZdaPvm",
    c"_ZdlPvRKSt9nothrow_t",
    c"_ZdaPvRKSt9nothrow_t",
    c"_ZdlPvSt11align_val_t",
    c"_ZdaPvSt11align_val_t",
    c"_ZdlPvmSt11align_val_t",
    c"_ZdaPvmSt11align_val_t",
    c"_ZdlPvSt11align_val_tRKSt9nothrow_t",
    c"_ZdaPvSt11align_val_tRKSt9nothrow_t",
];
