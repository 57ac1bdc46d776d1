//! The request loop of `examples/pool_server.rs`, allocating per request from: a `tcalloc::Pool`
//! (reset after each request), one allocation per object with tcalloc and with glibc (each
//! freed at the end of the request), and a `bumpalo::Bump` (reset after each request).
//!
//! `cargo bench -p tcalloc-bench --bench pool`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::hint::black_box;
use std::time::Duration;

/// Where a request's memory comes from.
trait Arena {
    fn bytes(&self, layout: Layout) -> *mut u8;
    fn end_request(&mut self);
}

struct PoolArena(tcalloc::Pool<'static>);

impl Arena for PoolArena {
    fn bytes(&self, layout: Layout) -> *mut u8 {
        self.0.alloc_layout(layout).as_ptr()
    }
    fn end_request(&mut self) {
        self.0.reset();
    }
}

struct BumpArena(bumpalo::Bump);

impl Arena for BumpArena {
    fn bytes(&self, layout: Layout) -> *mut u8 {
        self.0.alloc_layout(layout).as_ptr()
    }
    fn end_request(&mut self) {
        self.0.reset();
    }
}

/// One allocation per object from `A`, all freed when the request ends.
struct PerObject<A: GlobalAlloc + 'static> {
    allocator: &'static A,
    live: RefCell<Vec<(*mut u8, Layout)>>,
}

impl<A: GlobalAlloc> Arena for PerObject<A> {
    fn bytes(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the layouts used are non-zero.
        let p = unsafe { self.allocator.alloc(layout) };
        assert!(!p.is_null());
        self.live.borrow_mut().push((p, layout));
        p
    }
    fn end_request(&mut self) {
        for (p, l) in self.live.get_mut().drain(..) {
            // SAFETY: allocated above with `l`.
            unsafe { self.allocator.dealloc(p, l) };
        }
    }
}

fn copy_str(arena: &impl Arena, s: &str) -> usize {
    let p = arena.bytes(Layout::from_size_align(s.len().max(1), 1).unwrap());
    // SAFETY: `p` holds `s.len()` bytes.
    unsafe { std::ptr::copy_nonoverlapping(s.as_ptr(), p, s.len()) };
    p as usize
}

/// Parses a request into the arena and builds a response there; returns a checksum.
fn handle(arena: &impl Arena, raw: &str) -> usize {
    let mut sum = 0;
    let mut lines = raw.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut pieces = 0;
    for segment in first.split([' ', '/', '?']).filter(|s| !s.is_empty()) {
        sum ^= copy_str(arena, segment);
        pieces += 1;
    }
    let index = arena.bytes(Layout::array::<usize>(pieces.max(1)).unwrap());
    sum ^= index as usize;
    for line in lines {
        if let Some((k, v)) = line.split_once(": ") {
            sum ^= copy_str(arena, k) ^ copy_str(arena, v);
            let pair = arena.bytes(Layout::new::<[usize; 4]>());
            sum ^= pair as usize;
        }
    }
    let response = arena.bytes(Layout::from_size_align(512, 8).unwrap());
    // SAFETY: 512 bytes.
    unsafe { response.write_bytes(b'x', 512) };
    sum ^ response as usize
}

fn requests(arena: &mut impl Arena, raw: &[String]) -> usize {
    let mut sum = 0;
    for r in raw {
        sum ^= handle(arena, r);
        arena.end_request();
    }
    sum
}

static TCALLOC: tcalloc::TcAlloc = tcalloc::TcAlloc;
static GLIBC: System = System;

fn bench(c: &mut Criterion) {
    let raw: Vec<String> = (0..100)
        .map(|n| {
            format!(
                "GET /api/v1/users/{n}/items/{}?page={} HTTP/1.1\r\nHost: example.com\r\n\
                 User-Agent: bench/1.0\r\nAccept: application/json\r\nCookie: s={n:016x}\r\n\
                 X-Request-Id: {n}\r\n\r\n",
                n * 7,
                n % 10
            )
        })
        .collect();
    let mut g = c.benchmark_group("request-loop-100");
    g.throughput(Throughput::Elements(raw.len() as u64));
    g.warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(3));
    let mut pool = PoolArena(tcalloc::Pool::with_block_size(4096));
    g.bench_function("tcalloc-pool", |b| b.iter(|| black_box(requests(&mut pool, &raw))));
    let mut per_tc = PerObject { allocator: &TCALLOC, live: RefCell::new(Vec::with_capacity(64)) };
    g.bench_function("tcalloc-per-object", |b| b.iter(|| black_box(requests(&mut per_tc, &raw))));
    let mut per_glibc = PerObject { allocator: &GLIBC, live: RefCell::new(Vec::with_capacity(64)) };
    g.bench_function("glibc-per-object", |b| b.iter(|| black_box(requests(&mut per_glibc, &raw))));
    let mut bump = BumpArena(bumpalo::Bump::with_capacity(4096));
    g.bench_function("bumpalo", |b| b.iter(|| black_box(requests(&mut bump, &raw))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
