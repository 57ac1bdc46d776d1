//! Edge cases of the `GlobalAlloc` API: every alignment, realloc across classes and into and
//! out of the large path, `alloc_zeroed` on reused memory, impossible sizes.

use std::alloc::{GlobalAlloc, Layout};
use tcalloc::TcAlloc;

#[global_allocator]
static GLOBAL: TcAlloc = TcAlloc;

const A: TcAlloc = TcAlloc;

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

/// Allocates, checks alignment, writes every byte, and frees.
fn round_trip(size: usize, align: usize) {
    let l = layout(size, align);
    // SAFETY: non-zero size.
    let p = unsafe { A.alloc(l) };
    assert!(!p.is_null(), "alloc({size}, {align}) failed");
    assert_eq!(p as usize % align, 0, "alloc({size}, {align}) = {p:p}");
    // SAFETY: `p` is a live block of `size` bytes.
    unsafe {
        p.write_bytes(0xA5, size);
        assert_eq!(*p.add(size - 1), 0xA5);
        A.dealloc(p, l);
    }
}

#[test]
fn every_power_of_two_alignment_up_to_64_mib() {
    for shift in 0..=26 {
        let align = 1usize << shift;
        for size in [1, 7, 8, 9, 100, 1000, 4096, 5000, 65536, 300_000, 1 << 20, 3 << 20] {
            round_trip(size, align);
        }
    }
}

#[test]
fn many_small_aligned_blocks_do_not_overlap() {
    let mut blocks = Vec::new();
    for i in 0..5000usize {
        let align = 1 << (i % 15);
        let size = 1 + (i * 37) % 3000;
        let l = layout(size, align);
        // SAFETY: non-zero size.
        let p = unsafe { A.alloc(l) };
        assert_eq!(p as usize % align, 0);
        // SAFETY: live block.
        unsafe { p.write_bytes(i as u8, size) };
        blocks.push((p, l, i as u8));
    }
    let mut ranges: Vec<_> = blocks.iter().map(|(p, l, _)| (*p as usize, l.size())).collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "overlap: {:x?}", w);
    }
    for (p, l, v) in blocks {
        // SAFETY: live block written above.
        unsafe {
            assert!(std::slice::from_raw_parts(p, l.size()).iter().all(|&b| b == v));
            A.dealloc(p, l);
        }
    }
}

#[test]
fn realloc_across_classes_and_the_large_path() {
    for align in [1usize, 8, 16, 64, 4096, 16384, 1 << 20] {
        let mut size = 1usize;
        let mut l = layout(size, align);
        // SAFETY: non-zero size.
        let mut p = unsafe { A.alloc(l) };
        // SAFETY: live block; byte i holds (i % 251) | 1 throughout.
        unsafe { *p = 1 };
        let steps = [3, 17, 200, 1025, 9000, 200_000, 300_000, 1 << 20, 5 << 20, 40 << 20, 100, 1];
        for &new_size in &steps {
            let old_size = size;
            // SAFETY: `p` was allocated with `l`; `new_size > 0`.
            let q = unsafe { A.realloc(p, l, new_size) };
            assert!(!q.is_null(), "realloc {old_size} -> {new_size} (align {align})");
            assert_eq!(q as usize % align, 0, "realloc keeps the alignment");
            // SAFETY: `q` holds at least min(old, new) bytes of the old contents.
            unsafe {
                let kept = old_size.min(new_size);
                for i in [0, kept / 2, kept - 1] {
                    assert_eq!(
                        *q.add(i),
                        (i % 251) as u8 | 1,
                        "byte {i} after {old_size}->{new_size}"
                    );
                }
                for i in 0..new_size {
                    *q.add(i) = (i % 251) as u8 | 1;
                }
            }
            p = q;
            size = new_size;
            l = layout(size, align);
        }
        // SAFETY: allocated (last) with `l`.
        unsafe { A.dealloc(p, l) };
    }
}

#[test]
fn realloc_within_a_class_stays_in_place() {
    let l = layout(100, 8);
    // SAFETY: non-zero size.
    unsafe {
        let p = A.alloc(l);
        let q = A.realloc(p, l, 104);
        assert_eq!(p, q, "100 and 104 bytes share a class");
        A.dealloc(q, layout(104, 8));
    }
}

#[test]
fn alloc_zeroed_is_zero_on_reused_memory() {
    for size in [8, 24, 100, 1000, 5000, 70_000, 262_144, 300_000, 1 << 20, 3 << 20] {
        for align in [8, 64, 32768] {
            let l = layout(size, align);
            // Dirty blocks of this layout and free them, so the next ones reuse them.
            let dirty: Vec<_> = (0..8)
                .map(|_| {
                    // SAFETY: non-zero size.
                    let p = unsafe { A.alloc(l) };
                    // SAFETY: live block.
                    unsafe { p.write_bytes(0xFF, size) };
                    p
                })
                .collect();
            for p in dirty {
                // SAFETY: allocated with `l`.
                unsafe { A.dealloc(p, l) };
            }
            for _ in 0..8 {
                // SAFETY: non-zero size.
                let p = unsafe { A.alloc_zeroed(l) };
                // SAFETY: live block of `size` bytes.
                let bytes = unsafe { std::slice::from_raw_parts(p, size) };
                assert!(bytes.iter().all(|&b| b == 0), "alloc_zeroed({size}, {align}) dirty");
                // SAFETY: allocated with `l`.
                unsafe { A.dealloc(p, l) };
            }
        }
    }
}

#[test]
fn impossible_sizes_return_null() {
    let max = isize::MAX as usize;
    for (size, align) in [
        (max - 4095, 4096),
        (max / 2, 8),
        (1 << 62, 8),
        (4 << 60, 1), // 4 EiB
        (1 << 40, 1 << 30),
        (max - (1 << 20) + 1, 1 << 20),
    ] {
        let l = layout(size, align);
        // SAFETY: non-zero size.
        unsafe {
            assert!(A.alloc(l).is_null(), "alloc({size:#x}, {align})");
            assert!(A.alloc_zeroed(l).is_null(), "alloc_zeroed({size:#x}, {align})");
        }
    }
    // A failed realloc leaves the block alone.
    let l = layout(64, 8);
    // SAFETY: non-zero size; `p` is live until freed at the end.
    unsafe {
        let p = A.alloc(l);
        p.write_bytes(7, 64);
        assert!(A.realloc(p, l, isize::MAX as usize - 100).is_null());
        assert!(std::slice::from_raw_parts(p, 64).iter().all(|&b| b == 7));
        A.dealloc(p, l);
    }
    // And std's fallible APIs see the failure as an error, not a crash.
    let mut v: Vec<u8> = Vec::new();
    assert!(v.try_reserve(1 << 62).is_err());
}

#[test]
fn zero_sized_requests_through_std_work() {
    // GlobalAlloc never sees size 0 from std collections, but raw callers may pass it.
    let l = layout(0, 1);
    // SAFETY: size-0 layouts are handled like 1 byte.
    unsafe {
        let p = A.alloc(l);
        assert!(!p.is_null());
        A.dealloc(p, l);
    }
    let v: Vec<()> = vec![(); 1000];
    assert_eq!(v.len(), 1000);
}

#[test]
fn invariants_hold_after_mixed_work() {
    let mut keep = Vec::new();
    for i in 0..20_000usize {
        let v = vec![i as u8; i % 700 + 1];
        if i % 3 == 0 {
            keep.push(v);
        }
    }
    keep.truncate(100);
    tcalloc::check_invariants();
}
