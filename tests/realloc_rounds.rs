//! Rounds of `realloc` growth to 1 MiB reuse their pages. Alone in its binary, so that the
//! figures it reads are its own.

use std::alloc::{GlobalAlloc, Layout};
use tcalloc::TcAlloc;

#[global_allocator]
static GLOBAL: TcAlloc = TcAlloc;

/// A program that grows a buffer from nothing to 1 MiB and frees it, over and over, reuses the
/// same pages: the freed 1 MiB block (which only ever got its class by growing in place) goes
/// back to the page heap instead of waiting in a central cache for a 1 MiB request that never
/// comes, while the heap maps new pages for the next round.
#[test]
fn repeated_growth_rounds_reuse_their_pages() {
    const TOP: usize = 1 << 20;
    for _ in 0..40 {
        let mut size = 16;
        // SAFETY: non-zero sizes; each round's block is grown step by step and freed with its
        // last layout.
        unsafe {
            let mut p = TcAlloc.alloc(Layout::from_size_align(size, 8).unwrap());
            assert!(!p.is_null());
            while size < TOP {
                let new_size = (size + 4096).min(TOP);
                p = TcAlloc.realloc(p, Layout::from_size_align(size, 8).unwrap(), new_size);
                assert!(!p.is_null());
                *p.add(new_size - 1) = 1;
                size = new_size;
            }
            TcAlloc.dealloc(p, Layout::from_size_align(size, 8).unwrap());
        }
    }
    let s = tcalloc::stats();
    let top = s.classes.iter().find(|c| c.size >= TOP).expect("a 1 MiB class");
    assert_eq!(top.central_free_objects, 0, "freed 1 MiB blocks parked centrally\n{s}");
    // 40 rounds of up to 1 MiB each, one live at a time: a few MiB of pages, not 40.
    assert!(s.page_heap_bytes <= 12 << 20, "the page heap kept growing\n{s}");
    tcalloc::check_invariants();
}
