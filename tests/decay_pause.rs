//! The decay clock stops while the program sleeps: free pages idle through a pause are not
//! released by the first ticks after it (the program is about to use them again), only once
//! the program has run for the decay time. In a process of its own, because the page heap and
//! its clock are the whole process's.

use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: tcalloc::TcAlloc = tcalloc::TcAlloc;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Runs allocator slow paths (thread-cache refills and flushes, which run the release tick)
/// for `how_long`.
fn busy(how_long: Duration) {
    let start = Instant::now();
    let mut round = 0usize;
    while start.elapsed() < how_long {
        let size = 16 + (round % 64) * 16;
        let v: Vec<Box<[u8]>> = (0..100).map(|_| vec![1u8; size].into_boxed_slice()).collect();
        std::hint::black_box(&v);
        drop(v);
        round += 1;
    }
}

#[test]
fn free_pages_survive_a_pause() {
    // About 12 MiB in blocks of one span each: freed, they go straight back to the page heap and
    // stay backed (under the 16 MiB reserve).
    let blocks: Vec<Box<[u8]>> = (0..60).map(|_| vec![7u8; 200 * KIB].into_boxed_slice()).collect();
    drop(blocks);
    let before = tcalloc::stats();
    assert!(before.page_heap_free_bytes >= 10 * MIB, "{before}");
    std::thread::sleep(Duration::from_millis(1500));
    // Back at work, for less than the decay time (1 s).
    busy(Duration::from_millis(400));
    let s = tcalloc::stats();
    assert!(
        s.released_bytes < before.released_bytes + MIB,
        "free pages released right after the pause: {} MiB released before, now\n{s}",
        before.released_bytes / MIB
    );
}
