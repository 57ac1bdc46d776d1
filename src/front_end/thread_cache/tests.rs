//! Unit tests of the thread caches.

use super::tls::cache;
use super::*;
use crate::config::MAX_LIST_LENGTH;
use crate::size_class::class_for;

fn class_of(size: usize) -> SizeClass {
    class_for(size, 8).unwrap()
}

/// Runs `f` on a fresh thread, so that the cache under test starts `Uninit`.
fn on_fresh_thread(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(f).join().unwrap();
}

#[test]
fn slow_start_then_batches() {
    on_fresh_thread(|| {
        let class = class_of(96);
        let batch = class.batch();
        let mut blocks = Vec::new();
        // Slow start fetches 1, 2, 3, ... objects per miss until the batch size.
        for _ in 0..batch * batch + 4 * batch {
            let p = alloc(class);
            assert!(!p.is_null());
            blocks.push(p);
        }
        check_current();
        // SAFETY: our own cache on our own thread.
        let (max_len, state) = unsafe {
            let c = &*cache();
            (c.limits[class.index()].max_len, c.state)
        };
        assert_eq!(state, State::Active);
        assert!(max_len as usize > batch, "grew past the batch: {max_len}");
        for p in blocks {
            // SAFETY: blocks of `class` from `alloc`, unused.
            unsafe { dealloc(p, class) };
        }
        check_current();
        // SAFETY: as above.
        let len = unsafe { (*cache()).len(class) };
        assert!(len <= MAX_LIST_LENGTH as usize);
        assert!(cached_bytes() >= len * class.size());
    });
}

#[test]
fn lists_respect_the_budget() {
    on_fresh_thread(|| {
        let class = class_of(200 * 1024);
        let mut blocks = Vec::new();
        for _ in 0..64 {
            blocks.push(alloc(class));
        }
        for p in blocks {
            // SAFETY: blocks of `class` from `alloc`, unused.
            unsafe { dealloc(p, class) };
            check_current();
        }
        // SAFETY: our own cache.
        let c = unsafe { &*cache() };
        assert!(c.capacity <= c.budget, "capacity {} budget {}", c.capacity, c.budget);
        assert!(c.exact_bytes() <= c.budget);
    });
}

#[test]
fn idle_lists_shrink_on_scavenge() {
    on_fresh_thread(|| {
        let idle = class_of(512);
        let busy = class_of(32);
        let blocks: Vec<_> = (0..200).map(|_| alloc(idle)).collect();
        for p in blocks {
            // SAFETY: blocks of `idle`, unused.
            unsafe { dealloc(p, idle) };
        }
        // SAFETY: our own cache.
        let before = unsafe { (*cache()).len(idle) };
        assert!(before > 0);
        // Churn another class past its list limit until two scavenges have run: each
        // round takes about 2500 refills and 1500 overflows.
        for _ in 0..4 {
            let q: Vec<_> = (0..80_000).map(|_| alloc(busy)).collect();
            for p in q {
                // SAFETY: just allocated.
                unsafe { dealloc(p, busy) };
            }
        }
        check_current();
        // SAFETY: our own cache.
        let after = unsafe { (*cache()).len(idle) };
        assert!(after < before, "idle list kept {after} of {before}");
    });
}

#[test]
fn thread_exit_returns_everything() {
    let class = class_of(4000);
    let threads_before = live_threads();
    on_fresh_thread(move || {
        let blocks: Vec<_> = (0..50).map(|_| alloc(class)).collect();
        for p in blocks {
            // SAFETY: blocks of `class`, unused.
            unsafe { dealloc(p, class) };
        }
        assert!(live_threads() >= 1);
    });
    // Other tests run threads concurrently; ours is gone from the count.
    assert!(live_threads() <= threads_before + 8);
}
