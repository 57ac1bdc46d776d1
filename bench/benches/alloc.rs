//! Criterion benchmarks: every workload against tcalloc, glibc malloc (`System`), mimalloc and
//! jemalloc, each called through `GlobalAlloc` directly, side by side in one run.
//!
//! `cargo bench -p tcalloc-bench --bench alloc` (about 10 minutes); add a filter such as
//! `-- pairs/64` to run part of it.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::alloc::System;
use std::hint::black_box;
use std::time::Duration;
use tcalloc_bench::workloads::{self, Growth, Order};

static TCALLOC: tcalloc::TcAlloc = tcalloc::TcAlloc;
static GLIBC: System = System;
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
static JEMALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Runs `$body` once per allocator, with `$a` bound to the allocator, as benches of `$group`
/// named after the allocator with parameter `$param`.
macro_rules! each_allocator {
    ($group:expr, $param:expr, |$a:ident| $body:expr) => {{
        each_allocator!(@one $group, $param, "tcalloc", &TCALLOC, |$a| $body);
        each_allocator!(@one $group, $param, "glibc", &GLIBC, |$a| $body);
        each_allocator!(@one $group, $param, "mimalloc", &MIMALLOC, |$a| $body);
        each_allocator!(@one $group, $param, "jemalloc", &JEMALLOC, |$a| $body);
    }};
    (@one $group:expr, $param:expr, $name:literal, $alloc:expr, |$a:ident| $body:expr) => {{
        let $a = $alloc;
        $group.bench_function(BenchmarkId::new($name, $param), |b| b.iter(|| black_box($body)));
    }};
}

fn pairs(c: &mut Criterion) {
    let mut g = c.benchmark_group("pairs");
    g.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    for size in [16usize, 64, 256, 1024, 4096, 32 << 10, 256 << 10, 1 << 20, 8 << 20] {
        let n = if size >= 256 << 10 { 100 } else { 1000 };
        g.throughput(Throughput::Elements(n as u64));
        each_allocator!(g, size.to_string(), |a| workloads::pairs(a, black_box(size), n));
    }
    g.finish();
}

fn batches(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch-10k");
    g.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(10_000));
    for (name, order) in [("lifo", Order::Lifo), ("fifo", Order::Fifo), ("random", Order::Random)] {
        each_allocator!(g, name, |a| workloads::batch(a, order, 10_000, 1));
    }
    g.finish();
}

fn threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("threads");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    g.throughput(Throughput::Elements(200_000));
    each_allocator!(g, "larson-1t", |a| workloads::larson(a, 1, 2_000, 200_000));
    g.throughput(Throughput::Elements(400_000));
    each_allocator!(g, "larson-2t", |a| workloads::larson(a, 2, 2_000, 200_000));
    g.throughput(Throughput::Elements(200_000));
    each_allocator!(g, "producer-consumer", |a| workloads::producer_consumer(a, 200_000));
    for t in [1usize, 2, 4] {
        g.throughput(Throughput::Elements(200_000 * t as u64));
        each_allocator!(g, format!("churn-{t}t"), |a| workloads::churn(a, t, 200_000));
    }
    g.finish();
}

fn realloc(c: &mut Criterion) {
    let mut g = c.benchmark_group("realloc-16B-to-1MiB");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20);
    each_allocator!(g, "doubling", |a| workloads::realloc_growth(a, Growth::Doubling, 1));
    each_allocator!(g, "1KiB-steps", |a| workloads::realloc_growth(a, Growth::Steps, 1));
    g.finish();
}

criterion_group!(benches, pairs, batches, threads, realloc);
criterion_main!(benches);
