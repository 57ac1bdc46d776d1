//! The worker side of `tcalloc-bench scaling`: the multi-threaded workloads at any thread
//! count, timed inside the worker process.
//!
//! A worker is called as `worker_<allocator> scaling <workload> <threads> [divisor]`. Every
//! thread does the same fixed amount of work whatever the thread count (weak scaling: 4
//! threads do 4 times the work of 1), so each thread's behaviour, cache and live set are the
//! same at every count, and an allocator that scales keeps its time constant while there are
//! cores for the threads. The work is counted in *pairs*: one allocation and one free. The
//! worker prints
//!
//! ```text
//! result,<pairs>,<seconds>,<checksum>
//! ```
//!
//! where the seconds run from before the first thread is spawned to after the last one is
//! joined (process start-up and exit are not included). With `TCALLOC_BENCH_LOCK_STATS` set
//! (the driver sets it for the tcalloc worker only, whose global allocator tcalloc is), it then
//! prints tcalloc's lock counters, one line per family:
//!
//! ```text
//! lock,<family>,<acquisitions>,<contended>,<slept>
//! ```

use crate::workloads::{self, Rng};
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::Instant;

/// One workload of the scaling comparison.
pub struct ScalingWorkload {
    pub name: &'static str,
    pub what: &'static str,
    /// Alloc+free pairs per thread.
    pub pairs_per_thread: usize,
}

/// The workloads, in report order.
pub const SCALING_WORKLOADS: &[ScalingWorkload] = &[
    ScalingWorkload {
        name: "larson",
        what: "each thread replaces random blocks (16-512 B) in its own live set of 2 000",
        pairs_per_thread: 30_000_000,
    },
    ScalingWorkload {
        name: "churn",
        what: "each thread allocates and frees blocks (8-263 B) through a 64-block window",
        pairs_per_thread: 50_000_000,
    },
    ScalingWorkload {
        name: "ring",
        what: "producer-consumer ring: each thread allocates 64 B blocks and hands them in \
               chunks of 256 to the next thread, which frees them (every free is remote; on 1 \
               thread the ring is the thread itself)",
        pairs_per_thread: 20_000_000,
    },
];

/// Runs `workload` on `threads` threads with each thread's work divided by `divisor`; the
/// pairs done and the checksum. `None` for an unknown workload.
pub fn run<A: GlobalAlloc + Sync>(
    a: &'static A,
    workload: &str,
    threads: usize,
    divisor: usize,
) -> Option<(usize, usize)> {
    let w = SCALING_WORKLOADS.iter().find(|w| w.name == workload)?;
    let threads = threads.max(1);
    let pairs = (w.pairs_per_thread / divisor.max(1)).max(1);
    let sum = match w.name {
        "larson" => workloads::larson(a, threads, 2_000, pairs),
        "churn" => workloads::churn(a, threads, pairs),
        "ring" => ring(a, threads, pairs),
        _ => return None,
    };
    Some((pairs * threads, sum))
}

/// The worker's entry point for `scaling <workload> <threads> [divisor]` (`args` starts at
/// the workload); returns the checksum.
pub fn worker<A: GlobalAlloc + Sync>(a: &'static A, args: &[String]) -> usize {
    let workload = args.first().map(String::as_str).unwrap_or("");
    let threads = args.get(1).and_then(|n| n.parse::<usize>().ok()).unwrap_or(1);
    let divisor = args.get(2).and_then(|n| n.parse::<usize>().ok()).unwrap_or(1);
    let start = Instant::now();
    let Some((pairs, sum)) = run(a, workload, threads, divisor) else {
        let known: Vec<&str> = SCALING_WORKLOADS.iter().map(|w| w.name).collect();
        eprintln!("unknown scaling workload {workload:?}; known: {known:?}");
        std::process::exit(2);
    };
    let seconds = start.elapsed().as_secs_f64();
    println!("result,{pairs},{seconds:.6},{sum}");
    if std::env::var_os("TCALLOC_BENCH_LOCK_STATS").is_some() {
        let stats = tcalloc::stats();
        for (family, l) in stats.locks.named() {
            println!("lock,{family},{},{},{}", l.acquisitions, l.contended, l.slept);
        }
    }
    sum
}

/// Blocks per message of the ring.
const CHUNK: usize = 256;

/// The producer-consumer ring: thread `t` allocates `pairs` 64-byte blocks, sends them in
/// chunks to thread `t + 1` (mod `threads`) and frees every block thread `t - 1` sends it.
/// Sends never block: a thread whose successor's queue is full frees what its own queue holds
/// and tries again, so the ring cannot deadlock.
pub fn ring<A: GlobalAlloc + Sync>(a: &'static A, threads: usize, pairs: usize) -> usize {
    let (mut senders, receivers): (Vec<_>, Vec<_>) =
        (0..threads).map(|_| sync_channel::<Vec<usize>>(16)).unzip();
    // Thread `t` receives on queue `t` and sends on queue `t + 1`.
    senders.rotate_left(1);
    let handles: Vec<_> = senders
        .into_iter()
        .zip(receivers)
        .enumerate()
        .map(|(t, (tx, rx))| std::thread::spawn(move || ring_thread(a, t, pairs, tx, rx)))
        .collect();
    handles.into_iter().map(|h| h.join().expect("a ring thread panicked")).sum()
}

fn ring_thread<A: GlobalAlloc>(
    a: &A,
    t: usize,
    pairs: usize,
    tx: SyncSender<Vec<usize>>,
    rx: Receiver<Vec<usize>>,
) -> usize {
    let l = Layout::from_size_align(64, 8).expect("valid layout");
    let mut rng = Rng::new(t as u64 + 3);
    let (mut sent, mut freed, mut sum) = (0, 0, 0usize);
    let free_arrived = |wait: bool, freed: &mut usize| {
        let chunk = if wait { rx.recv().ok() } else { rx.try_recv().ok() };
        let Some(chunk) = chunk else { return false };
        for p in &chunk {
            // SAFETY: the previous thread allocated `p` with `l` and gave it up.
            unsafe { a.dealloc(black_box(*p as *mut u8), l) };
        }
        *freed += chunk.len();
        true
    };
    while sent < pairs {
        let n = CHUNK.min(pairs - sent);
        let mut chunk = Vec::with_capacity(n);
        for _ in 0..n {
            // SAFETY: a non-zero size.
            let p = unsafe { a.alloc(black_box(l)) };
            assert!(!p.is_null(), "out of memory");
            // SAFETY: `p` holds 64 bytes.
            unsafe { p.write(rng.next_u64() as u8) };
            sum = sum.wrapping_add(p as usize & 0xff);
            chunk.push(p as usize);
        }
        sent += n;
        let mut message = chunk;
        loop {
            match tx.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    message = back;
                    if !free_arrived(false, &mut freed) {
                        std::thread::yield_now();
                    }
                }
                Err(TrySendError::Disconnected(_)) => unreachable!("receivers outlive senders"),
            }
        }
        while free_arrived(false, &mut freed) {}
    }
    drop(tx);
    // The predecessor sends exactly `pairs` blocks.
    while freed < pairs && free_arrived(true, &mut freed) {}
    assert_eq!(freed, pairs, "thread {t} freed {freed} of its predecessor's {pairs} blocks");
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    static SYSTEM: System = System;

    #[test]
    fn every_workload_runs_at_several_thread_counts() {
        for w in SCALING_WORKLOADS {
            for threads in [1, 3] {
                let (pairs, _) = run(&SYSTEM, w.name, threads, 10_000).expect("known");
                assert_eq!(pairs, w.pairs_per_thread / 10_000 * threads, "{}", w.name);
            }
        }
        assert!(run(&SYSTEM, "no-such-workload", 1, 1).is_none());
    }

    #[test]
    fn the_ring_frees_every_block_with_small_queues() {
        // More chunks than the queues hold, on more threads than this machine has cores.
        assert!(ring(&SYSTEM, 5, 50 * CHUNK + 7) > 0);
        assert!(ring(&SYSTEM, 1, 40 * CHUNK) > 0);
    }
}
