//! Intrusive singly linked lists of free objects: the first word of a free object links to
//! the next one. Thread caches, transfer caches and spans all hold their free objects this way,
//! so a free object costs no metadata.
//!
//! **Protected links** (in the C library and with the `hardened` feature: see [`CHECKS`]). A
//! link is never stored as a plain pointer: the word holds `next ^ SECRET`, where `SECRET` is
//! a per-process random value whose top 16 bits are never all zero ([`init_secret`]). Every
//! read decodes the word and checks that the result is a plausible object address: below 2^48
//! and 8-aligned ([`LINK_MASK`] bits clear). So:
//!
//! - a program that writes into a freed object (use after free, a buffer overrun) turns its
//!   link into garbage, and the next pop aborts with `tcalloc: heap corruption …` instead of
//!   handing out the written value as a block; a written pointer or zero never passes, since
//!   its top bits decode to the secret's;
//! - a live object whose first word's top 16 bits decode to zero, as a link's do, is almost
//!   certainly on a free list ([`looks_free`]): the check behind double-free detection. Random
//!   data passes with a probability of 2^-16; a user-space pointer, ASCII text, a non-negative
//!   integer or a negative one above -2^48 never does (the key's top bit is set and its top 16
//!   bits are never all ones), while a value with the top bit set (a negative double, say)
//!   passes for about one process in 2^15; objects leaving the allocator have that word cleared
//!   ([`take_object`]), so that an untouched block does not look free. `free` reads only those
//!   two bytes ([`link_top`]), not the whole word: a program that has just stored into the
//!   block's first bytes (a reference count decremented before the free) would otherwise make
//!   the load wait until that narrower store reached the cache, since a load that only
//!   partly overlaps a store in flight cannot take its data from it (mimalloc-bench's cfrac
//!   spent about 5% more time with the whole word read). A block that passes only costs the
//!   search, which aborts only on finding it on a list.
//!
//! Without the checks the key is 0: links are plain pointers, still checked for plausibility
//! on the cold paths ([`next`]) but not on the thread caches' fast pop, and no block looks
//! free (the prefixed C `tcalloc_free` of such a build validates the pointer but does not
//! detect a double free).
//!
//! The thread caches keep copies of the key and of [`LINK_MASK`] (both 0 until a cache is set
//! up), so that the fast path checks a popped link with one `test` against a field it reaches
//! anyway.
//!
//! Entry points: [`push`], [`pop`], [`next`], [`set_next`], [`split_front`], [`count`],
//! [`looks_free`], [`take_object`]. No layer below.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Whether the heap-misuse checks are built in: encoded and checked links, and the
/// double-free checks that rest on them ([`looks_free`]). They are, in the C library (the
/// `override` feature) and with the `hardened` feature; a Rust program that uses tcalloc as
/// its `#[global_allocator]` without `hardened` frees only through `dealloc`, which safe code
/// cannot call twice, and gets the faster lists (a 64-byte pair of 22 instructions instead of
/// 29, on the dependency chain of every pop). Without them the key stays 0, so links are
/// plain pointers, the thread caches neither decode nor check them, and no block ever looks
/// free. `RUSTFLAGS="--cfg tcalloc_unchecked"` turns them off in the C library too, only to
/// measure what they cost there (the benchmark's `checks` command).
pub const CHECKS: bool =
    cfg!(any(feature = "override", feature = "hardened")) && !cfg!(tcalloc_unchecked);

/// A free object: only its first word is used, as the encoded link.
#[repr(C)]
pub struct FreeObject {
    link: usize,
}

/// Bits that are zero in every object address (user space below 2^48, 8-aligned).
pub const LINK_MASK: usize = 0xFFFF_0000_0000_0007;

/// The per-process key of the link encoding; 0 until [`init_secret`].
static SECRET: AtomicUsize = AtomicUsize::new(0);

/// Sets the link key once per process, from the kernel's random source (or, failing that,
/// addresses and the clock). Must run before the first object is put on any list: the central
/// free lists call it before they carve their first span.
#[cold]
pub fn init_secret() {
    if !CHECKS || SECRET.load(Relaxed) != 0 {
        return;
    }
    let mut random: usize = 0;
    // The system call, not glibc's wrapper: no dependency on a glibc version.
    // SAFETY: writes at most `size_of::<usize>()` bytes into `random`.
    let got = unsafe {
        libc::syscall(
            libc::SYS_getrandom,
            &mut random as *mut usize,
            core::mem::size_of::<usize>(),
            libc::GRND_NONBLOCK,
        )
    };
    if got != core::mem::size_of::<usize>() as libc::c_long {
        let stack = &random as *const usize as usize;
        random = stack.rotate_left(29)
            ^ (init_secret as fn() as usize)
            ^ crate::os::now_millis() as usize;
        random = random.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    // A concurrent caller may have won; either value is fine, as long as it is one.
    let _ = SECRET.compare_exchange(0, key_from(random), Relaxed, Relaxed);
}

/// The link key made from `random`: its top bit set, so that a stored user-space pointer or
/// zero never decodes to a plausible link, and its top 16 bits not all ones, so that neither
/// does a negative integer above -2^48 ([`looks_free`] tests only those bits).
const fn key_from(random: usize) -> usize {
    let key = random | 1 << 63;
    if key >> 48 == 0xFFFF {
        key ^ 1 << 62
    } else {
        key
    }
}

/// The process's link key (0 before [`init_secret`]).
#[inline(always)]
pub fn secret() -> usize {
    SECRET.load(Relaxed)
}

/// Byte offset of the top 16 bits of a word in memory.
pub const TOP_OFFSET: usize = if cfg!(target_endian = "little") { 6 } else { 0 };

/// The top 16 bits of the first word of `object`, read alone (see the module's notes: a load
/// of the whole word would wait on a narrower store into the block's first bytes).
///
/// # Safety
/// - `object` is readable for 8 bytes (every object is).
#[inline(always)]
pub unsafe fn link_top(object: *const u8) -> u16 {
    // SAFETY: per the caller; the two bytes are 2-aligned, as every object is 8-aligned.
    unsafe { object.add(TOP_OFFSET).cast::<u16>().read() }
}

/// Whether an object whose first word has `top` as its top 16 bits probably holds a link
/// encoded with `key` (a thread cache's copy of the process's key): whether the object is
/// probably on a free list. Never without the checks.
#[inline(always)]
pub fn looks_free_keyed(top: u16, key: usize) -> bool {
    CHECKS && top == (key >> 48) as u16
}

/// [`looks_free_keyed`] with the process's key: `top` from [`link_top`].
#[inline(always)]
pub fn looks_free(top: u16) -> bool {
    looks_free_keyed(top, secret())
}

/// The object after `object` on its list.
///
/// # Safety
/// - `object` is a readable free object (on a list).
#[inline(always)]
pub unsafe fn next(object: *mut FreeObject) -> *mut FreeObject {
    // SAFETY: per the caller.
    unsafe { next_keyed(object, secret()) }
}

/// [`next`] for a list linked with `key` (a thread cache's copy of the process's key, or 0
/// before the cache is set up).
///
/// # Safety
/// - `object` is a readable free object on a list linked with `key`.
#[inline(always)]
pub unsafe fn next_keyed(object: *mut FreeObject, key: usize) -> *mut FreeObject {
    // SAFETY: per the caller.
    let word = unsafe { (*object).link };
    let next = word ^ key;
    if next & LINK_MASK != 0 {
        corrupted(object, word);
    }
    next as *mut FreeObject
}

/// Makes `next` follow `object`.
///
/// # Safety
/// - `object` is a writable free object.
#[inline(always)]
pub unsafe fn set_next(object: *mut FreeObject, next: *mut FreeObject) {
    // SAFETY: per the caller.
    unsafe { set_next_keyed(object, next, secret()) };
}

/// [`set_next`] for a list linked with `key`.
///
/// # Safety
/// - `object` is a writable free object.
#[inline(always)]
pub unsafe fn set_next_keyed(object: *mut FreeObject, next: *mut FreeObject, key: usize) {
    // SAFETY: per the caller.
    unsafe { (*object).link = next as usize ^ key };
}

/// Clears the link word of an object that leaves the allocator, so that it does not look free
/// ([`looks_free`]) until it is freed again.
///
/// # Safety
/// - `object` is a writable object that no list holds.
#[inline(always)]
pub unsafe fn take_object(object: *mut FreeObject) {
    // SAFETY: per the caller.
    unsafe { (*object).link = 0 };
}

impl FreeObject {
    /// The raw (encoded) link word.
    #[inline(always)]
    pub fn link_word(&self) -> usize {
        self.link
    }
}

/// Aborts: the link of a free object was overwritten.
#[cold]
#[inline(never)]
pub fn corrupted(object: *mut FreeObject, word: usize) -> ! {
    crate::diag::fatal(format_args!(
        "heap corruption: the free block at {object:p} was written after it was freed \
         (its free-list link reads {word:#x})"
    ))
}

/// Pushes `object` in front of `*head`.
///
/// # Safety
/// - `object` is valid for writes of a pointer and is not on any list.
#[inline(always)]
pub unsafe fn push(head: &mut *mut FreeObject, object: *mut FreeObject) {
    // SAFETY: the caller guarantees `object` is writable.
    unsafe { set_next(object, *head) };
    *head = object;
}

/// Pops the first object of `*head`, or null if the list is empty; the object's link word is
/// cleared ([`take_object`]).
///
/// # Safety
/// - `*head` is null or the head of a well-formed, null-terminated list.
#[inline(always)]
pub unsafe fn pop(head: &mut *mut FreeObject) -> *mut FreeObject {
    let object = *head;
    if !object.is_null() {
        // SAFETY: a non-null head of a well-formed list is a readable, writable free object;
        // it leaves the list.
        unsafe {
            *head = next(object);
            take_object(object);
        }
    }
    object
}

/// Detaches the first `n` objects of `*head` (which must hold at least `n`) and returns them
/// as a null-terminated list.
///
/// # Safety
/// - `*head` is a well-formed list with at least `n >= 1` objects.
pub unsafe fn split_front(head: &mut *mut FreeObject, n: usize) -> *mut FreeObject {
    crate::diag::debug_invariant!(n >= 1);
    let first = *head;
    let mut last = first;
    for _ in 1..n {
        // SAFETY: the list holds at least `n` objects, so the first `n - 1` have successors.
        last = unsafe { next(last) };
    }
    // SAFETY: `last` is the `n`-th object of the list.
    unsafe {
        *head = next(last);
        set_next(last, ptr::null_mut());
    }
    first
}

/// Like [`split_front`], and also returns the spread of the detached objects' addresses
/// (highest minus lowest): how scattered through memory they are.
///
/// # Safety
/// - `*head` is a well-formed list with at least `n >= 1` objects.
pub unsafe fn split_front_with_spread(
    head: &mut *mut FreeObject,
    n: usize,
) -> (*mut FreeObject, usize) {
    let mut split = [FrontSplit::new(head, n)];
    // SAFETY: per the caller.
    unsafe { split_fronts_with_spread(&mut split) };
    (split[0].first, split[0].spread)
}

/// One list of [`split_fronts_with_spread`]: where its head is kept, how many objects to
/// detach and whether its first object stays; the call fills in the rest.
#[derive(Clone, Copy)]
pub struct FrontSplit {
    /// The list's head.
    pub head: *mut *mut FreeObject,
    /// Whether the list's first object stays on it (the split then starts at the second).
    pub keep_first: bool,
    /// How many objects to detach (at least 1).
    pub count: usize,
    /// After the call: the detached list.
    pub first: *mut FreeObject,
    /// After the call: the detached objects' spread, as [`split_front_with_spread`] gives it.
    pub spread: usize,
    last: *mut FreeObject,
    low: usize,
    high: usize,
}

impl FrontSplit {
    /// The split of the first `count` objects of the list whose head is `*head`.
    pub const fn new(head: *mut *mut FreeObject, count: usize) -> FrontSplit {
        let null = ptr::null_mut();
        FrontSplit {
            head,
            keep_first: false,
            count,
            first: null,
            spread: 0,
            last: null,
            low: 0,
            high: 0,
        }
    }

    /// The split of the `count` objects after the first of the list whose head is `*head`.
    pub const fn after_first(head: *mut *mut FreeObject, count: usize) -> FrontSplit {
        FrontSplit { keep_first: true, ..FrontSplit::new(head, count) }
    }
}

/// [`split_front_with_spread`] of several lists at once, walked side by side: one step of each
/// list, then the next step of each. Each step reads a link that no earlier step of the same
/// walk gives the address of, so a lone walk of a list whose objects are out of the cache (a
/// program that frees in random order) waits for one miss after another; side by side, the
/// lists' misses are in flight together.
///
/// # Safety
/// - Every `splits[j].head` is the head of a distinct well-formed list with at least
///   `splits[j].count >= 1` objects, one more if `keep_first`.
pub unsafe fn split_fronts_with_spread(splits: &mut [FrontSplit]) {
    let mut steps = 0;
    for s in splits.iter_mut() {
        crate::diag::debug_invariant!(s.count >= 1);
        // SAFETY: per the caller, `s.head` points at the head of a list long enough.
        s.first = unsafe {
            if s.keep_first {
                next(*s.head)
            } else {
                *s.head
            }
        };
        s.last = s.first;
        (s.low, s.high) = (s.first as usize, s.first as usize);
        steps = steps.max(s.count);
    }
    for step in 1..steps {
        for s in splits.iter_mut() {
            if step < s.count {
                // SAFETY: the list holds at least `count > step` objects from `first` on, so
                // the first `count - 1` of them have successors.
                s.last = unsafe { next(s.last) };
                s.low = s.low.min(s.last as usize);
                s.high = s.high.max(s.last as usize);
            }
        }
    }
    for s in splits.iter_mut() {
        // SAFETY: `s.last` is the `count`-th object from `first`; `*s.head` is the list's
        // first object when it stays.
        unsafe {
            let rest = next(s.last);
            set_next(s.last, ptr::null_mut());
            if s.keep_first {
                set_next(*s.head, rest);
            } else {
                *s.head = rest;
            }
        }
        s.spread = s.high - s.low;
    }
}

/// Puts the objects that [`split_fronts_with_spread`] detached with `split` back where they
/// were on the list they came from.
///
/// # Safety
/// - `split` is the result of that call, and nothing has changed its list or its objects since.
pub unsafe fn unsplit(split: &FrontSplit) {
    // SAFETY: per the caller, `first..=last` is a list and `head` its old list's head.
    unsafe {
        if split.keep_first {
            set_next(split.last, next(*split.head));
            set_next(*split.head, split.first);
        } else {
            set_next(split.last, *split.head);
            *split.head = split.first;
        }
    }
}

/// Number of objects on a list (walks it; for checks and tests).
///
/// # Safety
/// - `head` is null or the head of a well-formed list.
pub unsafe fn count(mut head: *mut FreeObject) -> usize {
    let mut n = 0;
    while !head.is_null() {
        n += 1;
        // SAFETY: every object of a well-formed list is readable.
        head = unsafe { next(head) };
    }
    n
}

/// The last object of a non-empty list.
///
/// # Safety
/// - `head` is the non-null head of a well-formed list.
pub unsafe fn last(mut head: *mut FreeObject) -> *mut FreeObject {
    loop {
        // SAFETY: every object of a well-formed list is readable.
        let after = unsafe { next(head) };
        if after.is_null() {
            return head;
        }
        head = after;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn push_pop_split_count() {
        init_secret();
        let mut objects: Vec<FreeObject> = (0..10).map(|_| FreeObject { link: 0 }).collect();
        let mut head = ptr::null_mut();
        for o in objects.iter_mut() {
            // SAFETY: each object is a distinct live Vec element, on no list yet.
            unsafe { push(&mut head, o) };
        }
        // SAFETY: the list was built just above from live objects.
        unsafe {
            assert_eq!(count(head), 10);
            assert_eq!(last(head), &mut objects[0] as *mut _, "the first pushed is last");
            let front = split_front(&mut head, 4);
            assert_eq!(count(front), 4);
            assert_eq!(count(head), 6);
            assert_eq!(front, &mut objects[9] as *mut _);
            assert_eq!(pop(&mut head), &mut objects[5] as *mut _);
            assert_eq!(count(head), 5);
            let (rest, spread) = split_front_with_spread(&mut head, 5);
            assert!(head.is_null());
            assert_eq!(count(rest), 5);
            let (a, b) = (&objects[0] as *const _ as usize, &objects[4] as *const _ as usize);
            assert_eq!(spread, b - a, "objects 0..5 were on the list");
            assert!(pop(&mut head).is_null());
        }
    }

    #[test]
    fn lists_split_side_by_side_and_back() {
        init_secret();
        let mut objects: Vec<FreeObject> = (0..12).map(|_| FreeObject { link: 0 }).collect();
        let base = objects.as_ptr() as usize;
        let at = |i: usize| base + i * size_of::<FreeObject>();
        let (mut a, mut b, mut c) = (ptr::null_mut(), ptr::null_mut(), ptr::null_mut());
        for (i, o) in objects.iter_mut().enumerate() {
            // SAFETY: each object is a distinct live Vec element, on no list yet.
            unsafe { push([&mut a, &mut b, &mut c][i % 3], o) };
        }
        // a: objects 9, 6, 3, 0; b: 10, 7, 4, 1; c: 11, 8, 5, 2 (most recently pushed first).
        let mut splits =
            [FrontSplit::new(&mut a, 3), FrontSplit::new(&mut b, 1), FrontSplit::new(&mut c, 4)];
        // SAFETY: three distinct lists of four objects each.
        unsafe {
            split_fronts_with_spread(&mut splits);
            assert_eq!((count(splits[0].first), count(a)), (3, 1));
            assert_eq!(splits[0].first as usize, at(9));
            assert_eq!(a as usize, at(0), "what is left of a starts after the split");
            assert_eq!(splits[0].spread, at(9) - at(3));
            assert_eq!((count(splits[1].first), count(b)), (1, 3));
            assert_eq!(splits[1].spread, 0, "one object spreads over nothing");
            assert_eq!((count(splits[2].first), c), (4, ptr::null_mut()));
            assert_eq!(splits[2].spread, at(11) - at(2));
            unsplit(&splits[0]);
            assert_eq!((count(a), a as usize), (4, at(9)), "back as it was");
            assert_eq!(last(a) as usize, at(0));
            // The two objects after b's first (b holds 7, 4, 1).
            let mut keep = [FrontSplit::after_first(&mut b, 2)];
            split_fronts_with_spread(&mut keep);
            assert_eq!((b as usize, count(b)), (at(7), 1));
            assert_eq!((keep[0].first as usize, count(keep[0].first)), (at(4), 2));
            assert_eq!(keep[0].spread, at(4) - at(1));
            unsplit(&keep[0]);
            assert_eq!((b as usize, count(b)), (at(7), 3));
            assert_eq!((next(b) as usize, last(b) as usize), (at(4), at(1)));
        }
    }

    #[test]
    #[cfg(not(any(feature = "override", feature = "hardened")))]
    fn links_are_plain_without_the_checks() {
        const { assert!(!CHECKS) };
        init_secret();
        assert_eq!(secret(), 0);
        let mut objects: Vec<FreeObject> = (0..2).map(|_| FreeObject { link: 0 }).collect();
        let (a, b) = (&mut objects[0] as *mut FreeObject, &mut objects[1] as *mut FreeObject);
        // SAFETY: two live objects.
        unsafe {
            set_next(a, b);
            assert_eq!((*a).link, b as usize);
            assert!(!looks_free(link_top(a.cast())), "nothing looks free without the checks");
            assert_eq!(next(a), b);
        }
    }

    #[test]
    #[cfg(any(feature = "override", feature = "hardened"))]
    fn links_are_encoded_and_checked() {
        const { assert!(CHECKS) };
        init_secret();
        let mut objects: Vec<FreeObject> = (0..2).map(|_| FreeObject { link: 0 }).collect();
        let (a, b) = (&mut objects[0] as *mut FreeObject, &mut objects[1] as *mut FreeObject);
        // SAFETY: two live objects.
        unsafe {
            assert!(!looks_free(link_top(a.cast())), "a cleared word does not look free");
            set_next(a, b);
            assert_ne!((*a).link, b as usize, "the link is not stored in the clear");
            assert!(looks_free(link_top(a.cast())));
            assert_eq!(next(a), b);
            set_next(a, ptr::null_mut());
            assert!(looks_free(link_top(a.cast())));
            assert!(next(a).is_null());
            // Only the top two bytes are read: the test is the same whatever the rest holds.
            let link = (*a).link;
            (*a).link = link ^ 0x0000_FFFF_FFFF_FFFF;
            assert!(looks_free(link_top(a.cast())));
            (*a).link = link ^ 1 << 48;
            assert!(!looks_free(link_top(a.cast())));
            take_object(a);
            assert!(!looks_free(link_top(a.cast())));
        }
        assert_ne!(secret() >> 48, 0xFFFF, "the key's top 16 bits are never all ones");
        for random in [0, usize::MAX, 0xFFFF << 48, 0x7FFF << 48, 0x1234_5678] {
            let key = key_from(random);
            assert!(key >> 63 == 1 && key >> 48 != 0xFFFF, "{random:#x} -> {key:#x}");
            assert!(!looks_free_keyed(0xFFFF, key) && !looks_free_keyed(0, key));
        }
        // Pointers and integers, negative ones too, written over a link never look like one.
        for word in [0usize, 1, 8, b as usize, 0x7fff_ffff_f000, usize::MAX, -4096isize as usize] {
            assert!(!looks_free((word >> 48) as u16), "{word:#x}");
        }
    }
}
