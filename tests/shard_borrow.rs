//! A shard reuses the holes in another shard's spans before it carves a new span.
//!
//! Thread A, pinned to one CPU, allocates blocks of one size, frees some of them and gives its
//! cache and the transfer caches back (`release_free_memory`), so that the freed blocks wait on
//! the free lists of its shard's half-used spans. Thread B, pinned to another CPU (another
//! shard), then allocates as many blocks. Its shard has no span of the class, so it used to
//! carve new spans from the page heap and reuse none of A's holes: with a shard per CPU, a
//! program whose threads move between CPUs, or free on one and allocate on another, grew the
//! heap by a span per class and shard.
//!
//! - Same size (256 bytes, every other block freed): B's refills take the returned objects of
//!   A's shard.
//! - A nearby size (4 MiB of 64-byte blocks, three in four freed; B allocates 48-byte blocks):
//!   the 48-byte class borrows from the 64-byte class's spans, but used to look only in its
//!   own shard (`tests/fragmentation.rs`, whose one thread allocates in both phases, grew by
//!   151 MiB instead of reusing its holes when it ran on the other CPU in its second phase).
//!   Borrowing stops when the donor holds less than 1 MiB free: about two thirds of the 3 MiB
//!   of holes are taken.
//!
//! On a machine of one CPU both threads share the one shard and B reuses A's holes directly;
//! the tests then check the same outcome through the ordinary path.
//!
//! tcalloc is called directly through `GlobalAlloc`, not installed as the global allocator, so
//! that nothing else in this binary touches these sizes meanwhile; the two tests take turns.
//! (With `--features per-cpu`, frees go to per-CPU caches instead.)

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashSet;
use std::sync::Mutex;
use tcalloc::TcAlloc;

mod cpus;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// Thread A on the first allowed CPU allocates `blocks` blocks of `freed_size`, frees those
/// whose index `free` picks and gives its cache back; thread B on another CPU then allocates as
/// many blocks of `taken_size`. Returns how many of B's blocks are A's freed ones, of how many,
/// and the two CPUs.
fn holes_reused(
    freed_size: usize,
    blocks: usize,
    free: fn(usize) -> bool,
    taken_size: usize,
) -> (usize, usize, usize, usize) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let allowed = cpus::allowed();
    let (a_cpu, b_cpu) = (allowed[0], *allowed[..2.min(allowed.len())].last().unwrap());
    let (freed, live): (HashSet<usize>, Vec<usize>) = std::thread::spawn(move || {
        cpus::pin(a_cpu);
        // SAFETY: a valid non-zero layout; each block is freed once, with its layout.
        let all: Vec<usize> =
            (0..blocks).map(|_| unsafe { TcAlloc.alloc(layout(freed_size)) } as usize).collect();
        assert!(all.iter().all(|&b| b != 0));
        let freed: HashSet<usize> =
            all.iter().enumerate().filter(|&(i, _)| free(i)).map(|(_, &b)| b).collect();
        let live: Vec<usize> = all.iter().copied().filter(|b| !freed.contains(b)).collect();
        for &b in &freed {
            // SAFETY: as above.
            unsafe { TcAlloc.dealloc(b as *mut u8, layout(freed_size)) };
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
        (0..n).map(|_| unsafe { TcAlloc.alloc(layout(taken_size)) } as usize).collect()
    })
    .join()
    .unwrap();
    assert!(taken.iter().all(|&b| b != 0));
    let reused = taken.iter().filter(|b| freed.contains(b)).count();
    for &b in &taken {
        // SAFETY: blocks allocated above with this layout, freed once.
        unsafe { TcAlloc.dealloc(b as *mut u8, layout(taken_size)) };
    }
    for &b in &live {
        // SAFETY: as above.
        unsafe { TcAlloc.dealloc(b as *mut u8, layout(freed_size)) };
    }
    tcalloc::check_invariants();
    (reused, n, a_cpu, b_cpu)
}

#[test]
#[cfg_attr(feature = "per-cpu", ignore = "frees go to the per-CPU caches")]
fn a_shard_takes_the_holes_of_another_shards_spans_before_a_new_span() {
    // A size class of its own: 32 objects per 8 KiB span; 32 spans.
    let (reused, n, a_cpu, b_cpu) = holes_reused(256, 32 * 32, |i| i % 2 == 0, 256);
    assert!(
        reused >= n * 3 / 4,
        "the thread on CPU {b_cpu} reused {reused} of the {n} blocks freed on CPU {a_cpu}"
    );
}

#[test]
#[cfg_attr(feature = "per-cpu", ignore = "frees go to the per-CPU caches")]
fn a_class_takes_a_larger_classs_holes_in_another_shard_before_a_new_span() {
    let (reused, n, a_cpu, b_cpu) = holes_reused(64, (4 << 20) / 64, |i| i % 4 != 0, 48);
    assert!(
        reused >= n / 2,
        "the thread on CPU {b_cpu} put {reused} of {n} 48-byte blocks into the 64-byte holes \
         left on CPU {a_cpu}"
    );
}
