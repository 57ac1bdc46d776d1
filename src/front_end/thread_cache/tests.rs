//! Unit tests of the thread caches.

use super::limits::{NEARLY_FULL, SCATTERED_STREAK};
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

/// Room left on the list of `class` of this thread's cache.
fn room(class: SizeClass) -> i32 {
    // SAFETY: our own cache on our own thread.
    unsafe { (*cache()).hot[class.index()].room }
}

/// Length of the list of `class` of this thread's cache.
fn len(class: SizeClass) -> usize {
    // SAFETY: our own cache on our own thread.
    unsafe { (*cache()).len(class) }
}

/// `n` blocks of `class`, in an order that scatters them through memory (a fixed shuffle).
fn scattered_blocks(class: SizeClass, n: usize) -> Vec<*mut u8> {
    let mut blocks: Vec<_> = (0..n).map(|_| alloc(class)).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..blocks.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        blocks.swap(i, (x % (i as u64 + 1)) as usize);
    }
    blocks
}

/// Frees blocks of `class` from the end of `blocks` until its list has overflowed at least
/// `overflows` times and has `room` left in `rooms`; returns how many times it overflowed.
fn free_until(
    class: SizeClass,
    blocks: &mut Vec<*mut u8>,
    overflows: usize,
    rooms: core::ops::RangeInclusive<i32>,
) -> usize {
    let mut seen = 0;
    while seen < overflows || !rooms.contains(&room(class)) {
        let before = room(class);
        // SAFETY: a block of `class` from `alloc`, unused, freed once.
        unsafe { dealloc(blocks.pop().expect("enough blocks"), class) };
        seen += (room(class) > before) as usize;
    }
    seen
}

fn scattered_frees() -> bool {
    // SAFETY: our own cache on our own thread.
    unsafe { (*cache()).scattered_streak >= SCATTERED_STREAK }
}

/// `n` blocks of `class` that lie close together: the `n` nearest one another of `16 * n`
/// (other tests running beside this one may have left batches of the class in the central
/// lists, from anywhere in the heap), in address order, and the rest of the `16 * n`.
fn close_blocks(class: SizeClass, n: usize) -> (Vec<*mut u8>, Vec<*mut u8>) {
    let mut blocks: Vec<_> = (0..16 * n).map(|_| alloc(class)).collect();
    blocks.sort();
    let start = (0..=blocks.len() - n)
        .min_by_key(|&i| blocks[i + n - 1] as usize - blocks[i] as usize)
        .unwrap();
    let close: Vec<_> = blocks.drain(start..start + n).collect();
    (close, blocks)
}

#[test]
fn nearly_full_lists_give_batches_back_beside_a_scattered_overflow() {
    on_fresh_thread(|| {
        let (a, b, d) = (class_of(64), class_of(256), class_of(1024));
        // `a` and `b` are freed in random order through a megabyte or more: scattered
        // batches; `d` in address order from blocks within a few hundred kilobytes.
        let mut blocks_a = scattered_blocks(a, 20_000);
        let mut blocks_b = scattered_blocks(b, 20_000);
        let (mut blocks_d, rest_d) = close_blocks(d, 4 * d.batch());
        blocks_d.reverse();
        for class in [a, b, d] {
            // Short lists, so that a few hundred frees overflow them.
            // SAFETY: our own cache on our own thread.
            unsafe { (*cache()).set_max_len_and_trim(class, class.batch() as u32) };
        }
        const NEAR: core::ops::RangeInclusive<i32> = 1..=NEARLY_FULL;
        free_until(d, &mut blocks_d, 1, NEAR);
        let streak = SCATTERED_STREAK as usize;
        free_until(b, &mut blocks_b, streak, NEAR);
        assert!(scattered_frees(), "b's batches are scattered");
        assert_eq!(free_until(a, &mut blocks_a, 0, 0..=0), 0);
        check_current();
        let (len_b, len_d) = (len(b), len(d));
        // SAFETY: our own cache on our own thread.
        let last_b = unsafe { (*cache()).hot[b.index()].head };
        // The overflow of `a` gives back a batch of `a` and, beside it, what `b` holds but its
        // last freed block: its list is nearly full, and its objects are scattered. `d`'s
        // nearly full list stays: its objects lie close together.
        assert_eq!(free_until(a, &mut blocks_a, 1, 0..=i32::MAX), 1);
        check_current();
        assert_eq!(len(b), 1, "b gave all but one of its {len_b} objects back beside a");
        // SAFETY: as above.
        let kept_b = unsafe { (*cache()).hot[b.index()].head };
        assert_eq!(kept_b, last_b, "the one b kept is the last freed");
        assert_eq!(len(d), len_d, "d's objects lie close together");
        assert!(scattered_frees());
        // After an overflow of objects close together, the next overflow walks its list
        // alone, even with `b` nearly full.
        assert_eq!(free_until(d, &mut blocks_d, 1, 0..=i32::MAX), 1);
        assert!(!scattered_frees(), "d's batch lies close together");
        assert_eq!(free_until(b, &mut blocks_b, 0, NEAR), 0);
        assert_eq!(free_until(d, &mut blocks_d, 0, 0..=0), 0);
        let len_b = len(b);
        assert_eq!(free_until(d, &mut blocks_d, 1, 0..=i32::MAX), 1);
        check_current();
        assert_eq!(len(b), len_b, "b's list stays beside an overflow of d");
        // A refill ends a phase of scattered frees (a thread that allocates as much as it
        // frees keeps its lists).
        free_until(b, &mut blocks_b, streak, NEAR);
        assert!(scattered_frees());
        let e = class_of(2048);
        let x = alloc(e);
        assert!(!scattered_frees(), "a refill ends the phase");
        assert_eq!(free_until(a, &mut blocks_a, 0, 0..=0), 0);
        let len_b = len(b);
        assert_eq!(free_until(a, &mut blocks_a, 1, 0..=i32::MAX), 1);
        assert_eq!(len(b), len_b, "b's list stays beside an overflow after a refill");
        // SAFETY: a block of `e` from `alloc`, unused.
        unsafe { dealloc(x, e) };
        let rest = [(a, blocks_a), (b, blocks_b), (d, blocks_d), (d, rest_d)];
        for (class, blocks) in rest {
            for p in blocks {
                // SAFETY: blocks of `class` from `alloc`, unused, freed once.
                unsafe { dealloc(p, class) };
            }
        }
        check_current();
    });
}
