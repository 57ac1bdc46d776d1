//! The front ends: the caches that serve most allocations and frees without a lock, and the
//! one small interface through which the layers above (`router`, `ffi`, `stats`, `lifecycle`)
//! reach them.
//!
//! Today there is one front end, the per-thread caches (`thread_cache/`); this module
//! re-exports its entry points, so that the fast paths compile exactly as if called directly.
//! A second front end (per-CPU caches) sits beside it as a sibling folder, and the functions
//! below then choose between them.
//!
//! The interface:
//! - fast paths: [`alloc`] / [`dealloc`] by class, [`alloc_small`] / [`dealloc_small`] by a
//!   size below [`FAST_LIMIT`], [`alloc_medium`] / [`dealloc_medium`] by a larger size,
//!   [`alloc_small_c`] (C `malloc`'s alignment) and [`dealloc_checked`] (C `free`'s push of a
//!   validated object);
//! - the cold double-free search [`abort_if_cached`];
//! - statistics: [`cached_bytes`], [`live_threads`], [`check_current`];
//! - life cycle: [`flush_current`], [`set_total_budget`], and for the `fork` handlers
//!   [`registry_lock`] and [`forget_other_threads_after_fork`].
//!
//! Layers below: `release`, `central_free_list`, `transfer_cache`.

mod thread_cache;

pub use thread_cache::{
    abort_if_cached, alloc, alloc_medium, alloc_small, alloc_small_c, cached_bytes, check_current,
    dealloc, dealloc_checked, dealloc_medium, dealloc_small, flush_current,
    forget_other_threads_after_fork, live_threads, registry_lock, set_total_budget, FAST_LIMIT,
};
