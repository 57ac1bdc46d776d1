//! `tcalloc::Pool`: alignment, no overlap against a model of the live blocks, values dropped
//! exactly once, reuse after reset with bounded memory, large blocks freed (early or with the
//! pool), `free_large` twice harmless, and the `try_` variants.

use proptest::prelude::*;
use std::alloc::Layout;
use std::cell::RefCell;
use std::rc::Rc;
use tcalloc::{Pool, PoolStats};

/// One pool operation of the model test.
#[derive(Clone, Debug)]
enum Op {
    /// Raw memory of this size and alignment (power-of-two exponent).
    Layout(usize, u32),
    /// A copied string of this length.
    Str(usize),
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
        let mut pool = Pool::with_block_size(block);
        let mut live: Live = Vec::new();
        let mut large: Vec<usize> = Vec::new();
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
                Op::FreeLarge(n) => {
                    if let Some(&p) = large.get(n) {
                        prop_assert!(pool.free_large(p as *const u8));
                        prop_assert!(!pool.free_large(p as *const u8), "twice is harmless");
                        large.remove(n);
                        live.retain(|b| b.0 != p);
                    }
                }
                Op::Reset => {
                    pool.reset();
                    live.clear();
                    large.clear();
                    prop_assert_eq!(pool.stats().large_blocks, 0);
                }
            }
            check_no_overlap(&live.iter().filter(|b| b.1 > 0).cloned().collect());
            pool.check_invariants();
        }
        for &(addr, size, fill) in &live {
            if fill != 0xFF && size > 0 {
                // SAFETY: live blocks of the pool.
                let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, size) };
                prop_assert!(bytes.iter().all(|&b| b == fill), "block {:#x} was overwritten", addr);
            }
        }
        prop_assert_eq!(pool.stats().large_blocks, large.len());
    }
}

#[test]
fn values_are_dropped_exactly_once_newest_first() {
    let log: Rc<RefCell<Vec<u32>>> = Rc::default();
    struct Tracked(u32, Rc<RefCell<Vec<u32>>>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.1.borrow_mut().push(self.0);
        }
    }
    impl Clone for Tracked {
        fn clone(&self) -> Self {
            Tracked(self.0 + 100, self.1.clone())
        }
    }
    let mut pool = Pool::new();
    for round in 0..3u32 {
        log.borrow_mut().clear();
        for i in 0..1000 {
            let t = pool.alloc(Tracked(i, log.clone()));
            assert_eq!(t.0, i);
        }
        let originals = [Tracked(1, log.clone()), Tracked(2, log.clone())];
        pool.alloc_slice_clone(&originals);
        drop(originals);
        log.borrow_mut().clear();
        pool.reset();
        let dropped = log.borrow().clone();
        let mut expected: Vec<u32> = vec![102, 101];
        expected.extend((0..1000).rev());
        assert_eq!(dropped, expected, "round {round}: every value once, newest first");
    }
    pool.alloc(Tracked(7, log.clone()));
    log.borrow_mut().clear();
    drop(pool);
    assert_eq!(*log.borrow(), vec![7]);
    // Values that need no drop register nothing.
    let pool = Pool::new();
    let x = pool.alloc(5u64);
    *x += 1;
    assert_eq!(*x, 6);
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
            assert!(pool.free_large(big.as_ptr()));
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

#[test]
fn large_blocks_are_freed_with_the_pool_and_early() {
    let before = tcalloc::stats().large_bytes + tcalloc::stats().allocated_bytes;
    let pool = Pool::new();
    let blocks: Vec<usize> = (0..10)
        .map(|_| {
            pool.alloc_layout(Layout::from_size_align(2 << 20, 4096).unwrap()).as_ptr() as usize
        })
        .collect();
    assert_eq!(pool.stats().large_blocks, 10);
    assert_eq!(pool.stats().large_bytes, 20 << 20);
    assert!(pool.free_large(blocks[3] as *const u8));
    assert!(!pool.free_large(blocks[3] as *const u8));
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
}
