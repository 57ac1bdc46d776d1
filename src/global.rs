//! The Rust entry point: [`TcAlloc`], a [`GlobalAlloc`] that routes every call through
//! `router`.
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: tcalloc::TcAlloc = tcalloc::TcAlloc;
//!
//! let v: Vec<u64> = (0..1000).collect();
//! assert_eq!(v.iter().sum::<u64>(), 499_500);
//! ```
//!
//! `alloc` and `dealloc` are `#[inline(always)]` so that the small-size fast path (one table
//! load and a pop or push on the thread's list) is compiled straight into the `__rust_alloc`
//! and `__rust_dealloc` shims. Rust passes the layout back on free, so the class is recomputed
//! from it and no page-map lookup is needed.

use crate::router;
use core::alloc::{GlobalAlloc, Layout};

/// The tcalloc allocator. Install it with `#[global_allocator]`, or call it directly through
/// [`GlobalAlloc`]. It is a unit struct: all state is global or per thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcAlloc;

// SAFETY: every method returns null or a block that satisfies the layout, is not aliased by any
// other live block, and stays valid until it is freed; see `router` for where each comes from.
unsafe impl GlobalAlloc for TcAlloc {
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        router::alloc(layout.size(), layout.align())
    }

    #[inline(always)]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc's contract: `ptr` came from this allocator with `layout`.
        unsafe { router::dealloc_sized(ptr, layout.size(), layout.align()) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        router::alloc_zeroed(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract: `ptr` came from this allocator with `layout`, and
        // `new_size` rounded up to the alignment does not overflow `isize`.
        unsafe { router::realloc_sized(ptr, layout.size(), layout.align(), new_size) }
    }
}
