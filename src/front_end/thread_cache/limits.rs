//! Slow start, overages and the per-list limits: how a list's `max_len` grows on a miss and
//! shrinks when the list keeps overflowing, and the moves of objects between a list and the
//! central lists that keep `len <= max_len` and `capacity` exact.

use super::ThreadCache;
use crate::central_free_list;
use crate::config::{MAX_LIST_BYTES, MAX_LIST_LENGTH, MAX_LIST_OVERAGES};
use crate::free_list;
use crate::free_list::FrontSplit;
use crate::size_class::SizeClass;
use core::ptr;

/// Most lists that one overflow walks side by side ([`ThreadCache::release_with_nearly_full`]).
const WALK_LANES: usize = 8;

/// A list within this many objects of its limit gives a batch back beside an overflowing one.
pub(super) const NEARLY_FULL: i32 = 8;

/// Overflows in a row with scattered batches and no refill that make a phase of scattered
/// frees ([`ThreadCache::release_with_nearly_full`]). A thread that allocates as much as it
/// frees has refills among its overflows: with as many of each in random order, eight
/// overflows in a row come one time in 256.
pub(super) const SCATTERED_STREAK: u32 = 8;

/// The most objects the list of `class` may hold: [`MAX_LIST_LENGTH`], and at most
/// [`MAX_LIST_BYTES`] of them, but never fewer than a batch.
pub(super) fn list_limit(class: SizeClass) -> u32 {
    let by_bytes = (MAX_LIST_BYTES / class.size()).max(class.batch());
    (by_bytes as u32).min(MAX_LIST_LENGTH)
}

impl ThreadCache {
    /// The list of `class` is empty: fetch objects from the central list and return one.
    pub(super) fn refill(&mut self, class: SizeClass) -> *mut u8 {
        let i = class.index();
        // Defensive: a re-entrant free during activation may have left an object here.
        // SAFETY: the list is well formed.
        let object = unsafe { free_list::pop(&mut self.hot[i].head) };
        if !object.is_null() {
            self.hot[i].room += 1;
            return object.cast();
        }
        self.note_event(class);
        // Not a phase of frees alone: no list gives objects back before it must.
        self.scattered_streak = 0;
        let batch = class.batch() as u32;
        let want = self.limits[i].max_len.clamp(1, batch) as usize;
        let (head, n) = central_free_list::refill(class, self.current_shard(), want);
        if n == 0 {
            return ptr::null_mut();
        }
        // SAFETY: `head` is a fresh list of `n` objects; the first leaves it for the program.
        self.hot[i].head = unsafe { free_list::next(head) };
        // SAFETY: as above.
        unsafe { free_list::take_object(head) };
        let len = n as u32 - 1;
        let max_len = self.limits[i].max_len;
        // Slow start: double up to the batch size (a new thread reaches full batches after a
        // handful of misses), then a batch at a time.
        let grown = if max_len < batch {
            (max_len * 2).clamp(1, batch)
        } else {
            (max_len + batch).min(MAX_LIST_LENGTH)
        };
        self.try_set_max_len(class, grown);
        self.hot[i].room = (self.limits[i].max_len - len) as i32;
        self.publish(class);
        self.maybe_scavenge();
        head.cast()
    }

    /// The list of `class` overflowed its `max_len`: give a batch back and adjust the limit.
    pub(super) fn list_too_long(&mut self, class: SizeClass) {
        let i = class.index();
        // The object just freed is the head. It stays in the cache (the batch goes from the
        // objects after it), so that freeing it again right away is still caught: the
        // double-free check searches this list.
        // The list may be empty: a free that re-entered the allocator while the cache was
        // being set up sent its objects on.
        // SAFETY: the list is this thread's and well formed.
        let kept = unsafe { free_list::pop(&mut self.hot[i].head) };
        if !kept.is_null() {
            self.hot[i].room += 1;
        }
        self.note_event(class);
        let batch = class.batch();
        let len = self.len(class);
        self.release_with_nearly_full(class, len.min(batch));
        let max_len = self.limits[i].max_len;
        if max_len < batch as u32 {
            self.try_set_max_len(class, (max_len * 2).clamp(1, batch as u32));
        } else {
            self.note_overage(class);
        }
        if self.hot[i].room == 0 && self.len(class) > 0 {
            self.release(class, 1);
        }
        // SAFETY: `kept` is a dead object of `class`, on no list.
        unsafe {
            if kept.is_null() {
                // Nothing was kept.
            } else if self.hot[i].room > 0 {
                free_list::push(&mut self.hot[i].head, kept);
                self.hot[i].room -= 1;
            } else {
                // No room at all (the budget refused the list any): it goes on alone.
                free_list::set_next(kept, ptr::null_mut());
                central_free_list::flush(class, self.current_shard(), kept, 1, 0);
            }
        }
        self.publish(class);
        self.maybe_scavenge();
    }

    /// Moves the first `n` objects of the list of `class` to the central list, in batches,
    /// and widens `room` accordingly.
    /// Returns the spread of the last batch (0 if none).
    pub(super) fn release(&mut self, class: SizeClass, mut n: usize) -> usize {
        let i = class.index();
        let mut last_spread = 0;
        while n > 0 {
            let chunk = n.min(class.batch());
            // SAFETY: the list holds at least `n >= chunk` objects (callers pass at most
            // `len`); they are dead objects of `class`.
            unsafe {
                let (objects, spread) =
                    free_list::split_front_with_spread(&mut self.hot[i].head, chunk);
                central_free_list::flush(class, self.current_shard(), objects, chunk, spread);
                last_spread = spread;
            }
            self.hot[i].room += chunk as i32;
            n -= chunk;
        }
        last_spread
    }

    /// [`release`](Self::release) of the first `n` objects of the overflowing list of `class`;
    /// when that is a whole batch and the thread is in a phase of scattered frees (the last
    /// [`SCATTERED_STREAK`] batches this cache gave back were scattered,
    /// [`central_free_list::is_scattered`], with no refill among them), also up to a batch of
    /// each of up to `WALK_LANES - 1` other lists within [`NEARLY_FULL`] objects of their limit
    /// (all but their first object, the last freed), all walked side by side
    /// ([`free_list::split_fronts_with_spread`]).
    ///
    /// A program that frees a large structure in random order (scatter-1m) fills the lists of
    /// many classes together, and their overflows take turns: a batch of 64 objects of one of
    /// 31 classes was freed over the last 2 000 frees, from as many pages, and a lone walk of
    /// it waits for a miss at every object (a quarter of scatter-1m's time). The nearly full
    /// lists would overflow within a few frees anyway; walked together, their misses overlap.
    /// A program whose frees are close together (a batch that is not scattered) walks its
    /// lists in the cache, and one that allocates as much as it frees (larson, whose lists
    /// hover near their limits) would only come back sooner for what was released early:
    /// when any scattered overflow released its neighbours, mimalloc-bench's larson made 44.6,
    /// 40.9 and 42.8 million operations a second against 47.4, 44.7 and 45.1 without.
    pub(super) fn release_with_nearly_full(&mut self, class: SizeClass, n: usize) {
        if n < class.batch() || self.scattered_streak < SCATTERED_STREAK {
            let spread = self.release(class, n);
            self.note_batch(class, n, spread);
            return;
        }
        let mut classes = [class; WALK_LANES];
        let mut splits = [FrontSplit::new(&mut self.hot[class.index()].head, n); WALK_LANES];
        let mut lanes = 1;
        let mut others = self.active & !(1 << class.index());
        while others != 0 && lanes < WALK_LANES {
            let i = others.trailing_zeros() as usize;
            others &= others - 1;
            let Some(other) = SizeClass::new(i) else { continue };
            let len = self.len(other);
            if self.hot[i].room <= NEARLY_FULL && len > 1 {
                // The list's first object, the last freed, stays: freeing it again right
                // away is still caught (the double-free check searches the list).
                let count = (len - 1).min(other.batch());
                classes[lanes] = other;
                splits[lanes] = FrontSplit::after_first(&mut self.hot[i].head, count);
                lanes += 1;
            }
        }
        // SAFETY: the heads are of distinct lists of this cache, each holding at least
        // `count` objects (the overflowing one `len >= n`), one more for the others.
        unsafe { free_list::split_fronts_with_spread(&mut splits[..lanes]) };
        self.note_batch(class, n, splits[0].spread);
        let shard = self.current_shard();
        for (lane, split) in splits[..lanes].iter().enumerate() {
            let class = classes[lane];
            if lane > 0 && !central_free_list::is_scattered(class, split.spread) {
                // Objects close together: they go back on their list, where the next walk
                // finds them in the cache.
                // SAFETY: the split detached `first..=last` from this list's front.
                unsafe { free_list::unsplit(split) };
                continue;
            }
            // SAFETY: the split detached a well-formed list of `count` dead objects of `class`.
            unsafe {
                central_free_list::flush(class, shard, split.first, split.count, split.spread)
            };
            self.hot[class.index()].room += split.count as i32;
            if lane > 0 {
                // Released beside the overflowing list, as it would have been within a few
                // frees: its limit shrinks as it would have then.
                self.note_overage(class);
                self.publish(class);
            }
        }
    }

    /// Counts the batch of `n` objects of `class` spread over `spread` bytes that an overflow
    /// gave back in [`scattered_streak`](ThreadCache::scattered_streak).
    fn note_batch(&mut self, class: SizeClass, n: usize, spread: usize) {
        self.scattered_streak =
            if n == class.batch() && central_free_list::is_scattered(class, spread) {
                self.scattered_streak.saturating_add(1)
            } else {
                0
            };
    }

    /// The list of `class` overflowed (or nearly did): if its limit is above a batch, after
    /// [`MAX_LIST_OVERAGES`] of those since it last shrank, its `max_len` shrinks by a batch.
    fn note_overage(&mut self, class: SizeClass) {
        let i = class.index();
        if self.limits[i].max_len <= class.batch() as u32 {
            return;
        }
        self.limits[i].overages += 1;
        if self.limits[i].overages > MAX_LIST_OVERAGES {
            self.limits[i].overages = 0;
            let max_len = self.limits[i].max_len;
            self.set_max_len_and_trim(class, max_len - class.batch() as u32);
        }
    }

    /// Raises or lowers `max_len` of `class` to `new`, keeping `capacity` within the budget
    /// (by shrinking other lists first if needed). Returns whether it was set.
    fn try_set_max_len(&mut self, class: SizeClass, new: u32) -> bool {
        let i = class.index();
        let new = new.min(list_limit(class));
        let old = self.limits[i].max_len;
        if new > old {
            let extra = (new - old) as usize * class.size();
            if self.capacity + extra > self.budget {
                self.make_room(class, self.capacity + extra - self.budget);
                if self.capacity + extra > self.budget {
                    return false;
                }
            }
        }
        self.set_max_len_and_trim(class, new);
        true
    }

    /// Sets `max_len` of `class`, releasing objects beyond it, and fixes `room` and
    /// `capacity`.
    pub(super) fn set_max_len_and_trim(&mut self, class: SizeClass, new: u32) {
        let i = class.index();
        let len = self.len(class);
        if len > new as usize {
            self.release(class, len - new as usize);
        }
        let old = self.limits[i].max_len;
        self.capacity = self.capacity - old as usize * class.size() + new as usize * class.size();
        self.hot[i].room += new as i32 - old as i32;
        self.limits[i].max_len = new;
        if new > 0 {
            self.active |= 1 << i;
        } else {
            self.active &= !(1 << i);
        }
    }

    /// The classes whose lists have a non-zero limit.
    pub(super) fn active_classes(&self) -> impl Iterator<Item = SizeClass> {
        let mut mask = self.active;
        core::iter::from_fn(move || {
            if mask == 0 {
                return None;
            }
            let i = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            SizeClass::new(i)
        })
    }
}
