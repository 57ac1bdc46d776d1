//! Memory that comes back: resident memory after a peak, large blocks after free, exact
//! statistics. One test function runs the phases in order, because resident memory is a
//! property of the whole process and parallel tests would disturb it.

use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: tcalloc::TcAlloc = tcalloc::TcAlloc;

const MIB: usize = 1 << 20;

fn resident() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn large_blocks_go_back_at_once() {
    let base = resident();
    let mut v = vec![0u8; 512 * MIB];
    for i in (0..v.len()).step_by(4096) {
        v[i] = 1;
    }
    std::hint::black_box(&mut v);
    assert!(resident() >= base + 500 * MIB, "the block is resident");
    drop(v);
    let after = resident();
    assert!(
        after < base + 16 * MIB,
        "RSS {} MiB after free, {} MiB before",
        after / MIB,
        base / MIB
    );
}

/// How the peak test frees its blocks.
#[derive(Clone, Copy, Debug)]
enum FreeOrder {
    /// Every other block, then the rest.
    Interleaved,
    /// A random permutation: the hardest case for caches that hold freed objects, which would
    /// each keep a span resident.
    Random,
}

/// Allocates about 1 GiB in small objects, frees them all in `order`, keeps allocating lightly
/// for a second (a loop that only ever reuses one block, so it never leaves the allocator's
/// fast path), and expects resident memory back under 10% of the peak.
fn small_object_peak_comes_back(order: FreeOrder) {
    let base = resident();
    let mut blocks: Vec<Box<[u8]>> = Vec::with_capacity(8 << 20);
    let mut total = 0;
    let mut i = 0usize;
    while total < 1024 * MIB {
        let size = 16 + (i * 97) % 497; // 16..512 bytes
        blocks.push(vec![i as u8; size].into_boxed_slice());
        total += size;
        i += 1;
    }
    let peak = resident();
    assert!(peak >= base + 1000 * MIB, "peak {} MiB", peak / MIB);
    let s = tcalloc::stats();
    assert!(s.allocated_bytes >= 1024 * MIB, "stats see the peak: {s}");
    match order {
        FreeOrder::Interleaved => {
            for parity in 0..2 {
                for (j, b) in blocks.iter_mut().enumerate() {
                    if j % 2 == parity {
                        *b = Box::new([]);
                    }
                }
            }
        }
        FreeOrder::Random => {
            let mut state = 0x2545_F491_4F6C_DD1Du64;
            while !blocks.is_empty() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let j = (state % blocks.len() as u64) as usize;
                drop(blocks.swap_remove(j));
            }
        }
    }
    drop(blocks);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        std::hint::black_box(vec![1u8; 100]);
        std::thread::sleep(Duration::from_millis(10));
    }
    let after = resident();
    let s = tcalloc::stats();
    assert!(
        after - base.min(after) <= (peak - base) / 10,
        "{order:?}: RSS {} MiB one second after freeing a {} MiB peak (base {} MiB)\n{s}",
        after / MIB,
        peak / MIB,
        base / MIB
    );
    assert!(s.released_bytes >= 900 * MIB, "the page heap released the peak:\n{s}");
    assert!(s.allocated_bytes < 64 * MIB, "{s}");
}

/// In a single thread, the bytes in use move exactly with the blocks allocated (in class
/// sizes).
fn stats_are_exact_for_this_thread() {
    use std::alloc::{GlobalAlloc, Layout};
    let sizes = [8usize, 48, 128, 1024, 4096, 32768, 262144, MIB, 2 * MIB + 4096, 5 * MIB];
    // Empty the large-mapping cache, so that large blocks get mappings of exactly their size,
    // and size the bookkeeping vector up front, so that it does not move while we count.
    tcalloc::release_free_memory();
    let mut blocks = Vec::with_capacity(50 * sizes.len());
    let before = tcalloc::stats().allocated_bytes;
    let mut sum = 0;
    for _ in 0..50 {
        for &size in &sizes {
            let l = Layout::from_size_align(size, 8).unwrap();
            // SAFETY: non-zero size; freed below with the same layout.
            let p = unsafe { tcalloc::TcAlloc.alloc(l) };
            assert!(!p.is_null());
            blocks.push((p, l));
            // Every size is a class size or a whole number of OS pages.
            sum += size;
        }
    }
    let during = tcalloc::stats().allocated_bytes;
    assert_eq!(during - before, sum, "allocated_bytes moves with the blocks");
    for (p, l) in blocks.drain(..) {
        // SAFETY: allocated above with `l`.
        unsafe { tcalloc::TcAlloc.dealloc(p, l) };
    }
    assert_eq!(tcalloc::stats().allocated_bytes, before, "and back");
}

fn release_free_memory_empties_the_page_heap() {
    let v: Vec<Vec<u8>> = (0..10_000).map(|i| vec![1; 100 + i % 3000]).collect();
    drop(v);
    tcalloc::release_free_memory();
    let s = tcalloc::stats();
    assert_eq!(s.page_heap_free_bytes, 0, "{s}");
    assert_eq!(s.large_cache_bytes, 0, "{s}");
    // This thread's cache was flushed; the test harness's main thread may hold a few objects.
    assert!(s.thread_cache_bytes < 64 << 10, "{s}");
    tcalloc::check_invariants();
}

fn threads_that_come_and_go_leave_nothing_behind() {
    let run = || {
        for _ in 0..10 {
            let handles: Vec<_> = (0..20)
                .map(|i| {
                    std::thread::spawn(move || {
                        let v: Vec<Vec<usize>> = (0..500).map(|j| vec![j; i + j % 64]).collect();
                        v.len()
                    })
                })
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap(), 500);
            }
        }
    };
    run();
    tcalloc::release_free_memory();
    let first = tcalloc::stats();
    let rss_first = resident();
    for _ in 0..5 {
        run();
    }
    tcalloc::release_free_memory();
    let later = tcalloc::stats();
    assert!(
        later.span_records <= first.span_records + 64,
        "span records {} -> {}",
        first.span_records,
        later.span_records
    );
    assert!(later.metadata_bytes <= first.metadata_bytes + MIB, "{first}\n{later}");
    assert!(resident() <= rss_first + 8 * MIB, "RSS grew with thread churn");
    assert!(later.threads <= first.threads);
}

/// Threads that each churn through more than their share keep all caches together under the
/// total cap (64 MiB by default), measured while they are all alive.
fn thread_caches_stay_under_the_total_cap() {
    let threads = 8;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                for round in 0..3 {
                    let v: Vec<Box<[u8; 64]>> =
                        (0..300_000).map(|i| Box::new([(i + t + round) as u8; 64])).collect();
                    drop(v);
                }
                barrier.wait(); // all caches are full now
                barrier.wait(); // the main thread has measured
            })
        })
        .collect();
    barrier.wait();
    let s = tcalloc::stats();
    barrier.wait();
    for h in handles {
        h.join().unwrap();
    }
    assert!(
        s.thread_cache_bytes <= 72 * MIB,
        "{} MiB in thread caches",
        s.thread_cache_bytes / MIB
    );
}

/// Whole batches freed in allocation order park in the transfer caches, but all of them
/// together never hold more than the cap (the default, 16 MiB: the test binaries run without
/// `TCALLOC_MAX_TRANSFER_CACHE_BYTES`). A thread frees six times that in several classes, and
/// is still alive (its cache full) when the main thread measures.
fn transfer_caches_stay_under_their_cap() {
    tcalloc::release_free_memory(); // what earlier phases parked there
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
    let worker = {
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            for size in [64usize, 256, 1024, 4096] {
                let v: Vec<Vec<u8>> = (0..(24 * MIB / size)).map(|i| vec![i as u8; size]).collect();
                drop(v);
            }
            barrier.wait(); // freed
            barrier.wait(); // measured
        })
    };
    barrier.wait();
    let s = tcalloc::stats();
    barrier.wait();
    worker.join().unwrap();
    assert_eq!(s.transfer_cache_limit_bytes, 16 * MIB, "the default cap");
    assert!(
        s.transfer_cache_bytes <= s.transfer_cache_limit_bytes,
        "{} KiB in transfer caches, cap {} KiB",
        s.transfer_cache_bytes >> 10,
        s.transfer_cache_limit_bytes >> 10
    );
    assert!(
        s.transfer_cache_bytes >= s.transfer_cache_limit_bytes / 2,
        "the transfer caches were used: {} KiB of {} KiB",
        s.transfer_cache_bytes >> 10,
        s.transfer_cache_limit_bytes >> 10
    );
    assert!(s.transfer_cache_bytes <= s.central_cache_bytes);
}

#[test]
fn memory_comes_back() {
    large_blocks_go_back_at_once();
    small_object_peak_comes_back(FreeOrder::Interleaved);
    small_object_peak_comes_back(FreeOrder::Random);
    stats_are_exact_for_this_thread();
    release_free_memory_empties_the_page_heap();
    threads_that_come_and_go_leave_nothing_behind();
    thread_caches_stay_under_the_total_cap();
    transfer_caches_stay_under_their_cap();
}
