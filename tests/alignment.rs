//! Alignment after phase changes: a program fills memory with blocks of one size, frees most of
//! them at random, and then asks for aligned blocks of a nearby smaller size. The holes left by
//! the first phase may be reused (a class borrows free objects of a slightly larger class), but
//! never at the cost of the alignment the request asked for.

mod rng;
use rng::Rng;

use std::alloc::{GlobalAlloc, Layout};
use tcalloc::TcAlloc;

/// Allocates `bytes` of blocks of `first`, frees 90% of them at random, then allocates
/// `count` blocks of `second` and checks each one's alignment. Returns how many were
/// misaligned (after freeing everything).
fn misaligned_after_phase(first: Layout, bytes: usize, second: Layout, count: usize) -> usize {
    let n = bytes / first.size();
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        // SAFETY: non-zero size.
        let p = unsafe { TcAlloc.alloc(first) };
        assert!(!p.is_null());
        all.push(p);
    }
    let mut rng = Rng(0x2545_F491_4F6C_DD1D ^ first.size() as u64);
    let mut kept = Vec::with_capacity(n / 8);
    for p in all {
        if rng.next() % 10 == 0 {
            kept.push(p);
        } else {
            // SAFETY: allocated above with `first`, freed once.
            unsafe { TcAlloc.dealloc(p, first) };
        }
    }
    let mut fresh = Vec::with_capacity(count);
    let mut misaligned = 0;
    for _ in 0..count {
        // SAFETY: non-zero size.
        let p = unsafe { TcAlloc.alloc(second) };
        assert!(!p.is_null());
        if p as usize % second.align() != 0 {
            misaligned += 1;
        }
        fresh.push(p);
    }
    for p in fresh {
        // SAFETY: allocated above with `second`.
        unsafe { TcAlloc.dealloc(p, second) };
    }
    for p in kept {
        // SAFETY: allocated above with `first`.
        unsafe { TcAlloc.dealloc(p, first) };
    }
    tcalloc::check_invariants();
    misaligned
}

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

#[test]
fn sixteen_aligned_48_after_a_phase_of_56_byte_blocks() {
    let bad = misaligned_after_phase(layout(56, 8), 32 << 20, layout(48, 16), 200_000);
    assert_eq!(bad, 0, "{bad} of 200000 Layout(48, 16) blocks were not 16-aligned");
}

#[test]
fn cache_line_aligned_64_after_a_phase_of_72_byte_blocks() {
    let bad = misaligned_after_phase(layout(72, 8), 32 << 20, layout(64, 64), 200_000);
    assert_eq!(bad, 0, "{bad} of 200000 Layout(64, 64) blocks were not 64-aligned");
}

#[test]
fn aligned_128_after_a_phase_of_150_byte_blocks() {
    let bad = misaligned_after_phase(layout(150, 8), 32 << 20, layout(128, 128), 100_000);
    assert_eq!(bad, 0, "{bad} of 100000 Layout(128, 128) blocks were not 128-aligned");
}

#[test]
fn page_aligned_4096_after_a_phase_of_4500_byte_blocks() {
    let bad = misaligned_after_phase(layout(4500, 8), 64 << 20, layout(4096, 4096), 5_000);
    assert_eq!(bad, 0, "{bad} of 5000 Layout(4096, 4096) blocks were not 4096-aligned");
}
