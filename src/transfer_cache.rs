//! Transfer caches: per size class and shard, a stack of whole batches waiting between thread
//! caches.
//!
//! When a thread flushes a batch and later refills, the batch moves through here in O(1) — a
//! pointer pushed and popped — without touching its objects or their spans. Only when the
//! stacks are empty (refill) or the process-wide byte cap is reached (flush) does the central
//! free list fall back to per-object span work.
//!
//! **Shards.** Each class has one stack per shard, each behind its own lock on its own cache
//! line; there is a shard per CPU number (at most [`MAX_SHARDS`]). A thread flushes to and
//! refills from the shard of the CPU it runs on at that moment (the thread caches read it in
//! the vDSO; where they cannot, each thread is given a shard when its cache activates), so
//! threads running on different CPUs neither contend for a lock nor trade each other's
//! objects, and a batch flushed on a CPU goes to the next refill there, its objects still in
//! that CPU's caches; a refill that finds its shard empty takes a batch from another shard before the
//! central list carves new objects, so objects freed by one thread do reach the others. It
//! looks first at each shard's batch count, published on the shard's cache line whenever its
//! lock is released, and locks only a shard that has batches to spare: with many shards, a
//! refill no longer takes every other shard's lock in turn.
//!
//! Each stack lives in [`BLOCK_BYTES`](crate::metadata::BLOCK_BYTES) chunks from the metadata
//! arena, each holding [`SLOTS_PER_CHUNK`] batch heads; one emptied chunk is kept as a spare so
//! that a stack oscillating around a chunk boundary does not allocate. All stacks together hold
//! at most [`capacity`] bytes ([`TRANSFER_CACHE_BYTES`] unless the environment sets another);
//! the count is one atomic, changed once per batch.
//!
//! **Whole spans are not kept.** An object of a class with one object per span is a whole span:
//! back in the page heap it coalesces with its neighbours and can serve any size (a block that
//! `realloc` grows in place ends in a different class from the one it started in, so parked
//! here it might never be asked for again). [`push`] refuses such classes and [`pop`] has
//! nothing for them.
//!
//! Entry points: [`pop`], [`push`], [`pop_idle`], [`assign_shard`], [`set_shards`],
//! [`set_capacity`], [`batches`], [`advance_epoch`]. Layer below: `metadata`.

use crate::config::{MAX_SHARDS, TRANSFER_CACHE_BYTES};
use crate::diag::{invariant, invariant_eq};
use crate::free_list::FreeObject;
use crate::metadata::{self, BLOCK_BYTES};
use crate::size_class::{SizeClass, NUM_CLASSES};
use crate::sync::Lock;
use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use crossbeam_utils::CachePadded;

/// The stacks, by shard then class (class 0 unused): the classes of a shard lie together, so
/// that a program that uses a few classes writes a few pages of this table, not one page per
/// class (a class's 32 shards of 128 bytes fill one).
static STACKS: [[CachePadded<Shard>; NUM_CLASSES]; MAX_SHARDS] =
    [const { [const { CachePadded::new(Shard::new()) }; NUM_CLASSES] }; MAX_SHARDS];

/// The stack of `class` in `shard`.
fn stack(class: SizeClass, shard: usize) -> &'static Shard {
    &STACKS[shard][class.index()]
}

/// The stacks of `class` in the first `n` shards.
fn stacks(class: SizeClass, n: usize) -> impl DoubleEndedIterator<Item = &'static Shard> {
    STACKS[..n].iter().map(move |row| &*row[class.index()])
}

/// One shard of a class: its stack behind its lock, and the stack's batch count as of the
/// last time the lock was released, which a refill looking for a shard to take from reads
/// without the lock (on the same cache line), so that it locks only a shard worth taking
/// from instead of every shard in turn.
struct Shard {
    stack: Lock<TransferCache>,
    batches: AtomicUsize,
}

impl Shard {
    const fn new() -> Self {
        Shard { stack: Lock::new(TransferCache::new()), batches: AtomicUsize::new(0) }
    }

    fn lock(&self) -> ShardGuard<'_> {
        ShardGuard { shard: self, stack: self.stack.lock() }
    }

    fn try_lock(&self) -> Option<ShardGuard<'_>> {
        Some(ShardGuard { shard: self, stack: self.stack.try_lock()? })
    }

    fn raw(&self) -> &crate::sync::RawLock {
        self.stack.raw()
    }

    /// Batches held, as last published: possibly stale by the time it is read.
    fn batches_hint(&self) -> usize {
        self.batches.load(Relaxed)
    }
}

/// A held shard lock; publishes the batch count when released.
struct ShardGuard<'a> {
    shard: &'a Shard,
    stack: crate::sync::LockGuard<'a, TransferCache>,
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        self.shard.batches.store(self.stack.batches, Relaxed);
    }
}

impl core::ops::Deref for ShardGuard<'_> {
    type Target = TransferCache;
    fn deref(&self) -> &TransferCache {
        &self.stack
    }
}

impl core::ops::DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut TransferCache {
        &mut self.stack
    }
}

/// Shards in use: `1..=MAX_SHARDS`.
static SHARDS: AtomicUsize = AtomicUsize::new(1);
/// Hands out shards to threads round-robin.
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);
/// A coarse clock for idleness, advanced by the release policy's tick.
static EPOCH: AtomicU64 = AtomicU64::new(1);

/// Sets the number of shards (at start-up, from the CPU numbers the process may run on).
pub fn set_shards(n: usize) {
    SHARDS.store(n.clamp(1, MAX_SHARDS), Relaxed);
}

/// The shard index for a thread's shard number (in `0..shards`).
#[inline]
pub fn shard_index(shard: usize) -> usize {
    shard % SHARDS.load(Relaxed)
}

/// A shard for a new thread.
pub fn assign_shard() -> usize {
    NEXT_SHARD.fetch_add(1, Relaxed) % SHARDS.load(Relaxed)
}

/// Advances the idleness clock; returns the new epoch.
pub fn advance_epoch() -> u64 {
    EPOCH.fetch_add(1, Relaxed) + 1
}

fn bytes(class: SizeClass) -> usize {
    class.batch() * class.size()
}

/// Takes a batch of `class`: from `shard`, else from another shard that holds more than
/// [`STEAL_MIN`] batches or [`STEAL_MIN_BYTES`] (a shard with only a few is likely to need them
/// itself soon).
pub fn pop(class: SizeClass, shard: usize) -> Option<*mut FreeObject> {
    if !holds(class) {
        return None;
    }
    let n = SHARDS.load(Relaxed);
    pop_from(|i| stack(class, i), n, shard, EPOCH.load(Relaxed), bytes(class))
}

/// [`pop`] from `stacks(0..n)`, the shards in use, for shard `shard`: its own stack, else the
/// first other shard whose published count is above [`steal_min`] and still is under its lock.
fn pop_from<'a>(
    stacks: impl Fn(usize) -> &'a Shard,
    n: usize,
    shard: usize,
    epoch: u64,
    bytes: usize,
) -> Option<*mut FreeObject> {
    let shard = shard % n;
    {
        let mut own = stacks(shard).lock();
        own.used_epoch = epoch;
        if let Some(batch) = own.pop(bytes) {
            own.popped_epoch = epoch;
            return Some(batch);
        }
    }
    for k in 1..n {
        let other = stacks((shard + k) % n);
        let spare = steal_min(bytes);
        if other.batches_hint() <= spare {
            continue;
        }
        let mut other = other.lock();
        if other.batches > spare {
            let batch = other.pop(bytes);
            drop(other);
            stacks(shard).lock().popped_epoch = epoch;
            return batch;
        }
    }
    None
}

/// Most batches a shard's stack may hold for [`push_scattered`].
pub const SCATTERED_MAX: usize = 2 * STEAL_MIN;

/// Most bytes a shard's stack may hold for [`push_scattered`]: for the larger classes (a
/// batch of 2 to 9 objects of 6 to 64 KiB) [`SCATTERED_MAX`] batches would pin megabytes per
/// class and shard.
pub const SCATTERED_MAX_BYTES: usize = 256 << 10;

/// Offers `shard` a *scattered* batch of `class` (its objects far apart, as remote frees
/// make them): kept only while this shard's refills are taking batches (a pop in this epoch
/// or the one before) and its stack is short, so that it goes straight back to a thread that
/// allocates (a producer-consumer pattern then moves batches in O(1) instead of object by
/// object through the span lists' locks). Otherwise, as after a program frees a large peak in
/// random order, the caller returns the objects to their spans, which kept here would pin one
/// span each. False when not kept.
pub fn push_scattered(class: SizeClass, shard: usize, batch: *mut FreeObject) -> bool {
    if !holds(class) {
        return false;
    }
    let epoch = EPOCH.load(Relaxed);
    let mut stack = stack(class, shard % SHARDS.load(Relaxed)).lock();
    if !keeps_scattered(stack.batches, bytes(class), stack.popped_epoch, epoch) {
        return false;
    }
    stack.used_epoch = epoch;
    stack.push(batch, bytes(class))
}

/// Whether a stack holding `batches` batches of `bytes` bytes, whose shard last took one in
/// `popped_epoch` (0: never), keeps another scattered batch in epoch `epoch`.
fn keeps_scattered(batches: usize, bytes: usize, popped_epoch: u64, epoch: u64) -> bool {
    batches < SCATTERED_MAX
        && (batches + 1) * bytes <= SCATTERED_MAX_BYTES
        && popped_epoch != 0
        && popped_epoch + 1 >= epoch
}

/// Whether batches of `class` are kept here: not when each object is a whole span.
fn holds(class: SizeClass) -> bool {
    class.info().objects > 1
}

/// Offers a batch of `class` to `shard`; false when the cap is reached (the caller keeps it).
pub fn push(class: SizeClass, shard: usize, batch: *mut FreeObject) -> bool {
    if !holds(class) {
        return false;
    }
    let mut stack = stack(class, shard % SHARDS.load(Relaxed)).lock();
    stack.used_epoch = EPOCH.load(Relaxed);
    stack.push(batch, bytes(class))
}

/// Takes a batch of `class` from a shard unused since epoch `before` (any shard when
/// `before == u64::MAX`), skipping shards that are busy right now and shards whose published
/// count says they are empty (most are: the release tick asks every shard of every class, and
/// locking an untouched one would write, and so back, a page of this table that a reader only
/// maps to the zero page: up to 480 KiB of resident memory for a program that uses a few
/// classes).
pub fn pop_idle(class: SizeClass, before: u64) -> Option<*mut FreeObject> {
    for stack in stacks(class, SHARDS.load(Relaxed)) {
        if stack.batches_hint() == 0 {
            continue;
        }
        let Some(mut stack) = stack.try_lock() else { continue };
        if stack.used_epoch <= before {
            if let Some(batch) = stack.pop(bytes(class)) {
                return Some(batch);
            }
        }
    }
    None
}

/// Batches of `class` held in all shards. A stack never locked holds none and is not locked
/// here either (that would write, and so back, a page of the table that nothing else uses).
pub fn batches(class: SizeClass) -> usize {
    stacks(class, SHARDS.load(Relaxed))
        .filter(|s| s.raw().stats().acquisitions != 0)
        .map(|s| s.lock().batches())
        .sum()
}

/// Every stack's lock, by class from class 1, then by shard (all [`MAX_SHARDS`] of them), for
/// the statistics.
pub fn locks() -> impl DoubleEndedIterator<Item = &'static crate::sync::RawLock> {
    SizeClass::all().flat_map(|class| stacks(class, MAX_SHARDS).map(|s| s.raw()))
}

/// The locks of the shards in use, for the fork handlers (a shard beyond
/// [`SHARDS`] is never locked).
pub fn locks_in_use() -> impl DoubleEndedIterator<Item = &'static crate::sync::RawLock> {
    let n = SHARDS.load(Relaxed);
    SizeClass::all().flat_map(move |class| stacks(class, n).map(|s| s.raw()))
}

/// Shards in use.
pub fn shards() -> usize {
    SHARDS.load(Relaxed)
}

/// Checks every stack of `class`; calls `f` on each batch.
pub fn check_class(class: SizeClass, mut f: impl FnMut(*mut FreeObject)) {
    for stack in stacks(class, MAX_SHARDS) {
        let stack = stack.lock();
        stack.check_invariants();
        stack.for_each(&mut f);
    }
}

/// A refill takes from another shard only if that shard holds more batches than this, or
/// more than [`STEAL_MIN_BYTES`].
pub const STEAL_MIN: usize = 8;

/// A shard keeps at most this many bytes of batches for itself when another shard's refill
/// looks for a batch: for the larger classes, [`STEAL_MIN`] batches would be up to a
/// megabyte that the other shards' threads cannot use and replace with new spans.
pub const STEAL_MIN_BYTES: usize = 64 << 10;

/// The batches of `bytes` bytes that a shard keeps from other shards' refills.
fn steal_min(bytes: usize) -> usize {
    STEAL_MIN.min(STEAL_MIN_BYTES / bytes)
}

/// Batch heads per chunk.
pub const SLOTS_PER_CHUNK: usize = (BLOCK_BYTES - 2 * size_of::<usize>()) / size_of::<usize>();

/// One chunk of the stack.
///
/// Invariant: `slots[..len]` are batch heads; `len <= SLOTS_PER_CHUNK`.
#[repr(C)]
struct Chunk {
    below: *mut Chunk,
    len: usize,
    slots: [*mut FreeObject; SLOTS_PER_CHUNK],
}

const _: () = assert!(size_of::<Chunk>() <= BLOCK_BYTES);

/// Bytes held by every transfer cache of the process.
static TOTAL_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The most bytes all transfer caches together may hold ([`set_capacity`]).
static CAPACITY: AtomicUsize = AtomicUsize::new(TRANSFER_CACHE_BYTES);

/// Sets the cap on the bytes of all transfer caches together (at start-up). Batches already
/// held above a lowered cap stay until they are taken or drained.
pub fn set_capacity(bytes: usize) {
    CAPACITY.store(bytes, Relaxed);
}

/// The cap on the bytes of all transfer caches together.
pub fn capacity() -> usize {
    CAPACITY.load(Relaxed)
}

/// Bytes of the batches all transfer caches hold now.
pub fn held_bytes() -> usize {
    TOTAL_BYTES.load(Relaxed)
}

/// One stack. It does not know its class: the caller passes the batch's bytes.
///
/// Invariants: `top` is null iff the stack is empty; every chunk from `top` down has
/// `len >= 1`; `batches == Σ len`; `spare` is null or an unused chunk.
pub struct TransferCache {
    top: *mut Chunk,
    spare: *mut Chunk,
    batches: usize,
    /// The epoch of the last push or pop through [`push`]/[`pop`].
    used_epoch: u64,
    /// The epoch of the last batch a refill of this shard took (from this stack or another).
    popped_epoch: u64,
}

// SAFETY: the chunks are metadata memory used only under the owning central list's lock.
unsafe impl Send for TransferCache {}

impl Default for TransferCache {
    fn default() -> Self {
        Self::new()
    }
}

impl TransferCache {
    pub const fn new() -> Self {
        TransferCache {
            top: ptr::null_mut(),
            spare: ptr::null_mut(),
            batches: 0,
            used_epoch: 0,
            popped_epoch: 0,
        }
    }

    /// Number of batches held.
    pub fn batches(&self) -> usize {
        self.batches
    }

    /// Keeps a batch of `bytes` bytes if the process-wide cap allows it; otherwise (or when
    /// out of metadata memory) returns false and the caller keeps the batch.
    pub fn push(&mut self, batch: *mut FreeObject, bytes: usize) -> bool {
        if TOTAL_BYTES.fetch_add(bytes, Relaxed) + bytes > capacity() {
            TOTAL_BYTES.fetch_sub(bytes, Relaxed);
            return false;
        }
        // SAFETY: `top`, when set, is a valid chunk of this stack.
        let full = self.top.is_null() || unsafe { (*self.top).len } == SLOTS_PER_CHUNK;
        if full {
            let chunk = if self.spare.is_null() {
                metadata::new_block().cast::<Chunk>()
            } else {
                core::mem::replace(&mut self.spare, ptr::null_mut())
            };
            if chunk.is_null() {
                TOTAL_BYTES.fetch_sub(bytes, Relaxed);
                return false;
            }
            // SAFETY: a fresh or spare chunk, ours alone.
            unsafe {
                (*chunk).below = self.top;
                (*chunk).len = 0;
            }
            self.top = chunk;
        }
        // SAFETY: `top` is a valid chunk with room.
        unsafe {
            let top = &mut *self.top;
            top.slots[top.len] = batch;
            top.len += 1;
        }
        self.batches += 1;
        true
    }

    /// Takes the most recently pushed batch (of `bytes` bytes), if any.
    pub fn pop(&mut self, bytes: usize) -> Option<*mut FreeObject> {
        if self.top.is_null() {
            return None;
        }
        // SAFETY: `top` is a valid chunk with `len >= 1`.
        let batch = unsafe {
            let top = &mut *self.top;
            top.len -= 1;
            top.slots[top.len]
        };
        // SAFETY: as above.
        if unsafe { (*self.top).len } == 0 {
            let empty = self.top;
            // SAFETY: `empty` is valid; it leaves the stack.
            self.top = unsafe { (*empty).below };
            if self.spare.is_null() {
                self.spare = empty;
            } else {
                // SAFETY: the chunk came from `new_block` and nothing refers to it any more.
                unsafe { metadata::delete_block(empty.cast()) };
            }
        }
        self.batches -= 1;
        TOTAL_BYTES.fetch_sub(bytes, Relaxed);
        Some(batch)
    }

    /// Calls `f` on every batch, top first (for checks).
    pub fn for_each(&self, mut f: impl FnMut(*mut FreeObject)) {
        let mut chunk = self.top;
        while !chunk.is_null() {
            // SAFETY: chunks from `top` down are valid.
            let c = unsafe { &*chunk };
            for &batch in c.slots[..c.len].iter().rev() {
                f(batch);
            }
            chunk = c.below;
        }
    }

    /// Checks the invariants on the struct.
    pub fn check_invariants(&self) {
        let mut counted = 0;
        let mut chunk = self.top;
        while !chunk.is_null() {
            // SAFETY: chunks from `top` down are valid.
            let c = unsafe { &*chunk };
            invariant!(c.len >= 1 && c.len <= SLOTS_PER_CHUNK, "chunk holds {} batches", c.len);
            counted += c.len;
            chunk = c.below;
        }
        invariant_eq!(counted, self.batches, "transfer cache batch count");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pop_across_chunks() {
        let mut cache = TransferCache::new();
        let fake = |i: usize| (0x1000 + i * 16) as *mut FreeObject;
        let n = 3 * SLOTS_PER_CHUNK + 5;
        for i in 0..n {
            assert!(cache.push(fake(i), 1));
            if i % 97 == 0 {
                cache.check_invariants();
            }
        }
        assert_eq!(cache.batches(), n);
        let mut seen = 0;
        cache.for_each(|b| {
            assert_eq!(b, fake(n - 1 - seen));
            seen += 1;
        });
        assert_eq!(seen, n);
        for i in (0..n).rev() {
            assert_eq!(cache.pop(1), Some(fake(i)));
            if i % 97 == 0 {
                cache.check_invariants();
            }
        }
        assert_eq!(cache.pop(1), None);
        cache.check_invariants();
    }

    #[test]
    fn a_refill_locks_only_the_shards_worth_taking_from() {
        let stacks: [CachePadded<Shard>; 4] = [const { CachePadded::new(Shard::new()) }; 4];
        let fake = |i: usize| (0x1000 + i * 16) as *mut FreeObject;
        for _ in 0..STEAL_MIN {
            assert!(stacks[1].lock().push(fake(1), 1));
        }
        for _ in 0..=STEAL_MIN {
            assert!(stacks[3].lock().push(fake(3), 1));
        }
        let before: Vec<u64> = stacks.iter().map(|s| s.raw().stats().acquisitions).collect();
        // Shard 0 is empty; shard 1 holds too few to be taken from, shard 2 none.
        assert_eq!(pop_from(|i| &stacks[i], stacks.len(), 0, 7, 1), Some(fake(3)));
        let taken: Vec<u64> =
            stacks.iter().zip(&before).map(|(s, b)| s.raw().stats().acquisitions - b).collect();
        assert_eq!(taken, [2, 0, 0, 1], "own shard twice, the one taken from once");
        assert_eq!(stacks[0].lock().popped_epoch, 7);
        assert_eq!(stacks[3].batches_hint(), STEAL_MIN);
        while stacks[1].lock().pop(1).is_some() {}
        while stacks[3].lock().pop(1).is_some() {}
    }

    #[test]
    fn a_refill_takes_large_batches_from_a_shard_that_holds_few() {
        let stacks: [CachePadded<Shard>; 2] = [const { CachePadded::new(Shard::new()) }; 2];
        let fake = |i: usize| (0x1000 + i * 16) as *mut FreeObject;
        // Two batches of two 53 KiB objects: more than a shard keeps for itself.
        let bytes = 2 * 53248;
        assert!(stacks[1].lock().push(fake(1), bytes));
        assert!(stacks[1].lock().push(fake(2), bytes));
        assert_eq!(pop_from(|i| &stacks[i], stacks.len(), 0, 3, bytes), Some(fake(2)));
        // Small batches: the same count stays with its shard.
        assert_eq!(pop_from(|i| &stacks[i], stacks.len(), 0, 3, 64), None);
        assert_eq!(stacks[1].lock().pop(bytes), Some(fake(1)));
        assert_eq!(steal_min(64 * 64), STEAL_MIN);
        assert_eq!(steal_min(bytes), 0);
    }

    #[test]
    fn scattered_batches_are_kept_only_for_a_shard_that_is_taking_batches() {
        let small = 4 << 10;
        assert!(!keeps_scattered(0, small, 0, 1), "a shard that never took a batch");
        assert!(keeps_scattered(0, small, 5, 5), "took one in this epoch");
        assert!(keeps_scattered(SCATTERED_MAX - 1, small, 5, 6), "or in the one before");
        assert!(!keeps_scattered(0, small, 5, 7), "not for two epochs");
        assert!(!keeps_scattered(SCATTERED_MAX, small, 5, 5), "the stack is long enough");
        // Large batches: bounded by bytes first.
        let large = 2 * 53248;
        assert!(keeps_scattered(1, large, 5, 5));
        assert!(!keeps_scattered(2, large, 5, 5), "the stack holds enough bytes");
    }

    #[test]
    fn the_process_wide_cap_holds() {
        let mut cache = TransferCache::new();
        let before = held_bytes();
        // One push as large as the cap cannot fit next to whatever other tests hold.
        assert!(!cache.push(0x1000 as *mut FreeObject, capacity() + 1));
        assert_eq!(cache.batches(), 0);
        assert!(held_bytes() <= before + capacity());
    }
}
