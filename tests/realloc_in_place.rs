//! `realloc` of a block in a one-object class (64 KiB to 1 MiB) grows the block's span into
//! the free pages after it instead of copying. Alone in its binary, so that the page heap
//! starts empty and the pages after the first big block are free.

use std::alloc::{GlobalAlloc, Layout};
use tcalloc::TcAlloc;

#[global_allocator]
static GLOBAL: TcAlloc = TcAlloc;

#[test]
fn growth_through_the_one_object_classes_keeps_the_address() {
    let sizes = [70_000usize, 150_000, 300_000, 600_000, 1_000_000];
    let l = Layout::from_size_align(sizes[0], 8).unwrap();
    // SAFETY: non-zero sizes; the block is grown step by step and freed with its last layout.
    unsafe {
        let p = TcAlloc.alloc(l);
        assert!(!p.is_null());
        for i in 0..sizes[0] {
            *p.add(i) = (i % 251) as u8;
        }
        let mut old = l;
        for &size in &sizes[1..] {
            let q = TcAlloc.realloc(p, old, size);
            assert_eq!(q, p, "growing to {size} bytes moved the block");
            *q.add(size - 1) = 7;
            old = Layout::from_size_align(size, 8).unwrap();
        }
        assert!((0..sizes[0]).all(|i| *p.add(i) == (i % 251) as u8), "contents changed");
        // The one span moved from the first class to the last one.
        let s = tcalloc::stats();
        let spans_of =
            |size: usize| s.classes.iter().find(|c| c.size >= size).map_or(0, |c| c.spans);
        assert_eq!(spans_of(70_000), 0, "{s}");
        assert_eq!(spans_of(1_000_000), 1, "{s}");
        tcalloc::check_invariants();
        TcAlloc.dealloc(p, old);
    }
    tcalloc::check_invariants();
}
