//! The lock-contention statistic: sixty-four threads that hand each other their 64-byte blocks
//! (every free is a free of another thread's block) must make the central lists' locks of the
//! 64-byte class wait, and `tcalloc::stats()` must count it.
//!
//! The work runs in a child process (this test binary again, as in `tests/environment.rs`),
//! so that the thread caches can be made small through `TCALLOC_MAX_TOTAL_THREAD_CACHE_BYTES`
//! (more refills and flushes reach the central lists) and the counters start from a process
//! that nothing else has used. Sixty-four threads is twice the most shards a class has, so
//! that some threads share a shard, and its locks, on any machine.

use std::alloc::{alloc, dealloc, Layout};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: tcalloc::TcAlloc = tcalloc::TcAlloc;

const CHILD: &str = "TCALLOC_CONTENTION_TEST_CHILD";
const THREADS: usize = 64;
const BLOCKS: usize = 4096;
const ROUNDS: usize = 20;

fn layout() -> Layout {
    Layout::from_size_align(64, 8).unwrap()
}

/// One pass of the exchange: each thread allocates `BLOCKS` blocks `ROUNDS` times and puts
/// them in the next thread's slot, freeing what another thread left there.
fn exchange_blocks(slots: &[Mutex<Vec<usize>>]) {
    std::thread::scope(|scope| {
        for t in 0..THREADS {
            scope.spawn(move || {
                for round in 0..ROUNDS {
                    let mine: Vec<usize> = (0..BLOCKS)
                        .map(|i| {
                            // SAFETY: a non-zero size.
                            let p = unsafe { alloc(layout()) };
                            assert!(!p.is_null());
                            // SAFETY: `p` holds 64 bytes.
                            unsafe { p.write((i + round) as u8) };
                            p as usize
                        })
                        .collect();
                    let theirs =
                        std::mem::replace(&mut *slots[(t + 1) % THREADS].lock().unwrap(), mine);
                    for p in theirs {
                        // SAFETY: another thread allocated `p` with `layout()` and gave it up.
                        unsafe { dealloc(p as *mut u8, layout()) };
                    }
                }
            });
        }
    });
}

fn class_contended(stats: &tcalloc::Stats) -> u64 {
    stats.classes.iter().find(|c| c.size == 64).expect("a 64-byte class").lock_contended
}

#[test]
#[ignore = "run by `central_lists_count_contention`, in a child process with small thread caches"]
fn child_exchanges_blocks() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let before = tcalloc::stats();
    let slots: Vec<Mutex<Vec<usize>>> = (0..THREADS).map(|_| Mutex::new(Vec::new())).collect();
    // Contention needs two threads in one critical section at once, which a busy machine may
    // take a while to arrange: repeat the exchange until it happened (statistics are read
    // only between passes, so their own lock acquisitions cannot contend).
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut passes = 0;
    let after = loop {
        exchange_blocks(&slots);
        passes += 1;
        let now = tcalloc::stats();
        if class_contended(&now) > class_contended(&before) || Instant::now() > deadline {
            break now;
        }
    };
    for slot in &slots {
        for p in slot.lock().unwrap().drain(..) {
            // SAFETY: allocated with `layout()` by a worker that has exited.
            unsafe { dealloc(p as *mut u8, layout()) };
        }
    }
    eprintln!("{passes} passes\n{after}");
    let family = |s: &tcalloc::Stats| {
        let mut sum = s.locks.central_lists;
        sum += s.locks.transfer_caches;
        sum
    };
    let (was, is) = (family(&before), family(&after));
    assert!(
        class_contended(&after) > class_contended(&before),
        "no contended acquisition of the 64-byte class's locks in {passes} passes: {was:?} -> {is:?}"
    );
    assert!(
        is.contended > was.contended && is.acquisitions > was.acquisitions,
        "{was:?} -> {is:?}"
    );
    assert!(is.contended <= is.acquisitions && is.slept <= is.contended, "{is:?}");
    let per_class: u64 = after.classes.iter().map(|c| c.lock_contended).sum();
    assert_eq!(per_class, is.contended, "the classes' share adds up to the two families");
}

#[test]
fn central_lists_count_contention() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_exchanges_blocks", "--ignored", "--test-threads=1", "--nocapture"])
        .env(CHILD, "1")
        .env("TCALLOC_MAX_TOTAL_THREAD_CACHE_BYTES", "1m")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child failed:\n{stderr}");
    assert!(stderr.contains("passes"), "the child did not run:\n{stderr}");
    for needle in ["locks", "acquisitions", "contended", "central lists", "transfer caches"] {
        assert!(stderr.contains(needle), "the report lacks {needle:?}:\n{stderr}");
    }
}
