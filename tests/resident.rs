//! The allocator's own tables cost resident memory only where a program uses them: a program
//! that uses a few size classes and then gives its free memory back, or asks for statistics,
//! does not make the OS back the whole per-class, per-shard tables of the transfer caches and
//! central lists (about 480 KiB each), as the release's sweep over every class and shard did
//! when it locked each one (and the statistics, which locked every list).

use std::hint::black_box;

#[global_allocator]
static ALLOC: tcalloc::TcAlloc = tcalloc::TcAlloc;

/// Resident bytes of this process (`/proc/self/statm`).
fn resident() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: usize = statm.split_whitespace().nth(1).expect("resident field").parse().unwrap();
    pages * 4096
}

#[test]
fn releasing_memory_and_statistics_back_no_table_pages_of_unused_classes() {
    // A few classes in use, on this thread; the blocks stay live, so that the release has
    // little to give back (which would hide what it backs).
    let blocks: Vec<Vec<u8>> = (0..1000).map(|i| vec![1u8; 16 << (i % 3)]).collect();
    let before = resident();
    tcalloc::release_free_memory();
    let released = resident();
    let stats = black_box(tcalloc::stats());
    let after = resident();
    assert!(stats.page_heap_bytes > 0 && black_box(&blocks).len() == 1000);
    let (by_release, by_stats) = (released.saturating_sub(before), after.saturating_sub(released));
    assert!(by_release <= 64 << 10, "the release backed {} KiB", by_release >> 10);
    assert!(by_stats <= 64 << 10, "the statistics backed {} KiB", by_stats >> 10);
}
