//! A shard reuses the holes in another shard's spans before it carves a new span.
//!
//! Thread A, pinned to one CPU, allocates 32 spans' worth of 256-byte blocks, frees every
//! other one and gives its cache and the transfer caches back (`release_free_memory`), so that
//! the freed blocks wait on the free lists of its shard's half-used spans. Thread B, pinned to
//! another CPU (another shard), then allocates as many blocks as A freed. Its shard has no span
//! of the class, so it used to carve new spans from the page heap and reuse none of A's holes:
//! with a shard per CPU, a program whose threads move between CPUs, or free on one and allocate
//! on another, grew the heap by a span per class and shard. Now B's refills take the returned
//! objects of A's shard first.
//!
//! On a machine of one CPU both threads share the one shard and B reuses A's holes directly;
//! the test then checks the same outcome through the ordinary path.
//!
//! tcalloc is called directly through `GlobalAlloc`, not installed as the global allocator, so
//! that nothing else in this binary touches 256-byte blocks meanwhile. One test, so no other
//! test runs beside it. (With `--features per-cpu`, frees go to per-CPU caches instead.)

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashSet;
use tcalloc::TcAlloc;

mod cpus;

/// A size class of its own: 32 objects per 8 KiB span.
const SIZE: usize = 256;
const BLOCKS: usize = 32 * 32;

fn layout() -> Layout {
    Layout::from_size_align(SIZE, 8).unwrap()
}

#[test]
#[cfg_attr(feature = "per-cpu", ignore = "frees go to the per-CPU caches")]
fn a_shard_takes_the_holes_of_another_shards_spans_before_a_new_span() {
    let allowed = cpus::allowed();
    let (a_cpu, b_cpu) = (allowed[0], *allowed[..2.min(allowed.len())].last().unwrap());
    let (freed, live): (HashSet<usize>, Vec<usize>) = std::thread::spawn(move || {
        cpus::pin(a_cpu);
        // SAFETY: a valid non-zero layout; each block is freed once, with its layout.
        let blocks: Vec<usize> =
            (0..BLOCKS).map(|_| unsafe { TcAlloc.alloc(layout()) } as usize).collect();
        assert!(blocks.iter().all(|&b| b != 0));
        let freed: HashSet<usize> = blocks.iter().copied().step_by(2).collect();
        let live: Vec<usize> = blocks.iter().copied().skip(1).step_by(2).collect();
        for &b in &freed {
            // SAFETY: as above.
            unsafe { TcAlloc.dealloc(b as *mut u8, layout()) };
        }
        // The cache's blocks and the transfer caches' batches go back to their spans.
        tcalloc::release_free_memory();
        (freed, live)
    })
    .join()
    .unwrap();
    let n = freed.len();
    let taken: Vec<usize> = std::thread::spawn(move || {
        cpus::pin(b_cpu);
        // SAFETY: as above.
        (0..n).map(|_| unsafe { TcAlloc.alloc(layout()) } as usize).collect()
    })
    .join()
    .unwrap();
    let reused = taken.iter().filter(|b| freed.contains(b)).count();
    for &b in taken.iter().chain(&live) {
        // SAFETY: blocks allocated above with this layout, freed once.
        unsafe { TcAlloc.dealloc(b as *mut u8, layout()) };
    }
    assert!(
        reused >= freed.len() * 3 / 4,
        "the thread on CPU {b_cpu} reused {reused} of the {} blocks freed on CPU {a_cpu}",
        freed.len()
    );
}
