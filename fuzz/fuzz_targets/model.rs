//! Fuzz target: the fuzzer's bytes choose the operations of the model-based test
//! (`tests/shadow/mod.rs`, included below): alloc, alloc_zeroed, dealloc and realloc of sizes
//! from 1 B to 4 MiB and alignments from 1 B to 64 KiB, phase changes, and short-lived threads
//! that free, reallocate and allocate blocks of this thread and exit. Every operation is
//! checked against the model (alignment, overlap, contents, realloc's kept prefix, zeroing);
//! a violation panics, which libFuzzer reports as a crash with the input that caused it.
//!
//! One input runs on one thread at a time (a short-lived thread runs while this one waits for
//! it), so an input replays the same operations every time.
//!
//! ```sh
//! cargo +nightly fuzz run model                       # until stopped
//! cargo +nightly fuzz run model -- -max_total_time=60 # one minute
//! cargo +nightly fuzz run model artifacts/model/crash-…  # replay a crash
//! ```

#![no_main]

#[path = "../../tests/shadow/mod.rs"]
mod shadow;

use libfuzzer_sys::fuzz_target;
use shadow::{Bytes, Choices, Limits, Registry, Shapes, Worker};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;

/// Fewer live blocks than the test's, so that an input runs in milliseconds; phases from a
/// few hundred blocks to ones large enough to leave more than a MiB of holes in a class
/// (tcalloc lets a neighbouring class borrow objects only from that much free space).
const LIMITS: Limits = Limits {
    live_blocks: 256,
    live_bytes: 32 << 20,
    phase_bytes: 4 << 20,
    phase_blocks: 32_768,
    phase_halvings: 7,
};

fn shapes() -> &'static Shapes {
    static SHAPES: OnceLock<Shapes> = OnceLock::new();
    SHAPES.get_or_init(|| Shapes::new(shadow::class_sizes(), 1))
}

fuzz_target!(|data: &[u8]| {
    let registry = Registry::new();
    let mut choices = Bytes::new(data);
    let mut worker = Worker::new(&registry, shapes(), LIMITS, "fuzz input".to_string());
    while !choices.exhausted() {
        worker.step(&mut choices, true);
        // Blocks "sent to another thread" go through a short-lived thread instead.
        let sent = std::mem::take(&mut worker.outbox);
        if !sent.is_empty() {
            // Joined explicitly: the end of a scope only waits for the closure, not for the
            // thread's exit, whose thread-local destructors (tcalloc's cache among them) may
            // then still run while the next input starts. LeakSanitizer once reported glibc's
            // record of that destructor (32 bytes, taken off its list but not yet freed) as
            // leaked, after 25 minutes of fuzzing.
            std::thread::scope(|s| {
                s.spawn(|| {
                    let mut other =
                        Worker::new(&registry, shapes(), LIMITS, "fuzz input / receiver".into());
                    for b in sent {
                        other.adopt(b);
                    }
                    other.finish();
                })
                .join()
                .expect("the receiving thread panicked");
            });
        }
    }
    worker.finish();
    assert!(registry.is_empty());
    // The allocator's own invariants (every list walked: slow on a large heap) every 100th input.
    static INPUTS: AtomicU64 = AtomicU64::new(0);
    if INPUTS.fetch_add(1, Relaxed) % 100 == 0 {
        tcalloc::check_invariants();
    }
});
