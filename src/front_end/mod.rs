//! The front ends: the caches that serve most allocations and frees without a lock, and the
//! one small interface through which the layers above (`router`, `ffi`, `stats`, `lifecycle`)
//! reach them.
//!
//! There are two front ends. The per-thread caches (`thread_cache/`) are the default; this
//! module re-exports their entry points, so that the fast paths compile exactly as if called
//! directly. The per-CPU caches on restartable sequences (`per_cpu/`) are built with the
//! `per-cpu` feature: then the Rust entry points below try them first and fall back to the
//! thread caches where they cannot serve (no rseq registration, `TCALLOC_PER_CPU=0`,
//! re-entry during start-up). C `malloc` and `free` use the thread caches in every build.
//!
//! The interface:
//! - fast paths: [`alloc`] / [`dealloc`] by class, [`alloc_small`] / [`dealloc_small`] by a
//!   size below [`FAST_LIMIT`], [`alloc_medium`] / [`dealloc_medium`] by a larger size,
//!   [`alloc_small_c`] (C `malloc`'s alignment; [`alloc_small_c_or`] with the caller's slow
//!   path, for C++ `operator new`) and [`dealloc_checked`] (C `free`'s push of a validated
//!   object);
//! - the cold double-free search [`abort_if_cached`];
//! - statistics: [`cached_bytes`], [`live_threads`], [`check_current`];
//! - life cycle: [`flush_current`], [`set_total_budget`], and for the `fork` handlers
//!   [`registry_lock`] and [`forget_other_threads_after_fork`].
//!
//! Layers below: `release`, `central_free_list`, `transfer_cache`.

#[cfg(feature = "per-cpu")]
pub(crate) mod per_cpu;
mod thread_cache;

#[cfg(feature = "per-cpu")]
pub use choose::{
    alloc, alloc_medium, alloc_small, cached_bytes, dealloc, dealloc_medium, dealloc_small,
    flush_current,
};
#[cfg(feature = "override")]
pub use thread_cache::alloc_small_c_or;
pub use thread_cache::{
    abort_if_cached, alloc_small_c, check_current, dealloc_checked,
    forget_other_threads_after_fork, live_threads, registry_lock, set_total_budget, FAST_LIMIT,
};
#[cfg(not(feature = "per-cpu"))]
pub use thread_cache::{
    alloc, alloc_medium, alloc_small, cached_bytes, dealloc, dealloc_medium, dealloc_small,
    flush_current,
};

/// The Rust entry points with both front ends: the per-CPU caches first, the thread caches
/// when those cannot serve. With `hardened` the thread caches serve everything: the
/// double-free search reads their lists and the spans', not the per-CPU slabs.
#[cfg(feature = "per-cpu")]
mod choose {
    use super::{per_cpu, thread_cache};
    use crate::size_class::SizeClass;

    /// Whether the per-CPU caches are tried at all.
    const PER_CPU: bool = !cfg!(feature = "hardened");

    /// The per-CPU caches' block, else (null: they cannot serve) the thread caches'.
    #[inline(always)]
    fn take(per_cpu: impl FnOnce() -> *mut u8, thread_cache: impl FnOnce() -> *mut u8) -> *mut u8 {
        let p = if PER_CPU { per_cpu() } else { core::ptr::null_mut() };
        if p.is_null() {
            thread_cache()
        } else {
            p
        }
    }

    /// Gives a block to the per-CPU caches, else (false: they cannot take it) to the thread
    /// caches.
    #[inline(always)]
    fn give(per_cpu: impl FnOnce() -> bool, thread_cache: impl FnOnce()) {
        if !(PER_CPU && per_cpu()) {
            thread_cache()
        }
    }

    /// An object of `class`; null only when out of memory.
    #[inline(always)]
    pub fn alloc(class: SizeClass) -> *mut u8 {
        take(|| per_cpu::alloc(class), || thread_cache::alloc(class))
    }

    /// Frees an object of `class`.
    ///
    /// # Safety
    /// - `ptr` is a block of `class` handed out by this allocator and no longer used.
    #[inline(always)]
    pub unsafe fn dealloc(ptr: *mut u8, class: SizeClass) {
        give(
            // SAFETY: forwarded.
            || unsafe { per_cpu::dealloc(ptr, class) },
            // SAFETY: forwarded.
            || unsafe { thread_cache::dealloc(ptr, class) },
        )
    }

    /// `size < FAST_LIMIT` bytes at the minimum alignment.
    #[inline(always)]
    pub fn alloc_small(size: usize) -> *mut u8 {
        take(|| per_cpu::alloc_small(size), || thread_cache::alloc_small(size))
    }

    /// Frees a block that [`alloc_small`] returned for `size`.
    ///
    /// # Safety
    /// - `ptr` came from `alloc_small(size)` (or any block of the same class) and is dead.
    #[inline(always)]
    pub unsafe fn dealloc_small(ptr: *mut u8, size: usize) {
        give(
            // SAFETY: forwarded.
            || unsafe { per_cpu::dealloc_small(ptr, size) },
            // SAFETY: forwarded.
            || unsafe { thread_cache::dealloc_small(ptr, size) },
        )
    }

    /// `FAST_LIMIT <= size <= MAX_SIZE` bytes at the minimum alignment.
    #[inline(always)]
    pub fn alloc_medium(size: usize) -> *mut u8 {
        take(|| per_cpu::alloc_medium(size), || thread_cache::alloc_medium(size))
    }

    /// Frees a block that [`alloc_medium`] returned for `size`.
    ///
    /// # Safety
    /// - `ptr` came from `alloc_medium(size)` (or any block of the same class) and is dead.
    #[inline(always)]
    pub unsafe fn dealloc_medium(ptr: *mut u8, size: usize) {
        give(
            // SAFETY: forwarded.
            || unsafe { per_cpu::dealloc_medium(ptr, size) },
            // SAFETY: forwarded.
            || unsafe { thread_cache::dealloc_medium(ptr, size) },
        )
    }

    /// Bytes held by both front ends (both are "thread caches" to the statistics).
    pub fn cached_bytes() -> usize {
        thread_cache::cached_bytes() + per_cpu::cached_bytes()
    }

    /// Empties the calling thread's cache and every CPU's.
    pub fn flush_current() {
        thread_cache::flush_current();
        per_cpu::release_all();
    }
}
