//! Unit tests of the pool that need its insides: the failed-block search and, through the
//! test-only `fail_after` hook, tcalloc failing at every step of an allocation.

use super::*;
use std::mem::ManuallyDrop;
use std::rc::Rc;

#[test]
fn small_requests_share_blocks_and_large_ones_do_not() {
    let pool = Pool::with_block_size(1024);
    let a = pool.alloc_layout(Layout::from_size_align(100, 8).unwrap());
    let b = pool.alloc_layout(Layout::from_size_align(100, 8).unwrap());
    assert_eq!(pool.stats().blocks, 1);
    assert!(b.as_ptr() as usize >= a.as_ptr() as usize + 100);
    let big = pool.alloc_layout(Layout::from_size_align(5000, 8).unwrap());
    assert_eq!(pool.stats().large_blocks, 1);
    // SAFETY: raw memory, never used again.
    unsafe {
        assert!(pool.free_large(big.as_ptr()));
        assert!(!pool.free_large(big.as_ptr()), "twice is harmless");
        assert!(!pool.free_large(a.as_ptr()), "small blocks are not freed early");
    }
    pool.check_invariants();
}

#[test]
fn drops_run_once_newest_first() {
    let log = Rc::new(std::cell::RefCell::new(Vec::new()));
    struct Noisy(u32, Rc<std::cell::RefCell<Vec<u32>>>);
    impl Drop for Noisy {
        fn drop(&mut self) {
            self.1.borrow_mut().push(self.0);
        }
    }
    let mut pool = Pool::new();
    for i in 0..3 {
        pool.alloc(Noisy(i, log.clone()));
    }
    pool.reset();
    assert_eq!(*log.borrow(), vec![2, 1, 0]);
    pool.alloc(Noisy(7, log.clone()));
    drop(pool);
    assert_eq!(*log.borrow(), vec![2, 1, 0, 7]);
}

#[test]
fn failed_blocks_stop_being_searched() {
    let pool = Pool::with_block_size(512);
    // Each request takes most of a block, so every new block makes the earlier ones fail.
    for _ in 0..20 {
        pool.alloc_layout(Layout::from_size_align(300, 8).unwrap());
    }
    pool.check_invariants();
    assert_eq!(pool.stats().blocks, 20);
    // The first blocks have failed more than MAX_FAILED times: current has moved on.
    assert_ne!(pool.current.get(), pool.first.get());
}

thread_local! {
    static DROPS: Cell<usize> = const { Cell::new(0) };
}

fn drops() -> usize {
    DROPS.with(Cell::get)
}

fn count_drop() {
    DROPS.with(|d| d.set(d.get() + 1));
}

/// A small value that counts its drops (and reads nothing, so that a drop of memory that
/// was never written shows up as a count, not a crash).
#[derive(Clone)]
struct Counted(#[allow(dead_code)] [u64; 3]);
impl Drop for Counted {
    fn drop(&mut self) {
        count_drop();
    }
}

#[derive(Clone)]
struct CountedZst;
impl Drop for CountedZst {
    fn drop(&mut self) {
        count_drop();
    }
}

/// Larger than any small request.
struct CountedLarge(#[allow(dead_code)] [u64; 1024]);
impl Drop for CountedLarge {
    fn drop(&mut self) {
        count_drop();
    }
}

/// Runs `attempt` on a 256-byte-block pool whose first block has `room` bytes left and
/// that gets `blocks_left` more blocks (small or large) from tcalloc before it fails. If
/// the attempt fails, `on_error` values were dropped at once and the reset drops nothing
/// more; if it succeeds, nothing was dropped and the reset drops `on_success`.
fn check_failure(
    what: &str,
    room: usize,
    blocks_left: usize,
    attempt: impl FnOnce(&Pool<'static>) -> bool,
    on_error: usize,
    on_success: usize,
) {
    let mut pool = Pool::with_block_size(256);
    let fill = 256 - BLOCK_HEADER - room;
    if fill > 0 {
        pool.alloc_layout(Layout::from_size_align(fill, 1).unwrap());
    }
    pool.fail_after.set(Some(blocks_left));
    DROPS.with(|d| d.set(0));
    let ok = attempt(&pool);
    pool.check_invariants();
    let case = format!("{what}, {room} bytes left, {blocks_left} more blocks");
    assert_eq!(drops(), if ok { 0 } else { on_error }, "{case}: drops at once");
    pool.fail_after.set(None);
    pool.reset();
    assert_eq!(drops(), if ok { on_success } else { on_error }, "{case}: drops in all");
}

#[test]
fn a_failed_allocation_drops_nothing_that_is_not_there() {
    // Sources for the clones, never dropped themselves.
    let three = ManuallyDrop::new(vec![Counted([1; 3]); 3]);
    let many = ManuallyDrop::new(vec![Counted([2; 3]); 400]); // a large block
    let zsts = ManuallyDrop::new(vec![CountedZst; 1000]);
    let (mut failures, mut successes) = (0, 0);
    let mut tally = |ok: bool| {
        if ok {
            successes += 1
        } else {
            failures += 1
        }
        ok
    };
    for room in 0..=256 - BLOCK_HEADER {
        for blocks in 0..3 {
            let one = |p: &Pool<'static>| tally(p.try_alloc(Counted([3; 3])).is_ok());
            check_failure("a value", room, blocks, one, 1, 1);
            let zst = |p: &Pool<'static>| tally(p.try_alloc(CountedZst).is_ok());
            check_failure("a zero-sized value", room, blocks, zst, 1, 1);
            let large = |p: &Pool<'static>| tally(p.try_alloc(CountedLarge([4; 1024])).is_ok());
            check_failure("a large value", room, blocks, large, 1, 1);
            let slice = |p: &Pool<'static>| tally(p.try_alloc_slice_clone(&three).is_ok());
            check_failure("3 clones", room, blocks, slice, 0, 3);
            let slice = |p: &Pool<'static>| tally(p.try_alloc_slice_clone(&many).is_ok());
            check_failure("400 clones", room, blocks, slice, 0, 400);
            let slice = |p: &Pool<'static>| tally(p.try_alloc_slice_clone(&zsts).is_ok());
            check_failure("1000 zero-sized clones", room, blocks, slice, 0, 1000);
        }
    }
    assert!(failures > 100 && successes > 100, "{failures} failures, {successes} successes");
}
