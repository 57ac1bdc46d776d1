//! The life cycle of a thread's cache and the registry of active caches: activation on first
//! use (re-entrancy tolerated), the exit guard that retires the cache when its thread exits,
//! what other threads read (cached bytes, live threads), flushing on demand, and what the
//! `fork` handlers need.

use super::budget::{thread_budget, TOTAL_CACHED};
use super::tls::cache;
use super::{ListLimits, State, ThreadCache};
use crate::central_free_list;
use crate::free_list;
use crate::size_class::SizeClass;
use crate::sync::Lock;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The registry of active caches, for statistics and the thread count.
struct Registry {
    head: *mut ThreadCache,
    threads: usize,
}

// SAFETY: registered caches stay valid until their thread unregisters them under the lock.
unsafe impl Send for Registry {}

static REGISTRY: Lock<Registry> = Lock::new(Registry { head: ptr::null_mut(), threads: 0 });
pub(super) static LIVE_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Arranges for the thread's cache to be retired when the thread exits, among its other
/// thread-local destructors; false if that cannot be arranged (then the cache must not be
/// used). May re-enter the allocator.
///
/// On glibc, a destructor registered with `__cxa_thread_atexit_impl` directly (`os`), as
/// Rust's own thread-locals register theirs, and the same as a pthread key's destructor. The
/// key is for a thread whose first allocation comes after its thread-local destructors ran (in
/// another key's destructor): the first registration is never called then, and a cache left
/// in the registry after its thread's memory is gone (or reused by the next thread, whose
/// cache then lies at the same address) corrupts the registry. Retiring twice does nothing.
/// A first allocation in the last of glibc's four rounds of key destructors still escapes.
/// Elsewhere, a thread-local with `Drop`.
fn register_exit_guard() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" fn retire_at_exit(_: *mut core::ffi::c_void) {
            // SAFETY: the cache belongs to this thread, and no fast-path borrow is live while
            // a thread-local or key destructor runs.
            unsafe { ThreadCache::retire(cache()) };
        }
        /// The pthread key of [`retire_at_exit`] (see `os::at_thread_exit_late`).
        static EXIT_KEY: AtomicUsize = AtomicUsize::new(0);
        // SAFETY: retiring is what the thread's exit needs, once its code has finished; the
        // key's value only needs to be non-null.
        unsafe {
            crate::os::at_thread_exit(retire_at_exit, ptr::null_mut());
            crate::os::at_thread_exit_late(
                &EXIT_KEY,
                retire_at_exit,
                ptr::NonNull::dangling().as_ptr(),
            )
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        thread_local! {
            static EXIT_GUARD: ExitGuard = const { ExitGuard };
        }

        /// Dropped when its thread exits: retires the thread's cache.
        struct ExitGuard;

        impl Drop for ExitGuard {
            fn drop(&mut self) {
                // SAFETY: the cache belongs to this thread, and no fast-path borrow is live
                // while a thread-local destructor runs.
                unsafe { ThreadCache::retire(cache()) };
            }
        }
        EXIT_GUARD.try_with(|_| ()).is_ok()
    }
}

impl ThreadCache {
    /// Activates the cache on first use; false if it cannot be used (re-entered while
    /// activating, or its thread is exiting).
    ///
    /// # Safety
    /// - `cache` is the calling thread's cache and no reference into it is live.
    pub(super) unsafe fn ensure_active(cache: *mut ThreadCache) -> bool {
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
            // From now on the lists are linked with the process's key: first link afresh what
            // was pushed with the old one (an `Uninit` cache's key is 0). It stays in the
            // cache: the free that activates the cache is a thread's first, and freeing the
            // same block again must find it here (the double-free search looks here and in the
            // block's span, not in the transfer caches' batches).
            free_list::init_secret();
            let key = free_list::secret();
            for class in SizeClass::all() {
                (*cache).rekey(class, key);
            }
            (*cache).key = key;
            (*cache).link_mask = free_list::LINK_MASK;
            // The one use of a layer above (see the crate docs): the first activation in the
            // process runs the start-up.
            crate::lifecycle::ensure_initialized();
            if !register_exit_guard() {
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

    /// Returns everything to the spans (see `central_free_list::flush_exiting`), leaves the
    /// registry and marks the cache dead.
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
                let i = class.index();
                let head = core::mem::replace(&mut c.hot[i].head, ptr::null_mut());
                if !head.is_null() {
                    // SAFETY: an active cache's list is well formed, linked with the process's
                    // key, and holds dead objects of `class` (or of the larger classes it
                    // borrows from).
                    central_free_list::flush_exiting(head);
                }
                c.hot[i].room = 0;
                c.limits[i] = ListLimits::EMPTY;
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

    /// Links the list of `class` afresh with `key` instead of the cache's `key`.
    fn rekey(&mut self, class: SizeClass, key: usize) {
        let old_key = self.key;
        let mut object = self.hot[class.index()].head;
        // SAFETY: the list holds dead objects of `class` pushed by `dealloc` with `old_key`.
        unsafe {
            while !object.is_null() {
                let next = free_list::next_keyed(object, old_key);
                free_list::set_next_keyed(object, next, key);
                object = next;
            }
        }
    }

    /// An inactive cache's list got an object (or more, from re-entrant frees): send them all
    /// to the central list. They were linked with the cache's `key`, which may not be the
    /// process's link key yet, so they are linked afresh.
    pub(super) fn drain_inactive(&mut self, class: SizeClass) {
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
