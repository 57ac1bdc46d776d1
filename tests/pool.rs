//! `tcalloc::Pool`: alignment, no overlap against a model of the live blocks and values,
//! values dropped exactly once (at reset, at drop, or when their large block is freed early),
//! reuse after reset with bounded memory, large blocks freed (early or with the pool),
//! `free_large` twice harmless, the `try_` variants, panics in drops and clones, drops that
//! use the pool, zero-sized types. What the compiler must reject is in the `compile_fail`
//! doc tests of `src/pool/mod.rs`.

use proptest::prelude::*;
use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use tcalloc::{Pool, PoolStats};

/// Ids of the values dropped, in order.
type DropLog = Rc<RefCell<Vec<u64>>>;

/// A value that logs its id when dropped — clones only (`armed`), so that the sources of
/// `alloc_slice_clone` log nothing — and can be told to panic in its drop or its clone.
#[derive(Debug)]
struct Tracked {
    id: u64,
    log: DropLog,
    armed: bool,
    panic_on_drop: bool,
    panic_on_clone: bool,
}

impl Tracked {
    fn new(id: u64, log: &DropLog) -> Tracked {
        Tracked { id, log: log.clone(), armed: true, panic_on_drop: false, panic_on_clone: false }
    }

    /// A source for `alloc_slice_clone`: its clones log, it does not.
    fn source(id: u64, log: &DropLog) -> Tracked {
        let mut t = Tracked::new(id, log);
        t.armed = false;
        t
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Tracked {
        assert!(!self.panic_on_clone, "clone {} panics", self.id);
        Tracked { armed: true, log: self.log.clone(), ..*self }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.armed {
            self.log.borrow_mut().push(self.id);
            assert!(!self.panic_on_drop, "drop {} panics", self.id);
        }
    }
}

fn take(log: &DropLog) -> Vec<u64> {
    std::mem::take(&mut *log.borrow_mut())
}

/// One pool operation of the model test.
#[derive(Clone, Debug)]
enum Op {
    /// Raw memory of this size and alignment (power-of-two exponent).
    Layout(usize, u32),
    /// A copied string of this length.
    Str(usize),
    /// This many cloned values with a drop (from 24 bytes on, 171 of them are a large block).
    Values(usize),
    /// Free the n-th large block handed out (if any), early.
    FreeLarge(usize),
    /// Reset the pool.
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1usize..600, 0u32..7).prop_map(|(s, a)| Op::Layout(s, a)),
        2 => (4000usize..70_000, 0u32..13).prop_map(|(s, a)| Op::Layout(s, a)),
        3 => (0usize..300).prop_map(Op::Str),
        3 => (0usize..400).prop_map(Op::Values),
        2 => (0usize..8).prop_map(Op::FreeLarge),
        1 => Just(Op::Reset),
    ]
}

/// A live block of the model: address, size, the byte it was filled with.
type Live = Vec<(usize, usize, u8)>;

fn check_no_overlap(live: &Live) {
    let mut v: Vec<(usize, usize)> = live.iter().map(|&(a, s, _)| (a, s)).collect();
    v.sort_unstable();
    for w in v.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "blocks overlap: {w:x?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn blocks_are_aligned_distinct_and_intact(block in 256usize..20_000, ops in prop::collection::vec(op(), 1..400)) {
        let log = DropLog::default();
        let mut pool = Pool::with_block_size(block);
        let mut live: Live = Vec::new();
        let mut large: Vec<usize> = Vec::new();
        // Values waiting for their drop: id, and the large block holding them (0: none).
        let mut values: Vec<(u64, usize)> = Vec::new();
        let mut next_id = 0;
        for (k, op) in ops.into_iter().enumerate() {
            let fill = k as u8;
            match op {
                Op::Layout(size, a) => {
                    let layout = Layout::from_size_align(size, 1 << a).unwrap();
                    let p = pool.alloc_layout(layout).as_ptr();
                    prop_assert_eq!(p as usize % (1 << a), 0);
                    // SAFETY: `p` holds `size` bytes of the pool.
                    unsafe { p.write_bytes(fill, size) };
                    if size > pool.max_small() || (1 << a) > 16 {
                        large.push(p as usize);
                    }
                    live.push((p as usize, size, fill));
                }
                Op::Str(len) => {
                    let text: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
                    let s = pool.alloc_str(&text);
                    prop_assert_eq!(&*s, text.as_str());
                    s.make_ascii_uppercase();
                    if len > pool.max_small() {
                        large.push(s.as_ptr() as usize);
                    }
                    // Not tracked for contents (uppercase letters), only for overlap.
                    live.push((s.as_ptr() as usize, len, 0xFF));
                }
                Op::Values(n) => {
                    let src: Vec<Tracked> =
                        (0..n as u64).map(|i| Tracked::source(next_id + i, &log)).collect();
                    let clones = pool.alloc_slice_clone(&src);
                    let bytes = std::mem::size_of_val(clones);
                    let at = clones.as_ptr() as usize;
                    prop_assert!(clones.iter().zip(&src).all(|(c, s)| c.id == s.id));
                    let in_large = if bytes > pool.max_small() { at } else { 0 };
                    if in_large != 0 {
                        large.push(at);
                    }
                    values.extend((next_id..next_id + n as u64).map(|id| (id, in_large)));
                    next_id += n as u64;
                    live.push((at, bytes, 0xFF));
                }
                Op::FreeLarge(n) => {
                    if let Some(&p) = large.get(n) {
                        // SAFETY: the model drops every pointer into the block.
                        unsafe {
                            prop_assert!(pool.free_large(p as *const u8));
                            prop_assert!(!pool.free_large(p as *const u8), "twice is harmless");
                        }
                        large.remove(n);
                        live.retain(|b| b.0 != p);
                        // The values in the block are dropped now, newest first.
                        let mut expected: Vec<u64> =
                            values.iter().filter(|v| v.1 == p).map(|v| v.0).collect();
                        expected.reverse();
                        values.retain(|v| v.1 != p);
                        prop_assert_eq!(take(&log), expected);
                    }
                }
                Op::Reset => {
                    pool.reset();
                    live.clear();
                    large.clear();
                    let expected: Vec<u64> = values.drain(..).rev().map(|v| v.0).collect();
                    prop_assert_eq!(take(&log), expected);
                    prop_assert_eq!(pool.stats().large_blocks, 0);
                }
            }
            check_no_overlap(&live.iter().filter(|b| b.1 > 0).cloned().collect());
            pool.check_invariants();
            prop_assert!(log.borrow().is_empty(), "no value dropped early");
        }
        for &(addr, size, fill) in &live {
            if fill != 0xFF && size > 0 {
                // SAFETY: live blocks of the pool.
                let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, size) };
                prop_assert!(bytes.iter().all(|&b| b == fill), "block {:#x} was overwritten", addr);
            }
        }
        prop_assert_eq!(pool.stats().large_blocks, large.len());
        drop(pool);
        let expected: Vec<u64> = values.iter().rev().map(|v| v.0).collect();
        prop_assert_eq!(take(&log), expected);
    }
}

#[test]
fn values_are_dropped_exactly_once_newest_first() {
    let log = DropLog::default();
    let mut pool = Pool::new();
    for round in 0..3u64 {
        for i in 0..1000 {
            let t = pool.alloc(Tracked::new(i, &log));
            assert_eq!(t.id, i);
        }
        pool.alloc_slice_clone(&[Tracked::source(1001, &log), Tracked::source(1002, &log)]);
        assert!(log.borrow().is_empty());
        pool.reset();
        let mut expected: Vec<u64> = vec![1002, 1001];
        expected.extend((0..1000).rev());
        assert_eq!(take(&log), expected, "round {round}: every value once, newest first");
    }
    pool.alloc(Tracked::new(7, &log));
    drop(pool);
    assert_eq!(take(&log), vec![7]);
    // Values that need no drop register nothing.
    let pool = Pool::new();
    let x = pool.alloc(5u64);
    *x += 1;
    assert_eq!(*x, 6);
    assert_eq!(pool.stats().bytes_used, 8);
}

/// The first program, made legal: a large block holding values with a drop, freed
/// early. Its values are dropped then, once; the reset after must not run their drops again
/// on the freed memory.
#[test]
fn free_large_drops_the_values_in_the_block_once() {
    let log = DropLog::default();
    let mut pool = Pool::with_block_size(4096);
    pool.alloc(Tracked::new(1, &log));
    let src: Vec<Tracked> = (100..400).map(|id| Tracked::source(id, &log)).collect();
    let big = pool.alloc_slice_clone(&src).as_ptr(); // 300 values: a large block
    pool.alloc(Tracked::new(2, &log));
    let one = pool.alloc([Tracked::new(3, &log), Tracked::new(4, &log), Tracked::new(5, &log)]);
    let lone = pool.alloc_slice_clone(&[Tracked::source(6, &log)]).as_ptr();
    assert_eq!(one.len(), 3);
    assert_eq!(pool.stats().large_blocks, 1, "the second slice is small");
    drop(src);
    assert!(log.borrow().is_empty());
    // SAFETY: `big`'s slice is not used again.
    assert!(unsafe { pool.free_large(big.cast()) });
    assert_eq!(take(&log), (100..400).rev().collect::<Vec<_>>(), "dropped once, newest first");
    // SAFETY: as above.
    assert!(!unsafe { pool.free_large(big.cast()) }, "twice is harmless");
    // SAFETY: `lone` is in a small block, which is not freed.
    assert!(!unsafe { pool.free_large(lone.cast()) });
    assert!(log.borrow().is_empty());
    pool.check_invariants();
    // A large single value is freed with its drop too.
    struct Big(#[allow(dead_code)] [u8; 10_000], #[allow(dead_code)] Tracked);
    let b = pool.alloc(Big([0; 10_000], Tracked::new(9, &log))) as *mut Big;
    // SAFETY: the `&mut Big` is gone.
    assert!(unsafe { pool.free_large(b.cast()) });
    assert_eq!(take(&log), vec![9]);
    pool.check_invariants();
    pool.reset();
    // Newest first; the array is one value, which drops its elements in order.
    assert_eq!(take(&log), vec![6, 3, 4, 5, 2, 1], "only the values still in the pool");
}

/// The third bug: `try_alloc` registered the drop before writing the value, and when
/// the record could not be allocated it dropped memory that was never written (the value was
/// dropped a second time on the way out). A pool whose blocks cannot be allocated fails at
/// the record of a zero-sized value (which needs no memory of its own).
#[test]
fn a_failed_try_alloc_drops_the_value_once_and_keeps_nothing() {
    thread_local! {
        static DROPS: Cell<usize> = const { Cell::new(0) };
    }
    #[derive(Clone)]
    struct Zst;
    impl Drop for Zst {
        fn drop(&mut self) {
            DROPS.with(|d| d.set(d.get() + 1));
        }
    }
    let log = DropLog::default();
    for block in [usize::MAX, 1 << 62] {
        let pool = Pool::with_block_size(block); // no block can be had
        DROPS.with(|d| d.set(0));
        assert!(pool.try_alloc(Zst).is_err());
        assert_eq!(DROPS.with(Cell::get), 1, "block size {block:#x}: the value, once");
        assert!(pool.try_alloc_slice_clone(&[Zst, Zst]).is_err());
        assert_eq!(DROPS.with(Cell::get), 3, "the two sources, no clone");
        assert!(pool.try_alloc(Tracked::new(1, &log)).is_err());
        assert!(pool.try_alloc(Tracked::new(2, &log)).is_err());
        assert!(pool.try_alloc(Box::new(3)).is_err());
        assert!(pool.try_alloc_layout(Layout::new::<u8>()).is_err());
        assert!(pool.try_alloc_slice_copy(&[0u8; 100_000]).is_err(), "no room for the record");
        assert_eq!(take(&log), vec![1, 2]);
        // Requests that need no memory at all still succeed.
        assert!(pool.try_alloc(()).is_ok());
        assert!(pool.try_alloc_str("").is_ok());
        pool.check_invariants();
        drop(pool);
        assert_eq!(DROPS.with(Cell::get), 3);
        assert!(log.borrow().is_empty(), "nothing was left in the pool to drop");
    }
}

#[test]
fn a_drop_that_panics_does_not_stop_the_others() {
    let log = DropLog::default();
    let panicking = |id| {
        let mut t = Tracked::new(id, &log);
        t.panic_on_drop = true;
        t
    };
    let mut pool = Pool::with_block_size(1024);
    pool.alloc(Tracked::new(1, &log));
    pool.alloc(panicking(2));
    pool.alloc_slice_clone(&[Tracked::source(3, &log), Tracked::source(4, &log)]);
    pool.alloc(Tracked::new(5, &log));
    pool.alloc_layout(Layout::from_size_align(100_000, 8).unwrap());
    let result = catch_unwind(AssertUnwindSafe(|| pool.reset()));
    assert!(result.is_err(), "the panic goes on");
    assert_eq!(take(&log), vec![5, 4, 3, 2, 1], "every value dropped once");
    let s = pool.stats();
    assert_eq!((s.bytes_used, s.large_blocks), (0, 0), "the pool was reset all the same");
    pool.check_invariants();
    // In a slice, the other elements are still dropped.
    let mut src = [Tracked::source(6, &log), Tracked::source(7, &log), Tracked::source(8, &log)];
    src[1].panic_on_drop = true;
    pool.alloc_slice_clone(&src);
    pool.alloc(Tracked::new(9, &log));
    let result = catch_unwind(AssertUnwindSafe(|| pool.reset()));
    assert!(result.is_err());
    assert_eq!(take(&log), vec![9, 8, 7, 6]);
    // At the pool's drop, and at `free_large`.
    pool.alloc(Tracked::new(10, &log));
    let big: Vec<Tracked> = (11..211).map(|id| Tracked::source(id, &log)).collect();
    let block = pool.alloc_slice_clone(&big);
    block[100].panic_on_drop = true;
    let block = block.as_ptr();
    // SAFETY: the slice is not used again.
    let result = catch_unwind(AssertUnwindSafe(|| unsafe { pool.free_large(block.cast()) }));
    assert!(result.is_err());
    assert_eq!(take(&log), (11..211).rev().collect::<Vec<_>>());
    assert_eq!(pool.stats().large_blocks, 0, "the block was freed all the same");
    pool.check_invariants();
    pool.alloc(panicking(211));
    pool.alloc(Tracked::new(212, &log));
    let result = catch_unwind(AssertUnwindSafe(move || drop(pool)));
    assert!(result.is_err());
    assert_eq!(take(&log), vec![212, 211, 10]);
    drop(big);
}

#[test]
fn a_clone_that_panics_drops_the_clones_made_so_far() {
    let log = DropLog::default();
    let mut src: Vec<Tracked> = (0..10).map(|id| Tracked::source(id, &log)).collect();
    src[4].panic_on_clone = true;
    let mut pool = Pool::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        pool.alloc_slice_clone(&src);
    }));
    assert!(result.is_err());
    assert_eq!(take(&log), vec![3, 2, 1, 0], "the four clones made, once");
    pool.check_invariants();
    pool.reset();
    assert!(log.borrow().is_empty(), "the pool kept no record of them");
}

/// A value whose drop allocates from the pool and frees other blocks, run by `free_large`
/// (the only call that runs drops through `&self`); and one that cannot reach its pool
/// during `reset`, which needs `&mut`.
#[test]
fn drops_may_use_the_pool_where_the_borrow_rules_allow() {
    struct UsesPool {
        pool: Rc<Pool<'static>>,
        log: DropLog,
        next_id: Rc<Cell<u64>>,
        armed: bool,
    }
    impl Clone for UsesPool {
        fn clone(&self) -> Self {
            let (pool, log, next_id) = (self.pool.clone(), self.log.clone(), self.next_id.clone());
            UsesPool { pool, log, next_id, armed: true }
        }
    }
    impl Drop for UsesPool {
        fn drop(&mut self) {
            if self.armed {
                let id = self.next_id.replace(self.next_id.get() + 1);
                self.pool.alloc(Tracked::new(id, &self.log));
                let other = self.pool.alloc_slice_copy(&[1u8; 20_000]).as_ptr();
                // SAFETY: `other` is not used again.
                assert!(unsafe { self.pool.free_large(other) });
                self.pool.check_invariants();
            }
        }
    }
    let log = DropLog::default();
    let pool = Rc::new(Pool::with_block_size(1024));
    let next_id = Rc::new(Cell::new(1000));
    let src: Vec<UsesPool> = (0..300)
        .map(|_| {
            let (pool, log, next_id) = (pool.clone(), log.clone(), next_id.clone());
            UsesPool { pool, log, next_id, armed: false }
        })
        .collect();
    let block = pool.alloc_slice_clone(&src).as_ptr();
    drop(src);
    assert_eq!(Rc::strong_count(&pool), 301);
    // SAFETY: the slice is not used again; `pool` is reached through the test's own `Rc`.
    assert!(unsafe { pool.free_large(block.cast()) });
    assert_eq!(Rc::strong_count(&pool), 1);
    assert_eq!(log.borrow().len(), 0, "the values made by the drops are still in the pool");
    pool.check_invariants();
    assert_eq!(pool.stats().large_blocks, 0);
    drop(pool);
    assert_eq!(take(&log), (1000..1300).rev().collect::<Vec<_>>());

    struct ReachesPool(Rc<RefCell<Pool<'static>>>, Rc<Cell<bool>>);
    impl Drop for ReachesPool {
        fn drop(&mut self) {
            self.1.set(self.0.try_borrow().is_err());
        }
    }
    let pool = Rc::new(RefCell::new(Pool::new()));
    let busy = Rc::new(Cell::new(false));
    pool.borrow().alloc(ReachesPool(pool.clone(), busy.clone()));
    pool.borrow_mut().reset();
    assert!(busy.get(), "during the reset the pool is mutably borrowed");
    assert_eq!(Rc::strong_count(&pool), 1);
}

#[test]
fn zero_sized_types() {
    let log = DropLog::default();
    let pool = Pool::with_block_size(256);
    // Any number of zero-sized values, the largest slice there can be included, take no room.
    let units: &[()] =
        // SAFETY: a slice of zero-sized values may have any length at a dangling pointer.
        unsafe { std::slice::from_raw_parts(std::ptr::NonNull::dangling().as_ptr(), usize::MAX) };
    assert_eq!(pool.alloc_slice_copy(units).len(), usize::MAX);
    assert_eq!(pool.alloc_slice_clone(&units[..1000]).len(), 1000);
    #[derive(Clone, Copy)]
    #[repr(align(4096))]
    struct Aligned;
    let a = pool.alloc(Aligned) as *mut Aligned;
    assert_eq!(a as usize % 4096, 0);
    assert_eq!(pool.stats().bytes_used, 0);
    // Zero-sized values with a drop are dropped, once each.
    #[derive(Clone)]
    struct Zst(DropLog);
    impl Drop for Zst {
        fn drop(&mut self) {
            self.0.borrow_mut().push(0);
        }
    }
    let src = [Zst(log.clone()), Zst(log.clone())];
    pool.alloc_slice_clone(&src);
    pool.alloc(Zst(log.clone()));
    drop(src);
    take(&log);
    drop(pool);
    assert_eq!(take(&log).len(), 3);
}

#[test]
fn a_pool_reset_thousands_of_times_does_not_grow() {
    let mut pool = Pool::with_block_size(4096);
    let mut first: Option<PoolStats> = None;
    for round in 0..5000 {
        for i in 0..50 {
            pool.alloc_str(&"x".repeat(i * 3 + round % 7));
            pool.alloc(vec![i; 3]); // needs drop
        }
        let big = pool.alloc_layout(Layout::from_size_align(20_000, 8).unwrap());
        if round % 2 == 0 {
            // SAFETY: raw memory, not used again.
            assert!(unsafe { pool.free_large(big.as_ptr()) });
        }
        let s = pool.stats();
        match first {
            None => first = Some(s),
            Some(f) => assert_eq!(s.blocks, f.blocks, "round {round}: the pool grew"),
        }
        pool.reset();
        assert_eq!(pool.stats().large_blocks, 0);
        assert_eq!(pool.stats().bytes_used, 0);
    }
    pool.check_invariants();
}

/// The process-wide figures it compares move with whatever else the process allocates, so the
/// check runs alone, in a child process of this test binary: beside the other tests of this
/// file (a few MiB each, in parallel threads) it failed now and then.
#[test]
fn large_blocks_are_freed_with_the_pool_and_early() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_frees_large_blocks", "--ignored", "--test-threads=1"])
        .args(["--nocapture"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the child failed:\n{stdout}{stderr}");
    assert!(stdout.contains("1 passed"), "the child did not run:\n{stdout}{stderr}");
}

/// Run by `large_blocks_are_freed_with_the_pool_and_early`, alone in its process.
#[test]
#[ignore = "run alone by large_blocks_are_freed_with_the_pool_and_early"]
fn child_frees_large_blocks() {
    let before = tcalloc::stats().large_bytes + tcalloc::stats().allocated_bytes;
    let pool = Pool::new();
    let blocks: Vec<usize> = (0..10)
        .map(|_| {
            pool.alloc_layout(Layout::from_size_align(2 << 20, 4096).unwrap()).as_ptr() as usize
        })
        .collect();
    assert_eq!(pool.stats().large_blocks, 10);
    assert_eq!(pool.stats().large_bytes, 20 << 20);
    // SAFETY: raw memory, not used again.
    unsafe {
        assert!(pool.free_large(blocks[3] as *const u8));
        assert!(!pool.free_large(blocks[3] as *const u8));
        assert!(!pool.free_large((blocks[4] + 8) as *const u8), "inside a block");
        assert!(!pool.free_large(std::ptr::null()));
    }
    assert_eq!(pool.stats().large_blocks, 9);
    let during = tcalloc::stats().allocated_bytes;
    assert!(during >= 18 << 20);
    drop(pool);
    let after = tcalloc::stats().large_bytes + tcalloc::stats().allocated_bytes;
    assert!(after < before + (2 << 20), "large blocks freed with the pool: {before} -> {after}");
}

#[test]
fn small_requests_are_aligned_and_unaligned_ones_pack() {
    let pool = Pool::with_block_size(4096);
    let a = pool.alloc_layout(Layout::from_size_align(3, 1).unwrap()).as_ptr() as usize;
    let b = pool.alloc_layout(Layout::from_size_align(3, 1).unwrap()).as_ptr() as usize;
    assert_eq!(b, a + 3, "unaligned requests are packed");
    for align in [2usize, 4, 8, 16, 32, 64, 4096, 1 << 20] {
        let p = pool.alloc_layout(Layout::from_size_align(10, align).unwrap());
        assert_eq!(p.as_ptr() as usize % align, 0, "align {align}");
    }
    // Alignment above the block size, for a value with a drop.
    #[repr(align(8192))]
    struct Aligned(Vec<u8>);
    let small = Pool::with_block_size(256);
    let v = small.alloc(Aligned(vec![1, 2, 3]));
    assert_eq!(v as *mut Aligned as usize % 8192, 0);
    assert_eq!(v.0, [1, 2, 3]);
    assert_eq!(small.stats().large_blocks, 1);
    let z = pool.alloc_layout(Layout::from_size_align(0, 8).unwrap());
    assert_eq!(z.as_ptr() as usize % 8, 0);
    let words = pool.alloc_slice_copy(&[1u32, 2, 3]);
    words[1] = 20;
    assert_eq!(words, &[1, 20, 3]);
}

#[test]
fn try_variants_report_impossible_requests() {
    let pool = Pool::new();
    let huge = Layout::from_size_align(isize::MAX as usize - 4096, 4096).unwrap();
    assert_eq!(pool.try_alloc_layout(huge), Err(tcalloc::AllocError));
    assert!(pool.try_alloc(1u8).is_ok());
    assert!(pool.try_alloc_str("fine").is_ok());
    assert_eq!(tcalloc::AllocError.to_string(), "memory pool: out of memory");
    pool.check_invariants();
}
