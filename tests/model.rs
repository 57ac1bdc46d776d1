//! Model-based randomised test: random operations from several threads, checked against a
//! shadow model of live blocks (`tests/shadow/mod.rs`, shared with the fuzz target).
//!
//! Each of four threads runs a seeded random mix of `alloc`, `alloc_zeroed`, `dealloc` and
//! `realloc` (growing and shrinking across classes, page runs and large blocks), sizes from
//! 1 B to 4 MiB weighted toward small sizes and toward every class, page and large-threshold
//! boundary, alignments from 1 B to 64 KiB, and phase changes (bulk-allocate one layout, free a
//! random 90%, switch to another). Threads hand blocks to each other, so blocks allocated in one
//! thread are freed or reallocated in another, and start short-lived threads whose blocks
//! outlive them. After every operation the blocks it touched are checked for alignment,
//! overlap with every live block of every thread, intact contents, the kept prefix of a
//! realloc, and zeroing.
//!
//! **tcalloc is called directly** through `GlobalAlloc` (`tcalloc::TcAlloc.alloc(..)`), not
//! installed as this binary's global allocator: the model's own bookkeeping (the registry of
//! live blocks, the per-thread vectors, the test harness) then lives in another heap, so a
//! tcalloc bug shows up as a failed check naming the block, never as a corrupted model that
//! fails somewhere unrelated, and the operations tcalloc sees are exactly the generated ones.
//! Under `cargo test --features override` the system allocator of this binary is tcalloc's own
//! `malloc`, so the model's bookkeeping then shares the heap with the blocks under test and the
//! C entry points run interleaved with the Rust ones.
//!
//! Seeds: one fixed seed by default (what CI runs). Locally:
//!
//! ```sh
//! TCALLOC_MODEL_SEEDS=1000 cargo test --test model                    # seeds 1..=1000
//! TCALLOC_MODEL_SEED=42 cargo test --test model                       # only seed 42
//! TCALLOC_MODEL_SEED=42 TCALLOC_MODEL_SEEDS=10 cargo test --test model # seeds 42..=51
//! TCALLOC_MODEL_OPS=200000 cargo test --test model                    # longer runs per seed
//! ```
//!
//! A failure names the seed and the thread. The operations each thread chooses are fixed by the
//! seed; which blocks reach which thread depends on scheduling, so a rerun of a failing seed
//! reproduces the workload, not every interleaving.

mod shadow;

use shadow::{Block, Choices, Counts, Limits, Registry, Rng, Shapes, Worker};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::Mutex;
use std::time::Instant;

const THREADS: usize = 4;
const DEFAULT_SEED: u64 = 1;
const DEFAULT_OPS_PER_THREAD: usize = 25_000;

const LIMITS: Limits = Limits {
    live_blocks: 1_000,
    live_bytes: 24 << 20,
    phase_bytes: 8 << 20,
    phase_blocks: 8_000,
    phase_halvings: 3,
};

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

/// Runs one seed: `THREADS` workers of `ops` operations each, passing blocks around a ring
/// of mailboxes.
fn run_seed(seed: u64, ops: usize) -> Counts {
    let registry = Registry::new();
    let shapes = Shapes::new(shadow::class_sizes(), 1);
    let mailboxes: Vec<Mutex<Vec<Block>>> = (0..THREADS).map(|_| Mutex::default()).collect();
    let mut total = Counts::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (registry, shapes, mailboxes) = (&registry, &shapes, &mailboxes);
                s.spawn(move || {
                    let mut rng = Rng::new(seed.wrapping_mul(0x1000_0000_01B3) ^ t as u64);
                    let context = format!("seed {seed}, thread {t}");
                    let mut w = Worker::new(registry, shapes, LIMITS, context);
                    for op in 0..ops {
                        if op % 16 == 0 {
                            let inbox = std::mem::take(&mut *mailboxes[t].lock().unwrap());
                            for b in inbox {
                                w.adopt(b);
                            }
                        }
                        w.step(&mut rng, true);
                        for b in w.outbox.drain(..) {
                            let to = (t + 1 + rng.below(THREADS as u64 - 1) as usize) % THREADS;
                            mailboxes[to].lock().unwrap().push(b);
                        }
                        if op % 4096 == 4095 {
                            tcalloc::check_invariants();
                        }
                    }
                    w.finish();
                    w.counts
                })
            })
            .collect();
        for h in handles {
            total.add(&h.join().unwrap());
        }
    });
    // Blocks sent to threads that had finished: freed here, on yet another thread.
    let mut last = Worker::new(&registry, &shapes, LIMITS, format!("seed {seed}, main"));
    for mailbox in &mailboxes {
        for b in std::mem::take(&mut *mailbox.lock().unwrap()) {
            last.adopt(b);
        }
    }
    last.finish();
    total.add(&last.counts);
    assert!(registry.is_empty(), "seed {seed}: {} blocks were never freed", registry.len());
    tcalloc::check_invariants();
    total
}

#[test]
fn random_operations_across_threads_match_the_model() {
    let first = env_number("TCALLOC_MODEL_SEED").unwrap_or(DEFAULT_SEED);
    let seeds = env_number("TCALLOC_MODEL_SEEDS").unwrap_or(1);
    let ops = env_number("TCALLOC_MODEL_OPS").map_or(DEFAULT_OPS_PER_THREAD, |n| n as usize);
    for seed in first..first + seeds {
        let start = Instant::now();
        let counts = run_seed(seed, ops);
        eprintln!("seed {seed}: {:.1} s: {counts}", start.elapsed().as_secs_f64());
        // The run reached every path it is meant to test.
        assert!(counts.by_route.iter().all(|&n| n > 0), "seed {seed}: {counts}");
        assert!(counts.zeroed > 0 && counts.realloc_route_changes > 0, "seed {seed}: {counts}");
        assert!(counts.phases > 0 && counts.adopted > 0, "seed {seed}: {counts}");
        if ops >= 10_000 {
            assert!(counts.short_threads > 0, "seed {seed}: {counts}");
        }
    }
}

/// The phase change of known bug 1, as a fixed sequence: many blocks of `Layout(56, 8)`, 90%
/// freed at random, then `Layout(48, 16)` blocks must still be 16-aligned (a class that reuses
/// the holes of the next class up must not hand out its misaligned objects).
#[test]
fn aligned_blocks_after_a_phase_of_a_larger_class() {
    let a = tcalloc::TcAlloc;
    let first = Layout::from_size_align(56, 8).unwrap();
    let second = Layout::from_size_align(48, 16).unwrap();
    let mut rng = Rng::new(7);
    // SAFETY: non-zero sizes; every block is freed below with its own layout.
    unsafe {
        let mut blocks: Vec<*mut u8> = (0..100_000).map(|_| a.alloc(first)).collect();
        assert!(blocks.iter().all(|p| !p.is_null()));
        for i in (1..blocks.len()).rev() {
            blocks.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
        for p in blocks.drain(10_000..) {
            a.dealloc(p, first);
        }
        let aligned: Vec<*mut u8> = (0..50_000).map(|_| a.alloc(second)).collect();
        let misaligned = aligned.iter().filter(|&&p| p as usize % 16 != 0).count();
        let example = aligned.iter().find(|&&p| p as usize % 16 != 0);
        for &p in &aligned {
            a.dealloc(p, second);
        }
        for p in blocks {
            a.dealloc(p, first);
        }
        assert_eq!(
            misaligned, 0,
            "{misaligned} of 50000 Layout(48, 16) blocks misaligned: {example:?}"
        );
    }
}
