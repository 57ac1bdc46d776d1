//! Fragmentation: fill memory with 64-byte objects, free 90% of them at random, then allocate
//! objects of another size. Where the new size is close enough (at most a third smaller), the
//! holes are reused and resident memory barely grows; every block stays intact and apart.
//! One test function, because resident memory is a property of the whole process.

mod rng;
use rng::Rng;

use std::alloc::{GlobalAlloc, Layout};
use tcalloc::TcAlloc;

#[global_allocator]
static GLOBAL: TcAlloc = TcAlloc;

const MIB: usize = 1 << 20;

fn resident() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4096
}

#[test]
fn holes_left_by_one_size_are_reused_by_a_nearby_size() {
    let first = Layout::from_size_align(64, 8).unwrap();
    let n = 256 * MIB / 64;
    let mut kept: Vec<*mut u8> = Vec::with_capacity(n / 8);
    let mut all: Vec<*mut u8> = Vec::with_capacity(n);
    for i in 0..n {
        // SAFETY: non-zero size.
        let p = unsafe { TcAlloc.alloc(first) };
        // SAFETY: a live 64-byte block.
        unsafe { p.write_bytes(i as u8, 64) };
        all.push(p);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for p in all.drain(..) {
        if rng.next() % 10 == 0 {
            kept.push(p);
        } else {
            // SAFETY: allocated above with `first`, freed once.
            unsafe { TcAlloc.dealloc(p, first) };
        }
    }
    drop(all);
    let before = resident();
    let second = Layout::from_size_align(48, 8).unwrap();
    let m = 128 * MIB / 48;
    let mut fresh = Vec::with_capacity(m);
    for i in 0..m {
        // SAFETY: non-zero size.
        let p = unsafe { TcAlloc.alloc(second) };
        // SAFETY: a live 48-byte block.
        unsafe { p.write_bytes(!(i as u8), 48) };
        fresh.push(p);
    }
    let grown = resident().saturating_sub(before);
    assert!(
        grown < 32 * MIB,
        "128 MiB of 48-byte objects grew RSS by {} MiB instead of reusing the holes",
        grown / MIB
    );
    // No block overlaps another, and the survivors of the first phase are intact.
    let mut ranges: Vec<(usize, usize)> = kept.iter().map(|&p| (p as usize, 64)).collect();
    ranges.extend(fresh.iter().map(|&p| (p as usize, 48)));
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "blocks overlap: {w:x?}");
    }
    for (i, &p) in fresh.iter().enumerate() {
        // SAFETY: live 48-byte blocks written above.
        let bytes = unsafe { std::slice::from_raw_parts(p, 48) };
        assert!(bytes.iter().all(|&b| b == !(i as u8)));
    }
    for &p in &kept {
        // SAFETY: live 64-byte blocks; each was filled with one byte value.
        let bytes = unsafe { std::slice::from_raw_parts(p, 64) };
        assert!(bytes.iter().all(|&b| b == bytes[0]));
    }
    for p in fresh {
        // SAFETY: allocated with `second`.
        unsafe { TcAlloc.dealloc(p, second) };
    }
    for p in kept {
        // SAFETY: allocated with `first`.
        unsafe { TcAlloc.dealloc(p, first) };
    }
    tcalloc::check_invariants();
}
