//! Locked memory: the kernel refuses `MADV_DONTNEED` on pages locked with `mlock` or
//! `mlockall` (`EINVAL`), so tcalloc cannot give them back. It keeps them backed and carries
//! on; it used to retry the refused span forever, holding the page heap's lock, so that a
//! program that called `mlockall(MCL_CURRENT | MCL_FUTURE)` hung at its first free beyond the
//! reserve (or its first `malloc_trim`).
//!
//! `mlock` of one 64 KiB block needs no privilege (the default `RLIMIT_MEMLOCK` is at least
//! 64 KiB), so this runs anywhere; the test of the page heap alone
//! (`a_refused_release_keeps_the_span_and_returns`) covers the decay and a free beyond the
//! reserve with a refusing kernel of its own.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc;
use std::time::Duration;
use tcalloc::TcAlloc;

static TCALLOC: TcAlloc = TcAlloc;

#[test]
fn releasing_locked_pages_returns() {
    // 64 KiB is a class of one object per span: freed, the block's span goes back to the
    // page heap, locked pages and all, where `release_free_memory` tries to give it back.
    const BYTES: usize = 64 << 10;
    let layout = Layout::from_size_align(BYTES, 4096).unwrap();
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: a fresh block of `BYTES` bytes, written, locked, then freed once; the
        // address is used afterwards only to unlock the range (no access to its contents).
        unsafe {
            let p = TCALLOC.alloc(layout);
            assert!(!p.is_null());
            p.write_bytes(7, BYTES);
            let locked = libc::mlock(p.cast(), BYTES);
            assert_eq!(locked, 0, "mlock: {}", std::io::Error::last_os_error());
            TCALLOC.dealloc(p, layout);
            tcalloc::release_free_memory();
            let stats = tcalloc::stats();
            libc::munlock(p.cast(), BYTES);
            done.send(stats).unwrap();
        }
    });
    let stats = finished
        .recv_timeout(Duration::from_secs(30))
        .expect("release_free_memory loops on a span whose pages are locked");
    assert!(
        stats.page_heap_free_bytes >= BYTES,
        "the locked span stays backed: {} bytes free and backed",
        stats.page_heap_free_bytes
    );
    tcalloc::check_invariants();
}
