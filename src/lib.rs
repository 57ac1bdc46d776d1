//! # tcalloc
//!
//! A thread-caching memory allocator in the style of tcmalloc, written in Rust. Use it as the
//! Rust global allocator:
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: tcalloc::TcAlloc = tcalloc::TcAlloc;
//! ```
//!
//! or, built with `--features override`, as `libtcalloc.so`, a drop-in `malloc` for any
//! program (`LD_PRELOAD`).
//!
//! ## Layers
//!
//! Memory flows down on a miss and back up on a refill. Each layer is one file (or folder) and
//! only uses the layers below it, in this order, top first (`tests/layers.rs` fails on a use
//! that points up):
//!
//! ```text
//! ffi.rs ffi_glibc.rs  the C malloc family, glibc's extras, the tcalloc_* twins  entry points
//! ffi_cxx.rs           C++ operator new and delete (with override)
//! lib.rs               the Rust API: TcAlloc, stats(), release_free_memory(), Pool
//! pool/                per-connection memory pools (Rust and the C mp_* API), on TcAlloc
//! global.rs            TcAlloc: GlobalAlloc
//! lifecycle.rs         process start-up: settings, fork handlers, the exit report
//! stats.rs             snapshot of every layer (reads them all)
//! router.rs            size & alignment -> class / page run / large; C free validation
//! front_end/           the caches of the fast path, behind one interface (front_end/mod.rs):
//!   thread_cache/      per-thread free list per class, no locks on the fast path
//! release.rs           when free memory goes back to the OS (reserve, decay, on demand)
//! central_free_list.rs per class and shard: spans of objects; refill/flush entry points
//! transfer_cache.rs    per class and shard: stacks of whole batches (O(1) hand-over)
//! page_heap.rs         spans of pages: split, coalesce, adaptive reserve, release, huge pages
//! large.rs             blocks above 1 MiB: their own mapping, an adaptive mapping cache
//! page_map.rs          address -> span radix tree, read without locks
//! size_class/          the generated class table and O(1) lookups
//! metadata.rs          the allocator's own records (span records, page-map leaves)
//! span.rs              span records
//! free_list.rs         intrusive lists of free objects, links encoded
//! env.rs               settings from the environment
//! os.rs                the only code that calls mmap / munmap / mremap / madvise
//! sync.rs              the futex lock and its contention counters
//! config.rs  diag.rs   every tunable; messages and invariant checks without allocating
//! ```
//!
//! One call points up, by design: a thread cache's first activation runs `lifecycle`'s start-up
//! (once per process). The start-up sets the front end's budget and registers fork handlers that
//! lock its registry and an exit report that reads `stats`, so it cannot sit below the front end,
//! and no code above the front end is sure to run before it.
//!
//! Rules that hold in every file: nothing on an allocation path allocates, panics, formats or
//! takes a `std::sync` lock; out of memory is a null pointer; every `unsafe fn` states its
//! contract under `# Safety` and every `unsafe` block names the precondition it relies on.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod central_free_list;
mod config;
mod diag;
mod env;
mod ffi;
#[cfg(feature = "override")]
mod ffi_cxx;
mod ffi_glibc;
mod free_list;
mod front_end;
mod global;
mod large;
mod lifecycle;
mod metadata;
mod os;
mod page_heap;
mod page_map;
pub mod pool;
mod release;
mod router;
mod size_class;
mod span;
mod stats;
mod sync;
mod transfer_cache;

#[cfg(feature = "per-cpu")]
#[doc(hidden)]
pub use front_end::per_cpu::introspect as per_cpu_introspect;
pub use global::TcAlloc;
pub use pool::{AllocError, Pool, PoolStats};
pub use stats::{stats, ClassStats, LockFamilies, Stats};
pub use sync::LockStats;

/// Checks the invariants of the allocator's shared structures and of the calling thread's
/// cache, aborting with the offending values. For tests: it takes every lock in turn and walks
/// every list.
#[doc(hidden)]
pub fn check_invariants() {
    stats::check_invariants();
}

/// Returns the free objects cached by the calling thread to the central lists, as whole
/// batches where it can, for other threads' refills to take (as jemalloc's
/// `thread.tcache.flush` and gperftools' `MarkThreadIdle` do): for a thread about to wait a
/// long while. The cache stays usable; its lists grow again from slow start. A thread's cache
/// is returned on its own when the thread exits, to the objects' spans. (With the `per-cpu`
/// front end, every CPU's cache is emptied as well.)
pub fn flush_thread_cache() {
    front_end::flush_current();
}

/// Gives every free page back to the OS now: flushes the calling thread's cache, drains the
/// central transfer caches, unmaps cached large mappings and releases every free span of the
/// page heap. Resident memory falls to what is in use plus other threads' caches.
pub fn release_free_memory() {
    front_end::flush_current();
    release::release_all();
}
