//! How a thread reaches its cache: a `const`-initialised thread-local with no destructor
//! (so the fast path reaches it with a plain TLS address), or, in the preloadable library, an
//! initial-exec thread-local defined in assembly (`static_tls`), two instructions from the
//! thread pointer. [`cache_fast`] is what the fast paths use; [`cache`] never fails.

use super::ThreadCache;
#[cfg(not(all(feature = "override", target_arch = "x86_64", target_os = "linux")))]
use core::cell::UnsafeCell;

#[cfg(not(all(feature = "override", target_arch = "x86_64", target_os = "linux")))]
thread_local! {
    static CACHE: UnsafeCell<ThreadCache> = const { UnsafeCell::new(ThreadCache::new()) };
}

/// The calling thread's cache.
#[inline(always)]
pub(super) fn cache() -> *mut ThreadCache {
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
pub(super) fn cache_fast() -> *mut ThreadCache {
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
