//! The transfer caches' shard is the CPU's, not the thread's: batches that one thread's cache
//! gives back on a CPU go to the next refill on that CPU, whichever thread makes it.
//!
//! Thread A, pinned to a CPU, allocates six batches of 48-byte blocks, frees them and flushes
//! its cache (`tcalloc::flush_thread_cache`: to the transfer cache, as whole batches), then
//! exits. Thread B, pinned to
//! the same CPU, then allocates as many: once its list has grown to a batch (slow start), each
//! refill must be one of A's batches, handed over whole. With a shard fixed per thread, A and
//! B (activated one after the other) had different shards on a machine of two CPUs or more,
//! and a refill takes a batch from another shard only when that shard holds more than eight,
//! so B got none of A's blocks and carved new ones: a producer and a consumer thread met only
//! through the span lists, as xmalloc-test's did in about half of its runs.
//!
//! tcalloc is called directly through `GlobalAlloc`, not installed as the global allocator, so
//! that nothing else in this binary refills or flushes 48-byte blocks meanwhile. One test, so
//! no other test runs beside it. (With `--features per-cpu` frees go to per-CPU caches, which
//! the thread caches' shards do not concern.)

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashSet;
use tcalloc::TcAlloc;

mod cpus;

/// A size class of its own (48 bytes: 64 objects per batch), and six of its batches: at most
/// the eight batches that another shard's refill leaves to a shard.
const SIZE: usize = 48;
const BATCH: usize = 64;
const BLOCKS: usize = 6 * BATCH;

fn layout() -> Layout {
    Layout::from_size_align(SIZE, 8).unwrap()
}

#[test]
#[cfg_attr(feature = "per-cpu", ignore = "frees go to the per-CPU caches")]
fn a_batch_freed_on_a_cpu_goes_to_the_next_refill_there() {
    let cpu = cpus::allowed()[0];
    let freed: HashSet<usize> = std::thread::spawn(move || {
        cpus::pin(cpu);
        // SAFETY: a valid non-zero layout; each block is freed once, with its layout.
        let blocks: Vec<usize> =
            (0..BLOCKS).map(|_| unsafe { TcAlloc.alloc(layout()) } as usize).collect();
        for &b in &blocks {
            assert_ne!(b, 0);
            // SAFETY: as above.
            unsafe { TcAlloc.dealloc(b as *mut u8, layout()) };
        }
        tcalloc::flush_thread_cache();
        blocks.into_iter().collect()
    })
    .join()
    .unwrap();
    let taken: Vec<usize> = std::thread::spawn(move || {
        cpus::pin(cpu);
        // SAFETY: as above.
        (0..BLOCKS).map(|_| unsafe { TcAlloc.alloc(layout()) } as usize).collect()
    })
    .join()
    .unwrap();
    let reused = taken.iter().filter(|b| freed.contains(b)).count();
    for &b in &taken {
        // SAFETY: blocks allocated above with this layout, freed once.
        unsafe { TcAlloc.dealloc(b as *mut u8, layout()) };
    }
    // B's slow start takes 1 + 2 + ... + 32 = 63 blocks from the spans, then whole batches:
    // five of A's six.
    assert!(
        reused >= 3 * BATCH,
        "the second thread reused {reused} of the first's {BLOCKS} blocks on CPU {cpu}"
    );
}
