//! Process-wide start-up and `fork`.
//!
//! [`ensure_initialized`] runs once, from the first slow path of the first thread that
//! allocates: it reads the settings from the environment (`env`), applies them, registers
//! the `fork` handlers and, with `TCALLOC_SHOW_STATS=1`, the report at exit. It may re-enter
//! the allocator (registering `fork` handlers allocates in glibc); a re-entrant or concurrent
//! caller does not wait, because nothing it does is needed for correctness.
//!
//! `fork` handlers: before `fork`, take every allocator lock in the one global order (registry,
//! transfer caches, central lists by class, page heap, large-mapping cache, metadata), so
//! that no lock is
//! held by a thread that will not exist in the child; after `fork`, release them in parent
//! and child, and in the child
//! forget the thread caches of the threads that did not survive.
//!
//! Layers below: `stats` (the exit report), `front_end` (its budget, its registry's lock and
//! what the child forgets), `release`, the central lists, transfer caches, page heap, large
//! blocks and metadata (their locks), `env`. It sits above the front end although the front
//! end's first activation is what calls [`ensure_initialized`]: the one call that points up.

use crate::central_free_list;
use crate::env::Settings;
use crate::front_end;
use crate::large;
use crate::metadata;
use crate::page_heap::PAGE_HEAP;
use crate::release;
use crate::transfer_cache;
use core::sync::atomic::{AtomicU8, Ordering};

const NOT_STARTED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(NOT_STARTED);

/// Runs the one-time start-up if no thread has started it.
#[inline]
pub fn ensure_initialized() {
    if STATE.load(Ordering::Acquire) != NOT_STARTED {
        return;
    }
    if STATE.compare_exchange(NOT_STARTED, RUNNING, Ordering::AcqRel, Ordering::Acquire).is_ok() {
        initialize();
        STATE.store(DONE, Ordering::Release);
    }
}

#[cold]
fn initialize() {
    let page = crate::os::os_page_size();
    if page != crate::config::OS_PAGE_SIZE {
        crate::diag::fatal(format_args!(
            "built for {}-byte OS pages, but this system has {page}-byte pages",
            crate::config::OS_PAGE_SIZE
        ));
    }
    // A shard per CPU number (see `ThreadCache::current_shard`), up to the most there are.
    transfer_cache::set_shards(crate::os::cpu_span().unwrap_or(usize::MAX));
    let settings = Settings::from_env();
    release::configure(&settings);
    front_end::set_total_budget(settings.total_thread_cache_bytes);
    if let Some(bytes) = settings.transfer_cache_bytes {
        transfer_cache::set_capacity(bytes);
    }
    crate::os::at_fork(Some(before_fork), Some(after_fork_parent), Some(after_fork_child));
    if settings.show_stats {
        // SAFETY: the handler is an `extern "C"` function with no arguments, as required.
        unsafe { libc::atexit(print_stats_at_exit) };
    }
}

extern "C" fn print_stats_at_exit() {
    crate::stats::print_to_stderr();
}

fn locks_in_order() -> impl DoubleEndedIterator<Item = &'static crate::sync::RawLock> {
    core::iter::once(front_end::registry_lock())
        .chain(transfer_cache::locks_in_use())
        .chain(central_free_list::locks_in_use())
        .chain([PAGE_HEAP.raw()])
        .chain(large::locks_for_fork())
        .chain([metadata::lock_for_fork()])
}

extern "C" fn before_fork() {
    for lock in locks_in_order() {
        lock.lock();
    }
}

extern "C" fn after_fork_parent() {
    for lock in locks_in_order().rev() {
        // SAFETY: `before_fork` took every lock on this thread.
        unsafe { lock.unlock() };
    }
}

extern "C" fn after_fork_child() {
    // SAFETY: we are the only thread of the child and hold the registry lock.
    unsafe { front_end::forget_other_threads_after_fork() };
    for lock in locks_in_order().rev() {
        // SAFETY: the parent's forking thread (now us) took every lock before `fork`.
        unsafe { lock.unlock() };
    }
}
