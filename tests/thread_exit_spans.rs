//! A thread's cache goes back to its spans when the thread exits, not to the transfer caches:
//! the objects of a thread that is gone are not about to be asked for again, and kept there as
//! whole batches they pinned their spans, and so their pages, until another thread wanted
//! that class (glibc-simple's second thread, one per phase of one size, left each phase's
//! objects pinned into the next).
//!
//! A thread allocates 2 000 blocks of 64 bytes and frees them all into its own cache (the list
//! grows to hold them: most are still there when it exits), then exits. The transfer caches
//! hold no more after the exit than just before it, and the spans of those blocks are back
//! in the page heap, except those still pinned by the batches the list overflowed with while
//! it grew (those went to the transfer caches before the exit, as any overflow does).
//!
//! tcalloc is called directly through `GlobalAlloc`, not installed as the global allocator, so
//! nothing else in this binary touches the 64-byte class. One test function. Under
//! `--features override` the binary's own `malloc` is tcalloc too, and std's allocations (the
//! thread's own, freed after its cache is retired) move the figures by a few KiB: the transfer
//! caches may then grow by [`slack`], and the 64-byte class's figures are not checked. (With
//! `--features per-cpu` a thread's frees go to its CPU's cache, which outlives the thread: the
//! test does not apply.)

use std::alloc::{GlobalAlloc, Layout};
use tcalloc::TcAlloc;

const SIZE: usize = 64;
const BLOCKS: usize = 2000;

/// How far std's own allocations may move the transfer caches (see the module docs); the
/// thread's cache holds 125 KiB of 64-byte blocks when it exits.
fn slack() -> usize {
    if cfg!(feature = "override") {
        16 << 10
    } else {
        0
    }
}

fn class_64(s: &tcalloc::Stats) -> tcalloc::ClassStats {
    *s.classes.iter().find(|c| c.size == SIZE).expect("a 64-byte class")
}

#[test]
#[cfg_attr(feature = "per-cpu", ignore = "frees go to the per-CPU caches, which outlive threads")]
fn an_exiting_threads_cache_goes_back_to_its_spans() {
    let l = Layout::from_size_align(SIZE, 8).unwrap();
    let at_exit = std::thread::spawn(move || {
        // SAFETY: a non-zero size; each block is freed once, with its layout.
        let blocks: Vec<usize> =
            (0..BLOCKS).map(|_| unsafe { TcAlloc.alloc(l) } as usize).collect();
        assert!(blocks.iter().all(|&b| b != 0));
        for &b in &blocks {
            // SAFETY: allocated above with `l`.
            unsafe { TcAlloc.dealloc(b as *mut u8, l) };
        }
        tcalloc::stats()
    })
    .join()
    .unwrap();
    let after = tcalloc::stats();
    let cached = at_exit.thread_cache_bytes;
    assert!(
        cached >= BLOCKS / 2 * SIZE,
        "the premise: the thread's cache held most of its blocks when it exited\n{at_exit}"
    );
    assert!(
        after.transfer_cache_bytes <= at_exit.transfer_cache_bytes + slack(),
        "the exit added {} bytes to the transfer caches; the cache held {cached}\n{at_exit}\n{after}",
        after.transfer_cache_bytes.saturating_sub(at_exit.transfer_cache_bytes)
    );
    // A thread that flushes its cache while it lives (`flush_thread_cache`) hands its objects
    // to the transfer caches instead, as whole batches, for other threads' refills.
    let (before_flush, flushed) = std::thread::spawn(move || {
        // SAFETY: as above.
        let blocks: Vec<usize> =
            (0..BLOCKS).map(|_| unsafe { TcAlloc.alloc(l) } as usize).collect();
        for &b in &blocks {
            // SAFETY: allocated above with `l`.
            unsafe { TcAlloc.dealloc(b as *mut u8, l) };
        }
        let before_flush = tcalloc::stats();
        tcalloc::flush_thread_cache();
        (before_flush, tcalloc::stats())
    })
    .join()
    .unwrap();
    assert!(
        flushed.thread_cache_bytes + BLOCKS / 2 * SIZE <= before_flush.thread_cache_bytes
            && flushed.transfer_cache_bytes
                >= before_flush.transfer_cache_bytes + BLOCKS / 2 * SIZE,
        "flush_thread_cache moved too little to the transfer caches\n{before_flush}\n{flushed}"
    );
    if cfg!(feature = "override") {
        tcalloc::check_invariants();
        return;
    }
    // Every block is free now: a span still held is one that a batch in a transfer cache
    // pins, at most one span per object in those batches.
    let c = class_64(&after);
    assert_eq!(c.objects_out, 0, "{after}");
    let batches_bytes = after.transfer_cache_bytes;
    let pinned_at_most = batches_bytes.div_ceil(SIZE).max(1);
    assert!(
        c.spans <= pinned_at_most && c.spans < class_64(&at_exit).spans,
        "{} spans of 64-byte blocks left ({} at the exit) with {batches_bytes} bytes of batches \
         in the transfer caches\n{after}",
        c.spans,
        class_64(&at_exit).spans
    );
    tcalloc::check_invariants();
}
