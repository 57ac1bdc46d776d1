//! A shadow model of live blocks, shared by the randomised test `tests/model.rs` and the fuzz
//! target `fuzz/fuzz_targets/model.rs` (which includes this file with `#[path]`).
//!
//! A [`Worker`] drives `tcalloc::TcAlloc` through `GlobalAlloc` with operations drawn from a
//! [`Choices`] source: a seeded [`Rng`] in the test, the fuzzer's bytes ([`Bytes`]) in the fuzz
//! target, so both run the same generator and the same checks. What it checks, after every
//! operation, on the blocks the operation touched:
//!
//! - **alignment**: every block is aligned to its layout's alignment (after `realloc` too);
//! - **no overlap**: a [`Registry`] of the address ranges of all live blocks, shared by all
//!   threads, rejects a new block that overlaps a live one;
//! - **contents**: every block is filled with a pattern derived from a per-block id and the
//!   offset; the pattern is checked before the block is freed, reallocated, or handed to
//!   another thread, and by a periodic sweep of all the worker's blocks, so a stray write by
//!   the allocator (or another block overlapping this one) shows as a wrong byte;
//! - **realloc keeps the prefix**: the first `min(old, new)` bytes still hold the old pattern;
//! - **zeroing**: every byte of an `alloc_zeroed` block is zero.
//!
//! Blocks up to 64 KiB are filled and checked whole; larger ones (up to 4 MiB) in their first
//! and last 4 KiB and one word every 256 bytes between, and `alloc_zeroed` blocks are checked
//! for zero in full.
//!
//! The generator weighs sizes toward small ones and toward boundaries: ±1 around every size
//! class, multiples of the 8 KiB page, the 1 MiB large threshold; alignments run from 1 B to
//! 64 KiB. Besides single operations it runs **phase changes**: bulk-allocate many blocks of
//! one layout, free a random 90%, and later switch to another layout, often a slightly smaller
//! size with a larger alignment (the case where a class reuses the holes of its neighbour).
//! It also hands blocks to other threads (the caller moves [`Worker::outbox`] on) and runs
//! short-lived threads that take some blocks, work on them, and exit while their blocks live on.

// Two crates include this file and each uses a part of it.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use tcalloc::TcAlloc;

pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;
/// Largest block the generator asks for.
pub const MAX_SIZE: usize = 4 * MIB;
/// Largest alignment the generator asks for.
pub const MAX_ALIGN: usize = 64 * KIB;
/// tcalloc's page.
pub const PAGE: usize = 8 * KIB;
/// Requests above this get a mapping of their own.
pub const LARGE_THRESHOLD: usize = MIB;

// ---------------------------------------------------------------------------------------------
// Sources of choices
// ---------------------------------------------------------------------------------------------

/// Where the generator's decisions come from.
pub trait Choices: Send {
    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64;
    /// Whether the source has run dry (the fuzzer's input is used up).
    fn exhausted(&self) -> bool;

    /// True with probability `percent` / 100.
    fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// One of `items`.
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    /// A number in `low..=high`.
    fn range(&mut self, low: usize, high: usize) -> usize {
        low + self.below((high - low) as u64 + 1) as usize
    }
}

/// xorshift64* seeded through splitmix64: small and deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(mix(seed.wrapping_add(0x9E37_79B9_7F4A_7C15)) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Choices for Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    fn exhausted(&self) -> bool {
        false
    }
}

/// The fuzzer's input, read a few bytes per decision (as many as `n` needs); zeros once used
/// up.
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Bytes<'a> {
        Bytes { data, pos: 0 }
    }
}

impl Choices for Bytes<'_> {
    fn below(&mut self, n: u64) -> u64 {
        let width = (64 - (n - 1).leading_zeros()).div_ceil(8);
        let mut value = 0u64;
        for _ in 0..width {
            value = value << 8 | self.data.get(self.pos).copied().unwrap_or(0) as u64;
            self.pos += 1;
        }
        value % n
    }
    fn exhausted(&self) -> bool {
        self.pos >= self.data.len()
    }
}

/// splitmix64's finaliser.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

// ---------------------------------------------------------------------------------------------
// Sizes and alignments
// ---------------------------------------------------------------------------------------------

/// Picks sizes and alignments, weighted toward small sizes and boundaries.
pub struct Shapes {
    /// Every size class's object size, smallest first.
    classes: Vec<usize>,
    /// Smallest size handed out (1 for `GlobalAlloc`, whose layouts may not be empty).
    min_size: usize,
}

impl Shapes {
    pub fn new(classes: Vec<usize>, min_size: usize) -> Shapes {
        assert!(!classes.is_empty() && classes.windows(2).all(|w| w[0] < w[1]));
        Shapes { classes, min_size }
    }

    /// A size from `min_size` to 4 MiB.
    pub fn size(&self, c: &mut impl Choices) -> usize {
        let size = match c.below(100) {
            0..=29 => c.range(1, 256),
            30..=44 => c.range(257, 1024),
            45..=64 => self.around_class(c),
            65..=72 => c.range(1025, 64 * KIB),
            73..=79 => self.around_page(c),
            80..=85 => c.range(64 * KIB, LARGE_THRESHOLD),
            86..=90 => around(c, LARGE_THRESHOLD),
            91..=96 => c.range(LARGE_THRESHOLD, MAX_SIZE),
            _ => c.pick(&[0, 1, MAX_SIZE]),
        };
        size.clamp(self.min_size, MAX_SIZE)
    }

    /// A class size, one byte less, or one byte more.
    fn around_class(&self, c: &mut impl Choices) -> usize {
        let class = self.classes[c.below(self.classes.len() as u64) as usize];
        around(c, class)
    }

    /// A multiple of the page (up to 4 MiB), one byte less, or one byte more.
    fn around_page(&self, c: &mut impl Choices) -> usize {
        let pages = c.range(1, MAX_SIZE / PAGE);
        around(c, PAGE * pages)
    }

    /// An alignment from 1 B to 64 KiB, mostly the natural ones.
    pub fn align(&self, c: &mut impl Choices) -> usize {
        match c.below(10) {
            0..=5 => c.pick(&[1, 2, 4, 8]),
            6..=7 => c.pick(&[16, 32, 64]),
            _ => 1 << c.range(7, MAX_ALIGN.trailing_zeros() as usize),
        }
    }

    pub fn layout(&self, c: &mut impl Choices) -> Layout {
        let size = self.size(c);
        let align = self.align(c);
        Layout::from_size_align(size, align).unwrap()
    }

    /// The layout of a phase of bulk allocation. Half the time, after a phase of `previous`,
    /// a size up to a quarter smaller with another alignment: the next class down, which may
    /// reuse the holes the previous phase left.
    pub fn phase_layout(&self, previous: Option<Layout>, c: &mut impl Choices) -> Layout {
        let size = match previous {
            Some(p) if c.percent(50) => {
                let low = (p.size() * 3 / 4).max(self.min_size);
                c.range(low, p.size().max(low))
            }
            _ => match c.below(10) {
                0..=5 => c.range(1, 256),
                6..=7 => self.around_class(c).min(8 * KIB),
                8 => c.range(257, 8 * KIB),
                _ => c.range(8 * KIB, 256 * KIB),
            },
        };
        let align = match c.below(4) {
            0 => 8,
            1 => c.pick(&[16, 32, 64, 128]),
            _ => self.align(c),
        };
        Layout::from_size_align(size.max(self.min_size), align).unwrap()
    }

    /// A new size for a block of `old` bytes: anywhere, a small step, half, double, the next
    /// class boundary up or down, or the same.
    pub fn realloc_size(&self, old: usize, c: &mut impl Choices) -> usize {
        let size = match c.below(10) {
            0..=2 => self.size(c),
            3 => old + c.range(1, 64),
            4 => old.saturating_sub(c.range(1, 64)),
            5 => old / 2,
            6 => old * 2 + c.below(4096) as usize,
            7..=8 => {
                // The class boundary just above or below `old`, or the large threshold.
                let up = self.classes.iter().copied().find(|&s| s >= old);
                let down = self.classes.iter().copied().rev().find(|&s| s < old);
                match (c.below(3), up, down) {
                    (0, Some(s), _) => s + 1,
                    (1, _, Some(s)) => s,
                    _ => around(c, LARGE_THRESHOLD),
                }
            }
            _ => old,
        };
        size.clamp(self.min_size, MAX_SIZE)
    }
}

/// `n - 1`, `n` or `n + 1`.
fn around(c: &mut impl Choices, n: usize) -> usize {
    (n + c.below(3) as usize).saturating_sub(1)
}

/// Where tcalloc serves a layout, for the coverage counts.
fn route(layout: Layout) -> usize {
    if layout.size() > LARGE_THRESHOLD {
        3
    } else if layout.align() > PAGE {
        2
    } else if layout.size() > 1024 {
        1
    } else {
        0
    }
}

// ---------------------------------------------------------------------------------------------
// Blocks and their patterns
// ---------------------------------------------------------------------------------------------

/// A live block: its address, its layout, and the id its pattern was written with.
pub struct Block {
    pub ptr: *mut u8,
    pub layout: Layout,
    pub id: u64,
}

// SAFETY: a block is owned by one worker at a time; moving it moves the ownership.
unsafe impl Send for Block {}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "block #{} at {:p} (size {}, align {})",
            self.id,
            self.ptr,
            self.layout.size(),
            self.layout.align()
        )
    }
}

/// Word `index` of the pattern of block `id`.
fn pattern_word(id: u64, index: usize) -> u64 {
    mix(id.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Byte `offset` of the pattern of block `id`.
fn pattern_byte(id: u64, offset: usize) -> u8 {
    pattern_word(id, offset / 8).to_le_bytes()[offset % 8]
}

/// Blocks up to this size are filled and checked whole.
const WHOLE_LIMIT: usize = 64 * KIB;
/// Larger blocks: their first and last this many bytes ...
const EDGE: usize = 4 * KIB;
/// ... and one word every this many bytes between.
const STRIDE: usize = 256;

/// Calls `f(start, end)` for each byte range of a `size`-byte block that carries the pattern.
fn for_each_range(size: usize, mut f: impl FnMut(usize, usize)) {
    if size <= WHOLE_LIMIT {
        f(0, size);
        return;
    }
    f(0, EDGE);
    for offset in (EDGE..size - EDGE).step_by(STRIDE) {
        f(offset, offset + 8);
    }
    f(size - EDGE, size);
}

/// Writes the pattern of `id` into `start..end` of the block at `ptr`.
///
/// # Safety
/// `ptr..ptr + end` is writable memory owned by the caller.
unsafe fn write_pattern(ptr: *mut u8, id: u64, start: usize, end: usize) {
    let mut o = start;
    while o < end {
        if o % 8 == 0 && o + 8 <= end {
            // SAFETY: `o + 8 <= end`, per the caller.
            unsafe { ptr.add(o).cast::<u64>().write_unaligned(pattern_word(id, o / 8).to_le()) };
            o += 8;
        } else {
            // SAFETY: `o < end`, per the caller.
            unsafe { *ptr.add(o) = pattern_byte(id, o) };
            o += 1;
        }
    }
}

/// The first offset in `start..end` whose byte differs from the pattern of `id`, if any.
///
/// # Safety
/// `ptr..ptr + end` is readable memory owned by the caller.
unsafe fn find_mismatch(ptr: *const u8, id: u64, start: usize, end: usize) -> Option<usize> {
    let mut o = start;
    while o < end {
        if o % 8 == 0 && o + 8 <= end {
            // SAFETY: `o + 8 <= end`, per the caller.
            let got = unsafe { ptr.add(o).cast::<u64>().read_unaligned() };
            if got != pattern_word(id, o / 8).to_le() {
                return (o..o + 8).find(|&i| {
                    // SAFETY: as above.
                    unsafe { *ptr.add(i) != pattern_byte(id, i) }
                });
            }
            o += 8;
        } else {
            // SAFETY: `o < end`, per the caller.
            if unsafe { *ptr.add(o) } != pattern_byte(id, o) {
                return Some(o);
            }
            o += 1;
        }
    }
    None
}

/// Fills a block's pattern.
fn fill(b: &Block) {
    // SAFETY: the block is live and owned by the caller; every range lies within its size.
    for_each_range(b.layout.size(), |start, end| unsafe { write_pattern(b.ptr, b.id, start, end) });
}

/// Checks the pattern of the first `upto` bytes of `b`; panics naming `context` and `what`.
fn check_prefix(b: &Block, upto: usize, context: &str, what: &str) {
    let mut bad = None;
    for_each_range(b.layout.size(), |start, end| {
        let end = end.min(upto);
        if bad.is_none() && start < end {
            // SAFETY: the block is live and owned by the caller; `end` is within its size.
            bad = unsafe { find_mismatch(b.ptr, b.id, start, end) };
        }
    });
    if let Some(o) = bad {
        // SAFETY: `o` is within the block.
        let got = unsafe { *b.ptr.add(o) };
        panic!(
            "{context}: {what}: {b:?} corrupted at byte {o} ({:#x}): {got:#04x}, expected {:#04x}",
            b.ptr as usize + o,
            pattern_byte(b.id, o)
        );
    }
}

/// Checks that all of a fresh `alloc_zeroed` block is zero.
fn check_zero(b: &Block, context: &str) {
    let size = b.layout.size();
    let words = size / 8;
    // SAFETY: the block is live, fresh, and `size` bytes long.
    let bad = unsafe {
        (0..words)
            .find(|&w| b.ptr.add(w * 8).cast::<u64>().read_unaligned() != 0)
            .map(|w| w * 8)
            .or_else(|| (words * 8..size).find(|&o| *b.ptr.add(o) != 0))
    };
    if let Some(o) = bad {
        panic!("{context}: alloc_zeroed gave {b:?} with a non-zero byte near offset {o}");
    }
}

// ---------------------------------------------------------------------------------------------
// The registry of live blocks
// ---------------------------------------------------------------------------------------------

/// Every live block of every worker: start address -> (end address, id). A block is registered
/// after the allocator hands it out and unregistered before it is handed back, so a new block
/// that overlaps a registered one is an allocator bug.
#[derive(Default)]
pub struct Registry {
    live: Mutex<BTreeMap<usize, (usize, u64)>>,
    next_id: AtomicU64,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// An id no other block has had.
    pub fn fresh_id(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed) + 1
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<usize, (usize, u64)>> {
        // Another thread's failed check must not hide this one's.
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks a new block's alignment and that it overlaps no live block, and records it.
    pub fn insert(&self, b: &Block, context: &str, what: &str) {
        let start = b.ptr as usize;
        // A block of size 0 still takes an address of its own.
        let end = start + b.layout.size().max(1);
        assert!(
            start % b.layout.align() == 0,
            "{context}: {what} returned a misaligned {b:?}: address % {} = {}",
            b.layout.align(),
            start % b.layout.align()
        );
        let mut live = self.map();
        let before = live.range(..=start).next_back().map(|(&s, &v)| (s, v));
        if let Some((s, (e, id))) = before.filter(|&(_, (e, _))| e > start) {
            panic!("{context}: {what} returned {b:?}, inside live block #{id} at {s:#x}..{e:#x}");
        }
        let after = live.range(start..).next().map(|(&s, &v)| (s, v));
        if let Some((s, (e, id))) = after.filter(|&(s, _)| s < end) {
            panic!(
                "{context}: {what} returned {b:?}, overlapping live block #{id} at {s:#x}..{e:#x}"
            );
        }
        live.insert(start, (end, b.id));
    }

    /// Forgets a block that is about to be freed or reallocated.
    pub fn remove(&self, b: &Block, context: &str) {
        let removed = self.map().remove(&(b.ptr as usize));
        assert_eq!(
            removed.map(|(_, id)| id),
            Some(b.id),
            "{context}: {b:?} is not registered: the model is broken"
        );
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

// ---------------------------------------------------------------------------------------------
// The worker
// ---------------------------------------------------------------------------------------------

/// How much a worker holds at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Live blocks a worker aims to stay under (phases may leave it above for a while).
    pub live_blocks: usize,
    /// Live bytes a worker aims to stay under.
    pub live_bytes: usize,
    /// Bytes of one phase of bulk allocation ...
    pub phase_bytes: usize,
    /// ... and at most this many blocks ...
    pub phase_blocks: usize,
    /// ... halved a random number of times below this (1: never), so that phases come in
    /// several sizes.
    pub phase_halvings: u64,
}

/// What a run did, to show that it reached every path.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub allocs: u64,
    pub zeroed: u64,
    pub frees: u64,
    pub reallocs: u64,
    /// Reallocations whose old and new sizes take different routes (class, page run, large).
    pub realloc_route_changes: u64,
    pub sent: u64,
    pub adopted: u64,
    pub phases: u64,
    pub phase_blocks: u64,
    pub short_threads: u64,
    pub sweeps: u64,
    /// Allocations by route: small class (<= 1 KiB), larger class, page run (alignment above
    /// a page), large (above 1 MiB).
    pub by_route: [u64; 4],
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.allocs += o.allocs;
        self.zeroed += o.zeroed;
        self.frees += o.frees;
        self.reallocs += o.reallocs;
        self.realloc_route_changes += o.realloc_route_changes;
        self.sent += o.sent;
        self.adopted += o.adopted;
        self.phases += o.phases;
        self.phase_blocks += o.phase_blocks;
        self.short_threads += o.short_threads;
        self.sweeps += o.sweeps;
        for (a, b) in self.by_route.iter_mut().zip(o.by_route) {
            *a += b;
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} allocs ({} zeroed; small/class/page-run/large {:?}), {} frees, {} reallocs \
             ({} across routes), {} blocks sent and {} adopted, {} phases ({} blocks), \
             {} short-lived threads, {} sweeps",
            self.allocs,
            self.zeroed,
            self.by_route,
            self.frees,
            self.reallocs,
            self.realloc_route_changes,
            self.sent,
            self.adopted,
            self.phases,
            self.phase_blocks,
            self.short_threads,
            self.sweeps
        )
    }
}

/// One thread's share of the work: the blocks it owns and the operations on them.
pub struct Worker<'a> {
    registry: &'a Registry,
    shapes: &'a Shapes,
    limits: Limits,
    /// Names the seed and thread in every failure message.
    context: String,
    live: Vec<Block>,
    live_bytes: usize,
    /// The layout of the last phase.
    phase: Option<Layout>,
    /// Blocks to be handed to another thread; the caller moves them on.
    pub outbox: Vec<Block>,
    pub counts: Counts,
}

const A: TcAlloc = TcAlloc;

impl<'a> Worker<'a> {
    pub fn new(
        registry: &'a Registry,
        shapes: &'a Shapes,
        limits: Limits,
        context: String,
    ) -> Self {
        Worker {
            registry,
            shapes,
            limits,
            context,
            live: Vec::new(),
            live_bytes: 0,
            phase: None,
            outbox: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// Allocates a block, checks it and fills its pattern.
    pub fn alloc(&mut self, layout: Layout, zeroed: bool) -> Block {
        // SAFETY: the shapes never give a zero size to `GlobalAlloc` (`min_size` is 1).
        let ptr = unsafe {
            if zeroed {
                A.alloc_zeroed(layout)
            } else {
                A.alloc(layout)
            }
        };
        let what = if zeroed { "alloc_zeroed" } else { "alloc" };
        assert!(!ptr.is_null(), "{}: {what}({layout:?}) returned null", self.context);
        let b = Block { ptr, layout, id: self.registry.fresh_id() };
        self.registry.insert(&b, &self.context, what);
        if zeroed {
            check_zero(&b, &self.context);
            self.counts.zeroed += 1;
        }
        fill(&b);
        self.counts.allocs += 1;
        self.counts.by_route[route(layout)] += 1;
        b
    }

    /// Checks a block's pattern and frees it.
    pub fn free(&mut self, b: Block) {
        check_prefix(&b, usize::MAX, &self.context, "before dealloc");
        self.registry.remove(&b, &self.context);
        // SAFETY: `b` came from `A` with this layout and is owned here.
        unsafe { A.dealloc(b.ptr, b.layout) };
        self.counts.frees += 1;
    }

    /// Reallocates a block to `new_size` and checks the result.
    pub fn realloc(&mut self, b: Block, new_size: usize) -> Block {
        check_prefix(&b, usize::MAX, &self.context, "before realloc");
        self.registry.remove(&b, &self.context);
        // SAFETY: `b` came from `A` with this layout and is owned here; `new_size` is non-zero
        // and at most 4 MiB, so rounding it up to the alignment cannot overflow.
        let ptr = unsafe { A.realloc(b.ptr, b.layout, new_size) };
        assert!(!ptr.is_null(), "{}: realloc({b:?}, {new_size}) returned null", self.context);
        let layout = Layout::from_size_align(new_size, b.layout.align()).unwrap();
        let moved = Block { ptr, layout, id: b.id };
        let what = format!("realloc({b:?}, {new_size})");
        self.registry.insert(&moved, &self.context, &what);
        // The old pattern (laid out for the old size) at the new address, up to the kept size.
        let old_view = Block { ptr, layout: b.layout, id: b.id };
        check_prefix(&old_view, b.layout.size().min(new_size), &self.context, &what);
        self.counts.reallocs += 1;
        if route(b.layout) != route(layout) {
            self.counts.realloc_route_changes += 1;
        }
        // The same id: the kept prefix already holds the pattern, the rest is written now.
        fill(&moved);
        moved
    }

    /// Takes over a block from another thread, checking its pattern.
    pub fn adopt(&mut self, b: Block) {
        check_prefix(&b, usize::MAX, &self.context, "adopted from another thread");
        self.counts.adopted += 1;
        self.keep(b);
    }

    fn keep(&mut self, b: Block) {
        self.live_bytes += b.layout.size();
        self.live.push(b);
    }

    /// Removes the block at `index` from the live set (its ownership goes to the caller).
    fn take(&mut self, index: usize) -> Block {
        let b = self.live.swap_remove(index);
        self.live_bytes -= b.layout.size();
        b
    }

    fn take_random(&mut self, c: &mut impl Choices) -> Block {
        let i = c.below(self.live.len() as u64) as usize;
        self.take(i)
    }

    /// Checks the pattern of every live block.
    pub fn sweep(&mut self) {
        for b in &self.live {
            check_prefix(b, usize::MAX, &self.context, "sweep of live blocks");
        }
        self.counts.sweeps += 1;
    }

    /// One random operation.
    pub fn step<C: Choices>(&mut self, c: &mut C, allow_threads: bool) {
        // Back under the limits first: a phase or a few large reallocations may overshoot.
        while self.live.len() > self.limits.live_blocks || self.live_bytes > self.limits.live_bytes
        {
            let b = self.take_random(c);
            self.free(b);
        }
        let full =
            self.live.len() >= self.limits.live_blocks || self.live_bytes >= self.limits.live_bytes;
        let roll = c.below(1000);
        if self.live.is_empty() || (roll < 400 && !full) {
            let layout = self.shapes.layout(c);
            let zeroed = c.percent(20);
            let b = self.alloc(layout, zeroed);
            self.keep(b);
        } else if roll < 700 {
            let b = self.take_random(c);
            self.free(b);
        } else if roll < 880 {
            let b = self.take_random(c);
            let new_size = self.shapes.realloc_size(b.layout.size(), c);
            let b = self.realloc(b, new_size);
            self.keep(b);
        } else if roll < 960 {
            let b = self.take_random(c);
            check_prefix(&b, usize::MAX, &self.context, "before sending");
            self.counts.sent += 1;
            self.outbox.push(b);
        } else if roll < 965 {
            self.phase_change(c);
        } else if roll < 968 && allow_threads {
            self.short_lived_thread(c);
        } else if roll < 975 {
            self.sweep();
        } else {
            let b = self.take_random(c);
            self.free(b);
        }
    }

    /// A phase: allocates many blocks of one layout, frees a random 90% of them, keeps the
    /// rest. The next phase's layout is often the next class down with a larger alignment.
    pub fn phase_change(&mut self, c: &mut impl Choices) {
        let layout = self.shapes.phase_layout(self.phase, c);
        self.phase = Some(layout);
        let most =
            (self.limits.phase_bytes / layout.size().max(1)).clamp(1, self.limits.phase_blocks);
        let count = (most >> c.below(self.limits.phase_halvings.max(1))).max(1);
        // The bulk decisions come from a generator seeded by one choice, so that a phase costs
        // the fuzzer a few bytes, not thousands.
        let mut r = Rng::new(c.below(u64::MAX));
        let zeroed = r.percent(10);
        let mut bulk: Vec<Block> = (0..count).map(|_| self.alloc(layout, zeroed)).collect();
        // Fisher-Yates, then free all but the first tenth.
        for i in (1..bulk.len()).rev() {
            bulk.swap(i, r.below(i as u64 + 1) as usize);
        }
        let keep = count / 10;
        for b in bulk.drain(keep..) {
            self.free(b);
        }
        for b in bulk {
            self.keep(b);
        }
        self.counts.phases += 1;
        self.counts.phase_blocks += count as u64;
    }

    /// A thread that takes a few of this worker's blocks, runs some operations (frees and
    /// reallocations of the blocks it took, allocations of its own, perhaps a phase) and exits;
    /// the blocks it still holds come back to this worker and outlive it.
    pub fn short_lived_thread<C: Choices>(&mut self, c: &mut C) {
        let given = c.range(0, self.live.len().min(16));
        let blocks: Vec<Block> = (0..given).map(|_| self.take_random(c)).collect();
        let steps = c.range(0, 64);
        let (registry, shapes, limits) = (self.registry, self.shapes, self.limits);
        let context = format!("{} / short-lived thread", self.context);
        let (returned, counts) = std::thread::scope(|s| {
            s.spawn(|| {
                let mut w = Worker::new(registry, shapes, limits, context);
                for b in blocks {
                    w.adopt(b);
                }
                for _ in 0..steps {
                    w.step(c, false);
                }
                let mut out = std::mem::take(&mut w.live);
                out.append(&mut w.outbox);
                (out, w.counts)
            })
            .join()
            .unwrap()
        });
        self.counts.add(&counts);
        self.counts.short_threads += 1;
        for b in returned {
            self.adopt(b);
        }
    }

    /// Frees every live block and every block in the outbox.
    pub fn finish(&mut self) {
        let mut all = std::mem::take(&mut self.live);
        all.append(&mut self.outbox);
        self.live_bytes = 0;
        for b in all {
            self.free(b);
        }
    }
}

/// The size of every size class, smallest first, from tcalloc's statistics (class 0, which
/// is no class, has size 0 and is left out).
pub fn class_sizes() -> Vec<usize> {
    tcalloc::stats().classes.iter().map(|c| c.size).filter(|&s| s > 0).collect()
}
