//! Thread exit returns the thread's cache to the central lists, counted exactly.
//!
//! tcalloc is called directly through `GlobalAlloc`, not installed as the global allocator, so
//! nothing else in this binary (the test harness, `std::thread`) touches it and its statistics
//! move only with the blocks below. One test function, so no other test runs beside it. Under
//! `--features override` the binary's own `malloc` is tcalloc too, so std's allocations move
//! the figures by a few KiB: the byte counts then allow [`slack`].

use std::alloc::{GlobalAlloc, Layout};
use tcalloc::TcAlloc;

/// Class sizes (exact, so that bytes in use are exact): small, medium and one-page classes.
const SIZES: [usize; 5] = [48, 192, 1024, 4096, 20480];
/// Blocks of each size a thread allocates.
const PER_SIZE: usize = 200;

/// Blocks as plain numbers, so that they can cross threads.
type Blocks = Vec<(usize, Layout)>;

/// How far std's own allocations may move the byte counts (see the module docs).
fn slack() -> usize {
    if cfg!(feature = "override") {
        64 << 10
    } else {
        0
    }
}

fn assert_near(what: &str, got: usize, expected: usize, s: &tcalloc::Stats) {
    assert!(
        got.abs_diff(expected) <= slack(),
        "{what}: {got}, expected {expected} (± {})\n{s}",
        slack()
    );
}

fn objects_out(s: &tcalloc::Stats) -> usize {
    s.classes.iter().map(|c| c.objects_out).sum()
}

/// Free bytes below the thread caches: free objects in the central lists, and free pages in
/// the page heap (a span whose objects are all free goes back there).
fn free_below_thread_caches(s: &tcalloc::Stats) -> i64 {
    let central: usize = s.classes.iter().map(|c| c.central_free_objects * c.size).sum();
    (central + s.page_heap_free_bytes + s.released_bytes) as i64
}

/// With `--features per-cpu` a thread's frees go to its CPU's cache, which outlives the
/// thread: drain it, so that the objects are where a thread cache's would be after its exit.
fn drain_per_cpu_caches() {
    if cfg!(feature = "per-cpu") {
        tcalloc::release_free_memory();
    }
}

#[test]
fn thread_exit_returns_everything() {
    let before = tcalloc::stats();

    // Thread A allocates, frees half itself (into its cache) and hands the other half on.
    let (held, at_exit): (Blocks, tcalloc::Stats) = std::thread::spawn(move || {
        let mut kept = Vec::with_capacity(SIZES.len() * PER_SIZE);
        let mut freed = 0;
        for &size in &SIZES {
            let l = Layout::from_size_align(size, 8).unwrap();
            for i in 0..PER_SIZE {
                // SAFETY: non-zero size.
                let p = unsafe { TcAlloc.alloc(l) };
                assert!(!p.is_null());
                // SAFETY: a live block of `size` bytes.
                unsafe { p.write_bytes(i as u8, size) };
                if i % 2 == 0 {
                    kept.push((p as usize, l));
                } else {
                    // SAFETY: allocated just above with `l`.
                    unsafe { TcAlloc.dealloc(p, l) };
                    freed += size;
                }
            }
        }
        // Exact for the calling thread: what sits in this thread's cache now.
        let s = tcalloc::stats();
        assert!(s.thread_cache_bytes > slack(), "A's cache holds what it freed\n{s}");
        assert!(s.thread_cache_bytes <= before.thread_cache_bytes + freed + slack(), "{s}");
        (kept, s)
    })
    .join()
    .unwrap();
    drain_per_cpu_caches();

    // A has exited: its cached objects are in the central lists, not lost and not counted in
    // any thread cache; what is out of the central lists is exactly the blocks we hold.
    let after_a = tcalloc::stats();
    let held_bytes: usize = held.iter().map(|(_, l)| l.size()).sum();
    assert_eq!(after_a.threads, before.threads, "A's cache left the registry\n{after_a}");
    let (cached, out) = (after_a.thread_cache_bytes, after_a.allocated_bytes);
    assert_near("bytes in thread caches", cached, before.thread_cache_bytes, &after_a);
    assert_near("bytes in use", out, before.allocated_bytes + held_bytes, &after_a);
    if slack() == 0 {
        assert_eq!(objects_out(&after_a), objects_out(&before) + held.len(), "{after_a}");
    }
    let cached = at_exit.thread_cache_bytes as i64;
    let returned = free_below_thread_caches(&after_a) - free_below_thread_caches(&at_exit);
    assert!(
        returned + slack() as i64 >= cached,
        "A had {cached} bytes cached when it exited, but only {returned} bytes came back to \
         the central lists and the page heap\n{at_exit}\n{after_a}"
    );
    tcalloc::check_invariants();

    // Thread B frees A's blocks (remote frees into B's cache) and exits.
    std::thread::spawn(move || {
        for (p, l) in held {
            // SAFETY: allocated by A with `l`, owned by this thread now.
            unsafe { TcAlloc.dealloc(p as *mut u8, l) };
        }
        let s = tcalloc::stats();
        assert!(s.thread_cache_bytes > slack(), "B's cache holds A's objects\n{s}");
    })
    .join()
    .unwrap();
    drain_per_cpu_caches();

    // Every object is back in the central lists (or, with its whole span, in the page heap).
    let after_b = tcalloc::stats();
    assert_eq!(after_b.threads, before.threads, "{after_b}");
    let (cached, out) = (after_b.thread_cache_bytes, after_b.allocated_bytes);
    assert_near("bytes in thread caches", cached, before.thread_cache_bytes, &after_b);
    assert_near("bytes in use", out, before.allocated_bytes, &after_b);
    if slack() == 0 {
        assert_eq!(objects_out(&after_b), objects_out(&before), "{after_b}");
    }
    tcalloc::check_invariants();
}
