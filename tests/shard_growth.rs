//! While the heap grows, a new span does not try every other shard's lists first.
//!
//! Before a list carves a new span it tries to borrow: the classes it may borrow from in its own
//! shard, then its own class and those classes in the other shards (their locks only tried).
//! While the heap grows there is nothing to borrow anywhere, and every new span paid those
//! attempts: with a shard per CPU, two atomic operations per other shard and span (here, on the
//! 48-byte class), on cache lines other CPUs use. Now a list that found nothing in the other
//! shards leaves them alone while it carves: one span, then twice as much after each further
//! fruitless attempt, up to 256 KiB of spans.
//!
//! One test in its own binary: the count of lock acquisitions is process-wide, and what other
//! tests leave behind changes it (after `shard_borrow.rs`'s tests, the same growth took half as
//! many acquisitions again, though it tried the other shards as rarely). tcalloc is called
//! directly through `GlobalAlloc`, not installed as the global allocator, so nothing else in the
//! binary allocates from it. On a machine of one CPU there is one shard and nothing else to
//! try; the bound holds all the same.

use std::alloc::{GlobalAlloc, Layout};
use tcalloc::TcAlloc;

mod cpus;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// One thread grows the 48-byte class by 16 MiB (about 2 000 spans): every refill takes its
/// class's lock once and every new span tries the one class it may borrow from in its own shard
/// (64 bytes); the other shards' 48- and 64-byte lists are tried about 70 times in all (the
/// bound allows one span in 16). Each new span used to try them: two more acquisitions per span
/// and other shard. The shards are as many as the highest CPU number allowed, plus one (at
/// most 32).
#[test]
fn a_growing_heap_does_not_try_the_other_shards_at_every_new_span() {
    let cpu = *cpus::allowed().last().unwrap();
    let blocks = (16 << 20) / 48;
    let class_48 = |s: &tcalloc::Stats| s.classes.iter().find(|c| c.size == 48).unwrap().spans;
    let (acquisitions, spans) = std::thread::spawn(move || {
        cpus::pin(cpu);
        // The thread's cache is set up before the count starts.
        // SAFETY: a valid non-zero layout; each block is freed once, with its layout.
        let first = unsafe { TcAlloc.alloc(layout(48)) };
        let before = tcalloc::stats();
        let all: Vec<usize> =
            // SAFETY: as above.
            (0..blocks).map(|_| unsafe { TcAlloc.alloc(layout(48)) } as usize).collect();
        let after = tcalloc::stats();
        assert!(all.iter().all(|&b| b != 0));
        for b in all.into_iter().chain([first as usize]) {
            // SAFETY: as above.
            unsafe { TcAlloc.dealloc(b as *mut u8, layout(48)) };
        }
        let acquisitions =
            after.locks.central_lists.acquisitions - before.locks.central_lists.acquisitions;
        (acquisitions, class_48(&after).saturating_sub(class_48(&before)))
    })
    .join()
    .unwrap();
    tcalloc::check_invariants();
    let refills = blocks as u64 / 64;
    let other_shards = (*cpus::allowed().last().unwrap() as u64 + 1).min(32) - 1;
    // Shown with `--nocapture`.
    eprintln!(
        "{acquisitions} acquisitions for {refills} refills and {spans} new spans, \
         {other_shards} other shards"
    );
    let spans = spans as u64;
    assert!(
        acquisitions <= refills + spans + spans / 16 * 2 * other_shards + 100,
        "{acquisitions} acquisitions of central-list locks for {refills} refills and {spans} \
         new spans, with {other_shards} other shards"
    );
}
