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
//! Memory flows down on a miss and back up on a refill. Each layer is one file and only uses
//! the layers below it:
//!
//! ```text
//! global.rs  ffi.rs   TcAlloc: GlobalAlloc; the C malloc family      entry points
//! ffi_glibc.rs         the rest of glibc's malloc API, C23's free_sized, jemalloc's nallocx
//! pool/                per-connection memory pools (Rust and the C mp_* API), on TcAlloc
//! stats.rs             snapshot of every layer (reads them all)
//! router.rs            size & alignment -> class / page run / large; C free validation
//! thread_cache.rs      per-thread free list per class, no locks on the fast path
//! release.rs           when free memory goes back to the OS (reserve, decay, on demand)
//! central_free_list.rs per class: batches in and out under one lock, spans of objects
//! transfer_cache.rs    per class: a stack of whole batches (O(1) hand-over between threads)
//! page_heap.rs         spans of pages: split, coalesce, release to the OS
//! page_map.rs          address -> span radix tree, read without locks
//! large.rs             blocks above 1 MiB: their own mapping
//! size_class/          the generated class table and O(1) lookups
//! metadata.rs          the allocator's own records (span records), from `os`
//! os.rs                the only code that calls mmap / munmap / mremap / madvise
//! leaves: config.rs (every tunable), env.rs (settings from the environment), span.rs
//!         (span records), free_list.rs (intrusive lists), sync.rs (futex lock), diag.rs
//!         (messages without allocating), lifecycle.rs (start-up, fork)
//! ```
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
mod ffi_glibc;
mod free_list;
mod global;
mod large;
mod lifecycle;
mod metadata;
mod os;
mod page_heap;
mod page_map;
#[cfg(feature = "per-cpu")]
#[path = "front_end/per_cpu/mod.rs"]
mod per_cpu;
pub mod pool;
mod release;
mod router;
mod size_class;
mod span;
mod stats;
mod sync;
mod thread_cache;
mod transfer_cache;

pub use global::TcAlloc;
#[cfg(feature = "per-cpu")]
#[doc(hidden)]
pub use per_cpu::introspect as per_cpu_introspect;
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

/// Gives every free page back to the OS now: flushes the calling thread's cache, drains the
/// central transfer caches, unmaps cached large mappings and releases every free span of the
/// page heap. Resident memory falls to what is in use plus other threads' caches.
pub fn release_free_memory() {
    thread_cache::flush_current();
    #[cfg(feature = "per-cpu")]
    per_cpu::release_all();
    release::release_all();
}
