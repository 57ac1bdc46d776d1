//! The allocator's own tables cost resident memory only where a program uses them: a program
//! that uses a few size classes and then gives its free memory back (or asks for statistics)
//! does not make the OS back the whole per-class, per-shard tables of the transfer caches and
//! central lists (about 480 KiB each), as the release tick's sweep over every class and shard
//! did when it locked each one.

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
    // A few classes in use, on this thread.
    let blocks: Vec<Vec<u8>> = (0..1000).map(|i| vec![1u8; 16 << (i % 3)]).collect();
    drop(black_box(blocks));
    let text = format!("{}", black_box(12345));
    let before = resident();
    tcalloc::release_free_memory();
    let stats = black_box(tcalloc::stats());
    let after = resident();
    assert!(stats.page_heap_bytes > 0, "{text}");
    let grown = after.saturating_sub(before);
    assert!(grown <= 96 << 10, "resident memory grew by {} KiB", grown >> 10);
}
