//! The allocation workloads, written once and run against every allocator.
//!
//! Each workload is generic over `A: GlobalAlloc` and calls the allocator through that trait
//! directly, so the criterion benches can put four allocators side by side in one process, and
//! the whole-program workers can pass their `#[global_allocator]`. Every pointer goes through
//! `std::hint::black_box` and every block is written, so the compiler cannot remove an
//! allocation. Random choices come from a seeded xorshift generator: every run and every
//! allocator sees the same sequence.
//!
//! Each function returns a checksum that callers feed to `black_box`.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// xorshift64: small, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("valid layout")
}

/// Allocates, writes and returns a block (panics on out of memory: a benchmark that runs out
/// is broken).
#[inline]
fn alloc_touch<A: GlobalAlloc>(a: &A, l: Layout, value: u8) -> *mut u8 {
    // SAFETY: every layout used here has a non-zero size.
    let p = unsafe { a.alloc(black_box(l)) };
    assert!(!p.is_null(), "out of memory for {l:?}");
    // SAFETY: `p` is a live block of `l.size() >= 1` bytes.
    unsafe { p.write(value) };
    black_box(p)
}

#[inline]
fn free<A: GlobalAlloc>(a: &A, p: *mut u8, l: Layout) {
    // SAFETY: callers pass blocks they allocated from `a` with `l` and no longer use.
    unsafe { a.dealloc(black_box(p), l) }
}

/// `n` alloc+free pairs of `size` bytes.
pub fn pairs<A: GlobalAlloc>(a: &A, size: usize, n: usize) -> usize {
    let l = layout(size);
    let mut sum = 0;
    for i in 0..n {
        let p = alloc_touch(a, l, i as u8);
        sum += p as usize & 0xff;
        free(a, p, l);
    }
    sum
}

/// Order in which [`batch`] frees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    Lifo,
    Fifo,
    Random,
}

/// `rounds` times: `n` allocations of mixed small sizes (16..=512 B), then all freed in
/// `order`.
pub fn batch<A: GlobalAlloc>(a: &A, order: Order, n: usize, rounds: usize) -> usize {
    let mut blocks: Vec<(*mut u8, Layout)> = Vec::with_capacity(n);
    let mut rng = Rng::new(17);
    let mut sum = 0;
    for _ in 0..rounds {
        for i in 0..n {
            let l = layout(16 + (i * 8) % 497);
            blocks.push((alloc_touch(a, l, i as u8), l));
        }
        match order {
            Order::Lifo => blocks.reverse(),
            Order::Fifo => {}
            Order::Random => {
                for i in (1..blocks.len()).rev() {
                    blocks.swap(i, rng.below(i as u64 + 1) as usize);
                }
            }
        }
        for (p, l) in blocks.drain(..) {
            sum += p as usize & 0xff;
            free(a, p, l);
        }
    }
    sum
}

/// Larson-like: each thread keeps `live` blocks of mixed small sizes and replaces a random
/// one `ops` times.
pub fn larson<A: GlobalAlloc + Sync>(
    a: &'static A,
    threads: usize,
    live: usize,
    ops: usize,
) -> usize {
    run_threads(threads, move |t| {
        let mut rng = Rng::new(t as u64 + 101);
        let mut slots: Vec<(*mut u8, Layout)> = (0..live)
            .map(|_| {
                let l = layout(16 + rng.below(497) as usize);
                (alloc_touch(a, l, 1), l)
            })
            .collect();
        let mut sum = 0;
        for _ in 0..ops {
            let i = rng.below(live as u64) as usize;
            let (p, l) = slots[i];
            free(a, p, l);
            let l = layout(16 + rng.below(497) as usize);
            let p = alloc_touch(a, l, 2);
            sum += p as usize & 0xff;
            slots[i] = (p, l);
        }
        for (p, l) in slots {
            free(a, p, l);
        }
        sum
    })
}

/// Thread-local churn: each of `threads` threads allocates and frees blocks of mixed small
/// sizes through a small rotating window, `ops` operations each.
pub fn churn<A: GlobalAlloc + Sync>(a: &'static A, threads: usize, ops: usize) -> usize {
    run_threads(threads, move |t| {
        let mut rng = Rng::new(t as u64 + 7);
        const WINDOW: usize = 64;
        let mut window: [(*mut u8, Layout); WINDOW] = [(std::ptr::null_mut(), layout(8)); WINDOW];
        let mut sum = 0;
        for i in 0..ops {
            let slot = &mut window[i % WINDOW];
            if !slot.0.is_null() {
                free(a, slot.0, slot.1);
            }
            let l = layout(8 + rng.below(256) as usize);
            let p = alloc_touch(a, l, i as u8);
            sum += p as usize & 0xff;
            *slot = (p, l);
        }
        for (p, l) in window {
            if !p.is_null() {
                free(a, p, l);
            }
        }
        sum
    })
}

/// Producer/consumer: one thread allocates `n` 64-byte blocks and hands them over in chunks
/// through a channel; the other frees them all (every free is remote).
pub fn producer_consumer<A: GlobalAlloc + Sync>(a: &'static A, n: usize) -> usize {
    const CHUNK: usize = 256;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<usize>>(64);
    let consumer = std::thread::spawn(move || {
        let l = layout(64);
        let mut freed = 0;
        for chunk in rx {
            for p in chunk {
                free(a, p as *mut u8, l);
                freed += 1;
            }
        }
        freed
    });
    let l = layout(64);
    let mut chunk = Vec::with_capacity(CHUNK);
    for i in 0..n {
        chunk.push(alloc_touch(a, l, i as u8) as usize);
        if chunk.len() == CHUNK {
            tx.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))).unwrap();
        }
    }
    tx.send(chunk).unwrap();
    drop(tx);
    consumer.join().unwrap()
}

/// How [`realloc_growth`] grows a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Growth {
    /// Doubling, as a `Vec` does.
    Doubling,
    /// By 1 KiB at a time.
    Steps,
}

/// `rounds` times: a block grown with `realloc` from 16 B to 1 MiB, its last byte written
/// after each step.
pub fn realloc_growth<A: GlobalAlloc>(a: &A, growth: Growth, rounds: usize) -> usize {
    let mut sum = 0;
    for _ in 0..rounds {
        let mut size = 16;
        let mut p = alloc_touch(a, layout(size), 1);
        while size < 1 << 20 {
            let new_size = match growth {
                Growth::Doubling => size * 2,
                Growth::Steps => size + 1024,
            }
            .min(1 << 20);
            // SAFETY: `p` was allocated with `layout(size)`; the new size is non-zero.
            p = unsafe { a.realloc(black_box(p), layout(size), new_size) };
            assert!(!p.is_null());
            // SAFETY: `p` holds `new_size` bytes.
            unsafe { p.add(new_size - 1).write(size as u8) };
            p = black_box(p);
            size = new_size;
        }
        // SAFETY: `p` holds `size` bytes.
        sum += unsafe { *p } as usize;
        free(a, p, layout(size));
    }
    sum
}

/// Ordinary std code on the global allocator: a word-count map, a B-tree index, string
/// formatting and sorting, nested vectors. (Only meaningful in the whole-program workers,
/// where the global allocator is the one under test.)
pub fn std_collections(scale: usize) -> usize {
    use std::collections::{BTreeMap, HashMap};
    let mut sum = 0;
    for round in 0..scale {
        let words: Vec<String> =
            (0..50_000).map(|i| format!("w{}-{}", (i * 7919 + round) % 20_011, i % 13)).collect();
        let mut counts: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, w) in words.iter().enumerate() {
            counts.entry(w.as_str()).or_default().push(i);
        }
        let mut index: BTreeMap<String, usize> = BTreeMap::new();
        for (w, v) in &counts {
            index.insert(w.to_uppercase(), v.len());
        }
        let mut sorted: Vec<&String> = words.iter().collect();
        sorted.sort_unstable();
        let nested: Vec<Vec<u32>> = (0..2_000).map(|i| (0..i % 64).collect()).collect();
        sum +=
            counts.len() + index.len() + sorted.len() + nested.iter().map(Vec::len).sum::<usize>();
        sum += black_box(&index).values().take(10).sum::<usize>();
    }
    sum
}

/// Binary trees (the classic allocator benchmark): build and walk trees of boxed nodes of
/// depth 4..=`max_depth`, many small trees and a few large ones, on the global allocator.
pub fn binary_trees(max_depth: u32) -> usize {
    struct Node {
        left: Option<Box<Node>>,
        right: Option<Box<Node>>,
    }
    fn make(depth: u32) -> Box<Node> {
        if depth == 0 {
            Box::new(Node { left: None, right: None })
        } else {
            Box::new(Node { left: Some(make(depth - 1)), right: Some(make(depth - 1)) })
        }
    }
    fn check(n: &Node) -> usize {
        1 + n.left.as_deref().map_or(0, check) + n.right.as_deref().map_or(0, check)
    }
    let long_lived = make(max_depth);
    let mut sum = 0;
    let mut depth = 4;
    while depth <= max_depth {
        let iterations = 1 << (max_depth - depth + 4);
        for _ in 0..iterations {
            sum += check(&make(depth));
        }
        depth += 2;
    }
    sum + check(black_box(&long_lived))
}

/// A JSON-like document tree: build nested maps, arrays and strings, serialise it to text,
/// walk it, drop it; on the global allocator.
pub fn json_tree(rounds: usize) -> usize {
    use std::collections::BTreeMap;
    enum Value {
        Num(f64),
        Str(String),
        List(Vec<Value>),
        Map(BTreeMap<String, Value>),
    }
    fn build(i: usize, depth: u32) -> Value {
        if depth == 0 {
            return if i.is_multiple_of(2) {
                Value::Num(i as f64 * 0.5)
            } else {
                Value::Str(format!("s{i}"))
            };
        }
        if i.is_multiple_of(3) {
            Value::List((0..6).map(|k| build(i * 7 + k, depth - 1)).collect())
        } else {
            Value::Map((0..5).map(|k| (format!("key{k}"), build(i * 5 + k, depth - 1))).collect())
        }
    }
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Num(n) => out.push_str(&n.to_string()),
            Value::Str(s) => {
                out.push('"');
                out.push_str(s);
                out.push('"');
            }
            Value::List(items) => {
                out.push('[');
                for item in items {
                    write(item, out);
                    out.push(',');
                }
                out.push(']');
            }
            Value::Map(map) => {
                out.push('{');
                for (k, item) in map {
                    out.push_str(k);
                    out.push(':');
                    write(item, out);
                    out.push(',');
                }
                out.push('}');
            }
        }
    }
    let mut sum = 0;
    for round in 0..rounds {
        let doc = build(round, 7);
        let mut text = String::new();
        write(&doc, &mut text);
        sum += text.len();
    }
    sum
}

/// Runs `f(thread index)` on `threads` threads and sums the results.
fn run_threads(threads: usize, f: impl Fn(usize) -> usize + Send + Sync + 'static) -> usize {
    let f = Arc::new(f);
    let total = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (f, total) = (f.clone(), total.clone());
            std::thread::spawn(move || {
                total.fetch_add(f(t), Ordering::Relaxed);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    total.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    static SYSTEM: System = System;

    #[test]
    fn workloads_run_and_balance() {
        assert!(pairs(&SYSTEM, 64, 100) > 0);
        for order in [Order::Lifo, Order::Fifo, Order::Random] {
            assert!(batch(&SYSTEM, order, 10_000, 1) > 0);
        }
        assert!(larson(&SYSTEM, 2, 100, 1_000) > 0);
        assert!(churn(&SYSTEM, 2, 1_000) > 0);
        assert_eq!(producer_consumer(&SYSTEM, 1_000), 1_000);
        assert!(realloc_growth(&SYSTEM, Growth::Doubling, 1) > 0);
        assert!(realloc_growth(&SYSTEM, Growth::Steps, 1) > 0);
        assert!(std_collections(1) > 0);
        assert_eq!(binary_trees(6), (1 << 7) - 1 + (1 << 6) * 31 + (1 << 4) * 127);
        assert!(json_tree(1) > 0);
    }
}
