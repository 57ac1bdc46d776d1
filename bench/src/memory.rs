//! Memory workloads: resident memory over time through phases of growth and shrinkage, and
//! the fragmentation case. Run by the workers as `memory-phases` and `fragmentation`; each
//! prints `t_ms,rss_kib,phase` lines (and `result,...` lines) that `tcalloc-bench memory`
//! collects.

use crate::workloads::Rng;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Resident memory of this process in KiB (from `/proc/self/statm`).
pub fn rss_kib() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4
}

const MIB: usize = 1 << 20;

/// Phases of a long-running server's life: grow, shrink, grow bigger, drop and idle, a
/// smaller burst, drop and idle. Small blocks of mixed sizes; a sampler thread records
/// resident memory every 20 ms.
pub fn phases() -> usize {
    let phase = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let sampler = {
        let (phase, done) = (phase.clone(), done.clone());
        std::thread::spawn(move || {
            let mut lines = String::with_capacity(64 << 10);
            while !done.load(Ordering::Relaxed) {
                let t = start.elapsed().as_millis();
                lines.push_str(&format!("{t},{},{}\n", rss_kib(), phase.load(Ordering::Relaxed)));
                std::thread::sleep(Duration::from_millis(20));
            }
            lines
        })
    };
    let mut rng = Rng::new(99);
    let mut live: Vec<Box<[u8]>> = Vec::new();
    let mut live_bytes = 0usize;
    let mut grow_to = |live: &mut Vec<Box<[u8]>>, live_bytes: &mut usize, target: usize| {
        while *live_bytes < target {
            let size = 16 + rng.below(1008) as usize;
            live.push(vec![size as u8; size].into_boxed_slice());
            *live_bytes += size;
        }
    };
    let shrink_to =
        |live: &mut Vec<Box<[u8]>>, live_bytes: &mut usize, target: usize, seed: u64| {
            let mut r = Rng::new(seed);
            while *live_bytes > target && !live.is_empty() {
                let i = r.below(live.len() as u64) as usize;
                *live_bytes -= live.swap_remove(i).len();
            }
        };
    let idle = |ms: u64| {
        // Light activity while idle: a few small allocations every 10 ms.
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            black_box(vec![0u8; 100]);
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let steps: [(usize, usize); 6] = [(256, 0), (32, 1), (512, 0), (0, 2), (128, 0), (0, 3)];
    for (k, (target_mib, kind)) in steps.into_iter().enumerate() {
        phase.store(k + 1, Ordering::Relaxed);
        match kind {
            0 => grow_to(&mut live, &mut live_bytes, target_mib * MIB),
            1 => shrink_to(&mut live, &mut live_bytes, target_mib * MIB, k as u64),
            _ => {
                shrink_to(&mut live, &mut live_bytes, 0, k as u64);
                live = Vec::new();
            }
        }
        idle(if kind >= 2 { 1500 } else { 300 });
    }
    done.store(true, Ordering::Relaxed);
    print!("{}", sampler.join().unwrap());
    live_bytes
}

/// Fills memory with 64-byte objects, frees 90% at random, then allocates objects of another
/// size; reports resident memory after each step.
pub fn fragmentation(second_size: usize) -> usize {
    let mut rng = Rng::new(5);
    let n = 512 * MIB / 64;
    let mut first: Vec<Box<[u8; 64]>> = (0..n).map(|i| Box::new([i as u8; 64])).collect();
    println!("result,filled,{}", rss_kib());
    let mut kept = Vec::with_capacity(n / 9);
    for b in first.drain(..) {
        if rng.below(10) == 0 {
            kept.push(b);
        }
    }
    drop(first);
    println!("result,freed 90%,{}", rss_kib());
    let m = 256 * MIB / second_size;
    let second: Vec<Box<[u8]>> =
        (0..m).map(|i| vec![i as u8; second_size].into_boxed_slice()).collect();
    println!("result,then 256 MiB of {second_size}-byte objects,{}", rss_kib());
    black_box(&second);
    kept.len() + second.len()
}
