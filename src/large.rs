//! Large blocks: requests above [`LARGE_THRESHOLD`] get a mapping of their own from the OS.
//!
//! Each block gets a span record of kind `Large` in the page map at the page of the block's
//! first byte, so that `free(p)` and `realloc(p)` find its mapping from the pointer alone and a
//! pointer that is not the start of a live block is recognised. Growing a block moves it with
//! `mremap`, which moves page tables instead of copying bytes.
//!
//! **The mapping cache.** A program that allocates and frees multi-MiB buffers over and over
//! would pay an `mmap`, a page fault per 4 KiB and an `munmap` every time. So freed mappings
//! may be kept, resident, in a cache and handed out again. Its size follows the program: at
//! most [`CACHE_ENTRIES`] ranges and [`CACHE_BYTES`] bytes, or as many bytes as are mapped for
//! live large blocks if that is more, up to [`CACHE_MAX_BYTES`] (see [`cache_limit`]; a
//! mapping is kept only if it is at most half the limit). A program that cycles through a
//! working set of big blocks thus finds its freed blocks resident, as glibc's programs find
//! them in its heap once its mmap threshold has risen, while a program that frees its blocks
//! lowers the limit as it frees and the cache unmaps what is over it at once: freed large
//! blocks never keep more resident than the live ones need, plus [`CACHE_BYTES`], and never
//! more than [`CACHE_MAX_BYTES`]. A request takes the smallest cached range that holds it,
//! split when the rest is worth keeping; if none does, the largest range is grown with
//! `mremap` (moved if need be, which moves page tables, not bytes), so that only the missing
//! tail is faulted in fresh. Freed ranges merge with cached neighbours.
//!
//! The cache is adaptive, like glibc's mmap threshold: it only keeps mappings while the
//! program shows it reuses them — a large allocation that a mapping unmapped in the last
//! [`DECAY_MS`] could have served turns caching on for the next [`DECAY_MS`] — so a one-off big
//! buffer is still unmapped the moment it is freed. Ranges idle in the cache for [`DECAY_MS`]
//! are unmapped (checked on every large operation and on the release policy's tick), so the
//! memory does go back to the OS.
//!
//! Measured (with `/usr/bin/time`) and left out: `MADV_HUGEPAGE` on new mappings cut
//! malloc-large's page faults from 220 000 to 30 000 but not its kernel time (0.9 to 1.1 s
//! against 0.4 to 0.55 s: with THP `defrag=madvise` a fault may compact memory), and one run
//! in three took twice as long. Not tried: `MADV_FREE` on cached mappings, which would not
//! lower the resident memory reported (lazily freed pages stay counted until the kernel needs
//! them) and would cost a system call per free.
//!
//! Entry points: [`alloc`], [`free`], [`realloc`], [`usable_size`], [`decay`], [`flush`],
//! [`stats`]. Layers below: `page_map`, `metadata`, `os`.

use crate::config::{LARGE_THRESHOLD, OS_PAGE_SIZE};
use crate::diag::{invariant, invariant_eq};
use crate::metadata;
use crate::os;
use crate::page_map;
use crate::span::{Length, PageId, Span, SpanKind};
use crate::sync::Lock;
use core::mem::MaybeUninit;
use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Most bytes the cache keeps while the live large blocks are few (see [`cache_limit`]).
pub const CACHE_BYTES: usize = 64 << 20;
/// Beyond [`CACHE_BYTES`], the cache may keep as many bytes as are mapped for live large
/// blocks, divided by this. On mimalloc-bench's malloc-large (at most 20 live blocks of 5 to
/// 25 MiB; `/usr/bin/time`), a divisor of 1 faulted 210 000 pages in and peaked at 560 MiB
/// resident, 2 faulted 560 000 pages and peaked at 530 MiB, 4 faulted 1.1 million pages
/// (glibc: 510 000 and 534 MiB).
pub const CACHE_LIVE_DIVISOR: usize = 1;
/// The cache never keeps more than this, however many bytes the live blocks take: as the page
/// heap's adaptive reserve, 1 GiB, so that a program with tens of GiB of large blocks does not
/// keep as much again resident in freed ones.
pub const CACHE_MAX_BYTES: usize = 1 << 30;
/// Most mappings the cache keeps.
pub const CACHE_ENTRIES: usize = 64;
/// Mappings taken out of the cache, to be unmapped once its lock is released: room for every
/// entry and the mapping being freed. Left uninitialised until pushed (a zeroed array, 2 KiB,
/// cost two `memset`s at every free: a fifth of an 8 MiB alloc+free pair's time).
struct Evicted {
    items: [MaybeUninit<Mapping>; CACHE_ENTRIES + 1],
    len: usize,
}

impl Evicted {
    fn new() -> Evicted {
        Evicted { items: [const { MaybeUninit::uninit() }; CACHE_ENTRIES + 1], len: 0 }
    }

    /// Adds `m`. Each mapping is evicted once, and there are at most every entry and the one
    /// being freed: the room never runs out (checked: an abort naming tcalloc, not a panic, if
    /// it did).
    fn push(&mut self, m: Mapping) {
        invariant!(self.len < self.items.len(), "more than {} mappings evicted", self.len);
        self.items[self.len].write(m);
        self.len += 1;
    }

    fn as_slice(&self) -> &[Mapping] {
        // SAFETY: the first `len` items were written by `push`.
        unsafe { core::slice::from_raw_parts(self.items.as_ptr().cast(), self.len) }
    }
}

/// How long a cached mapping may stay unused, and how long a sign of reuse keeps the cache on
/// (the default; `TCALLOC_DECAY_MS` changes it).
pub const DECAY_MS: u64 = 1000;
static DECAY: AtomicU64 = AtomicU64::new(DECAY_MS);

/// Sets the decay time (`u64::MAX`: cached mappings never expire on their own).
pub fn set_decay_ms(ms: u64) {
    DECAY.store(ms, Relaxed);
}
/// Recently unmapped sizes remembered to detect reuse.
const HISTORY: usize = 8;
/// A cached mapping at least this much bigger than a request is split, and the rest stays.
const SPLIT_MIN: usize = 1 << 20;

static MAPPED_BYTES: AtomicUsize = AtomicUsize::new(0);
static BLOCKS: AtomicUsize = AtomicUsize::new(0);

#[derive(Clone, Copy)]
struct Mapping {
    base: usize,
    len: usize,
    /// When it entered the cache, or (in `history`) was unmapped.
    at_ms: u64,
    /// `mremap` refused to move it: it spans several kernel mappings (neighbours merged in
    /// the cache), so it is never chosen to grow again.
    unmovable: bool,
}

const NO_MAPPING: Mapping = Mapping { base: 0, len: 0, at_ms: 0, unmovable: false };

/// The cache of freed mappings.
///
/// Invariants: `entries[..count]` are page-aligned ranges of mappings from `os`, disjoint,
/// owned by nobody else, with `bytes == Σ len <= limit`; an entry that is not `unmovable` may
/// still span several kernel mappings (`mremap` then refuses it); `history` holds sizes (not
/// mappings) of recent unmaps.
struct MappingCache {
    entries: [Mapping; CACHE_ENTRIES],
    count: usize,
    bytes: usize,
    /// The limit on `bytes` set by the last `put`: [`cache_limit`] of the live bytes then.
    limit: usize,
    history: [Mapping; HISTORY],
    history_next: usize,
    /// Caching is on until this time.
    wanted_until_ms: u64,
    /// Addresses of the blocks freed last (a ring), to tell a double free from a pointer
    /// that was never a block.
    freed: [usize; FREED_RING],
    freed_next: usize,
}

/// How many freed large-block addresses are remembered for double-free messages.
const FREED_RING: usize = 64;

static CACHE: Lock<MappingCache> = Lock::new(MappingCache::new());

static CACHED_BYTES: AtomicUsize = AtomicUsize::new(0);

impl MappingCache {
    const fn new() -> MappingCache {
        MappingCache {
            entries: [NO_MAPPING; CACHE_ENTRIES],
            count: 0,
            bytes: 0,
            limit: CACHE_BYTES,
            history: [NO_MAPPING; HISTORY],
            history_next: 0,
            wanted_until_ms: 0,
            freed: [0; FREED_RING],
            freed_next: 0,
        }
    }

    /// Takes a cached mapping for `len` bytes: the smallest that holds it, split if the rest
    /// is worth keeping; if none holds it, the largest, shorter than `len` (the caller grows
    /// it, so that only the missing tail is faulted in fresh). A miss that a recently unmapped
    /// mapping could have served turns caching on.
    fn take(&mut self, len: usize, now: u64) -> Option<Mapping> {
        let decay = DECAY.load(Relaxed);
        let best = (0..self.count)
            .filter(|&i| self.entries[i].len >= len)
            .min_by_key(|&i| self.entries[i].len);
        let Some(i) = best else {
            let reused = self
                .history
                .iter()
                .any(|h| h.len != 0 && h.len >= len / 2 && now.saturating_sub(h.at_ms) <= decay);
            if reused {
                self.wanted_until_ms = now.saturating_add(decay);
            }
            let largest = (0..self.count)
                .filter(|&i| !self.entries[i].unmovable)
                .max_by_key(|&i| self.entries[i].len)?;
            return Some(self.remove(largest));
        };
        self.wanted_until_ms = now.saturating_add(decay);
        let m = self.remove(i);
        if m.len - len >= SPLIT_MIN {
            let rest = Mapping { base: m.base + len, len: m.len - len, ..m };
            self.insert(rest);
            return Some(Mapping { len, ..m });
        }
        Some(m)
    }

    fn insert(&mut self, m: Mapping) {
        self.entries[self.count] = m;
        self.count += 1;
        self.bytes += m.len;
        CACHED_BYTES.store(self.bytes, Relaxed);
    }

    fn remove(&mut self, i: usize) -> Mapping {
        let m = self.entries[i];
        self.count -= 1;
        self.entries[i] = self.entries[self.count];
        self.bytes -= m.len;
        CACHED_BYTES.store(self.bytes, Relaxed);
        m
    }

    /// Keeps `m` if caching is on and it fits in the limit that `live` bytes of live large
    /// mappings allow (see [`cache_limit`]); otherwise hands it back for unmapping. Makes room
    /// by evicting the oldest entries, and evicts what the limit, lowered by a shrinking `live`,
    /// no longer allows (all pushed on `evicted`). Returns how many it pushed.
    fn put(&mut self, m: Mapping, now: u64, live: usize, evicted: &mut Evicted) -> usize {
        self.limit = cache_limit(live);
        let before = evicted.len;
        if now >= self.wanted_until_ms || m.len > self.limit / 2 {
            self.remember_unmap(m.len, now);
            evicted.push(m);
            while self.bytes > self.limit {
                let oldest = self.oldest();
                evicted.push(self.remove(oldest));
            }
            return evicted.len - before;
        }
        // Merge with cached neighbours (pieces of one split mapping, or mappings the kernel
        // placed side by side): fewer, bigger entries serve more requests.
        let mut m = Mapping { at_ms: now, ..m };
        let mut i = 0;
        while i < self.count {
            let e = self.entries[i];
            if e.base + e.len == m.base || m.base + m.len == e.base {
                self.remove(i);
                m = Mapping {
                    base: e.base.min(m.base),
                    len: e.len + m.len,
                    at_ms: now,
                    unmovable: e.unmovable || m.unmovable,
                };
            } else {
                i += 1;
            }
        }
        while self.count > 0 && (self.count == CACHE_ENTRIES || self.bytes + m.len > self.limit) {
            let oldest = self.oldest();
            evicted.push(self.remove(oldest));
        }
        if m.len > self.limit {
            evicted.push(m);
            return evicted.len - before;
        }
        self.insert(m);
        #[cfg(debug_assertions)]
        self.check_invariants();
        evicted.len - before
    }

    /// Returns a mapping that `grow` could not move to the cache, marked unmovable, if it fits;
    /// otherwise gives it back for unmapping.
    fn put_back(&mut self, m: Mapping) -> Option<Mapping> {
        if self.count == CACHE_ENTRIES || self.bytes + m.len > self.limit {
            return Some(m);
        }
        self.insert(Mapping { unmovable: true, ..m });
        None
    }

    /// The index of the entry cached longest ago (0 when empty).
    fn oldest(&self) -> usize {
        (0..self.count).min_by_key(|&i| self.entries[i].at_ms).unwrap_or(0)
    }

    /// Checks the invariants on the struct.
    #[cfg_attr(not(any(test, debug_assertions)), allow(dead_code))]
    fn check_invariants(&self) {
        invariant!(self.count <= CACHE_ENTRIES, "self.count <= CACHE_ENTRIES");
        let sum: usize = self.entries[..self.count].iter().map(|m| m.len).sum();
        invariant_eq!(sum, self.bytes, "cached bytes");
        invariant!(self.bytes <= self.limit, "self.bytes <= self.limit");
        for (i, a) in self.entries[..self.count].iter().enumerate() {
            invariant!(
                a.len > 0 && a.base % OS_PAGE_SIZE == 0 && a.len % OS_PAGE_SIZE == 0,
                "a.len > 0 && a.base % OS_PAGE_SIZE == 0 && a.len % OS_PAGE_SIZE == 0"
            );
            for b in &self.entries[i + 1..self.count] {
                invariant!(a.base + a.len <= b.base || b.base + b.len <= a.base, "cached overlap");
            }
        }
    }

    fn remember_unmap(&mut self, len: usize, now: u64) {
        self.history[self.history_next] = Mapping { len, at_ms: now, ..NO_MAPPING };
        self.history_next = (self.history_next + 1) % HISTORY;
    }

    /// Moves entries cached at or before `before` into `evicted`; returns how many.
    fn expire(&mut self, before: u64, evicted: &mut Evicted) -> usize {
        let before_len = evicted.len;
        let mut i = 0;
        while i < self.count {
            if self.entries[i].at_ms <= before {
                evicted.push(self.remove(i));
            } else {
                i += 1;
            }
        }
        evicted.len - before_len
    }

    /// Moves entries idle for the decay time at `now` into `evicted`.
    fn expire_idle(&mut self, now: u64, evicted: &mut Evicted) {
        let decay = DECAY.load(Relaxed);
        if self.count > 0 && decay != u64::MAX {
            self.expire(now.saturating_sub(decay), evicted);
        }
    }
}

/// How many bytes the cache may keep while `live` bytes are mapped for live large blocks:
/// `live / CACHE_LIVE_DIVISOR`, but at least [`CACHE_BYTES`] and at most [`CACHE_MAX_BYTES`]. A
/// mapping may be cached if it is at most half of that.
const fn cache_limit(live: usize) -> usize {
    let relative = live / CACHE_LIVE_DIVISOR;
    if relative > CACHE_MAX_BYTES {
        CACHE_MAX_BYTES
    } else if relative > CACHE_BYTES {
        relative
    } else {
        CACHE_BYTES
    }
}

fn unmap_all(mappings: &[Mapping]) {
    for m in mappings {
        // SAFETY: evicted mappings are whole mappings of ours that nobody uses.
        unsafe { os::unmap(m.base as *mut u8, m.len) };
        MAPPED_BYTES.fetch_sub(m.len, Relaxed);
    }
}

/// Unmaps cached mappings idle for [`DECAY_MS`] or more.
pub fn decay(now: u64) {
    let mut evicted = Evicted::new();
    {
        let Some(mut cache) = CACHE.try_lock() else { return };
        cache.expire_idle(now, &mut evicted);
    }
    unmap_all(evicted.as_slice());
}

/// Unmaps every cached mapping now.
pub fn flush() {
    let mut evicted = Evicted::new();
    CACHE.lock().expire(u64::MAX, &mut evicted);
    unmap_all(evicted.as_slice());
}

/// The locks of this module, in the order the fork handlers take them (a move holds no other
/// allocator lock; the cache's lock is taken alone or after the page heap's).
pub fn locks_for_fork() -> [&'static crate::sync::RawLock; 2] {
    [MOVE_LOCK.raw(), CACHE.raw()]
}

/// Figures of the large blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LargeStats {
    /// Live large blocks.
    pub blocks: usize,
    /// Bytes mapped for live blocks.
    pub mapped_bytes: usize,
    /// Bytes of freed mappings kept in the cache.
    pub cached_bytes: usize,
}

pub fn stats() -> LargeStats {
    let cached_bytes = CACHED_BYTES.load(Relaxed);
    LargeStats {
        blocks: BLOCKS.load(Relaxed),
        mapped_bytes: MAPPED_BYTES.load(Relaxed).saturating_sub(cached_bytes),
        cached_bytes,
    }
}

/// Maps a block of at least `size` bytes aligned to `align` (a power of two), zeroed if
/// `zeroed`; null when out of memory or impossibly large.
pub fn alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let Some(len) = size.max(1).checked_next_multiple_of(OS_PAGE_SIZE) else {
        return ptr::null_mut();
    };
    if len > isize::MAX as usize {
        return ptr::null_mut();
    }
    let now = os::now_millis();
    let cached = if align <= OS_PAGE_SIZE { CACHE.lock().take(len, now) } else { None };
    // A cached mapping shorter than `len` is grown (and zeroed by `grow`).
    let cached = cached.and_then(|m| {
        if m.len >= len {
            Some((m, zeroed))
        } else {
            grow(m, len, zeroed).map(|m| (m, false))
        }
    });
    let (base, map_len, block) = if let Some((m, zero)) = cached {
        if zero {
            // SAFETY: a cached mapping is ours, whole and unused.
            unsafe { (m.base as *mut u8).write_bytes(0, size) };
        }
        (m.base, m.len, m.base)
    } else if align <= OS_PAGE_SIZE {
        decay(now);
        match os::map(len) {
            Some(p) => {
                MAPPED_BYTES.fetch_add(len, Relaxed);
                (p.as_ptr() as usize, len, p.as_ptr() as usize)
            }
            None => (0, 0, 0),
        }
    } else {
        // Keep the whole over-sized mapping (it is only virtual) so that the block is one
        // mapping from `map_base`, which `free` unmaps in one call.
        match len.checked_add(align).and_then(os::map) {
            Some(p) => {
                let base = p.as_ptr() as usize;
                MAPPED_BYTES.fetch_add(len + align, Relaxed);
                (base, len + align, (base + align - 1) & !(align - 1))
            }
            None => (0, 0, 0),
        }
    };
    if block == 0 {
        return ptr::null_mut();
    }
    record_block(base, map_len, block)
}

/// Records the block at `block` in the mapping `[base, base + map_len)` in a new span record
/// and the page map; on failure unmaps the mapping and returns null.
fn record_block(base: usize, map_len: usize, block: usize) -> *mut u8 {
    let record = metadata::new_span();
    let page = PageId::containing(block);
    if record.is_null() || !page_map::ensure(page, Length(1)) {
        unmap_all(&[Mapping { base, len: map_len, ..NO_MAPPING }]);
        if !record.is_null() {
            // SAFETY: the record was never published.
            unsafe { metadata::delete_span(record) };
        }
        return ptr::null_mut();
    }
    // SAFETY: a fresh record; the leaf for `page` exists.
    unsafe {
        Span::init(record, page, Length::for_bytes(map_len), SpanKind::Large);
        (*record).map_base = base;
        (*record).map_len = map_len;
        (*record).set_block(block);
        page_map::set(page, record);
    }
    BLOCKS.fetch_add(1, Relaxed);
    block as *mut u8
}

/// Grows the cached mapping `m` (shorter than `len`) to `len` bytes with `mremap`, in place or
/// moved: its pages stay resident and only the tail is new. Zeroes the old part if `zeroed`;
/// the tail is fresh zeroed memory. `None` if the kernel refuses (`m` spans several kernel
/// mappings, or memory ran out): then `m` goes back to the cache, marked unmovable.
#[cold]
fn grow(m: Mapping, len: usize, zeroed: bool) -> Option<Mapping> {
    // SAFETY: a cached mapping is ours and unused; the old range is not touched again once
    // moved, and is unchanged if not.
    match unsafe { os::remap(m.base as *mut u8, m.len, len) } {
        Some(p) => {
            MAPPED_BYTES.fetch_add(len - m.len, Relaxed);
            if zeroed {
                // SAFETY: the grown mapping is ours; its first `m.len` bytes are the old ones.
                unsafe { p.as_ptr().write_bytes(0, m.len) };
            }
            Some(Mapping { base: p.as_ptr() as usize, len, ..NO_MAPPING })
        }
        None => {
            if let Some(m) = CACHE.lock().put_back(m) {
                unmap_all(&[m]);
            }
            None
        }
    }
}

/// Frees a large block: into the mapping cache, or back to the OS.
///
/// # Safety
/// - `span` is the `Large` record of a live block that nothing uses any more.
pub unsafe fn free(span: *mut Span) {
    // SAFETY: per the caller. The page-map entry is cleared before the mapping can be reused
    // or unmapped, so that a block mapped at the same address right after keeps its entry.
    let (mapping, block) = unsafe {
        let block = (*span).block();
        // Two threads freeing the same block at once both get here; one claims it.
        if (*span).claim_block(block).is_err() {
            crate::diag::double_free("free", block as *mut u8);
        }
        let m = Mapping { base: (*span).map_base, len: (*span).map_len, ..NO_MAPPING };
        page_map::clear(PageId::containing(block));
        metadata::delete_span(span);
        (m, block)
    };
    BLOCKS.fetch_sub(1, Relaxed);
    let now = os::now_millis();
    let mut evicted = Evicted::new();
    {
        let mut cache = CACHE.lock();
        let slot = cache.freed_next % FREED_RING;
        cache.freed[slot] = block;
        cache.freed_next = cache.freed_next.wrapping_add(1);
        // Bytes mapped for the other live blocks (the cache's own and this block's are not).
        let live = MAPPED_BYTES.load(Relaxed).saturating_sub(cache.bytes + mapping.len);
        cache.put(mapping, now, live, &mut evicted);
        // What `decay` does, under the lock already held.
        cache.expire_idle(now, &mut evicted);
    }
    unmap_all(evicted.as_slice());
}

/// Whether `address` is one of the large blocks freed last. Only meaningful for an address
/// that is not a live block's (the caller checked the page map): then a hit is a double free.
pub fn was_freed(address: usize) -> bool {
    address != 0 && CACHE.lock().freed.contains(&address)
}

/// Bytes of the block the program may use.
///
/// # Safety
/// - `span` is the `Large` record of a live block.
pub unsafe fn usable_size(span: *const Span) -> usize {
    // SAFETY: per the caller.
    unsafe { (*span).map_base + (*span).map_len - (*span).block() }
}

/// Resizes a large block to `new_size` (above the large threshold) keeping alignment `align`,
/// in place or by moving its mapping; returns the block's new address, or null (and the block
/// unchanged) if that is not possible, in which case the caller copies.
///
/// # Safety
/// - `span` is the `Large` record of a live block owned by the caller.
pub unsafe fn realloc(span: *mut Span, new_size: usize, align: usize) -> *mut u8 {
    crate::diag::debug_invariant!(new_size > LARGE_THRESHOLD);
    // SAFETY: per the caller.
    let s = unsafe { &mut *span };
    if align > OS_PAGE_SIZE || s.block() != s.map_base {
        // mremap only guarantees OS-page alignment.
        return ptr::null_mut();
    }
    let Some(new_len) = new_size.checked_next_multiple_of(OS_PAGE_SIZE) else {
        return ptr::null_mut();
    };
    if new_len > isize::MAX as usize {
        return ptr::null_mut();
    }
    if new_len <= s.map_len && new_len * 2 >= s.map_len {
        return s.block() as *mut u8;
    }
    // SAFETY: the mapping is this block's alone, owned by the caller.
    if unsafe { os::resize_in_place(s.map_base as *mut u8, s.map_len, new_len) } {
        MAPPED_BYTES.fetch_add(new_len, Relaxed);
        MAPPED_BYTES.fetch_sub(s.map_len, Relaxed);
        s.map_len = new_len;
        s.set_pages(Length::for_bytes(new_len));
        return s.block() as *mut u8;
    }
    // The block must move, to wherever the kernel puts it, and then be recorded in the page
    // map there. Once moved it cannot be moved back safely (the old range may be taken), so a
    // spare page-map leaf is reserved first: recording then cannot fail, and out of memory
    // before the move returns null with the block where it was. One spare serves one move at
    // a time.
    let _moving = MOVE_LOCK.lock();
    if !page_map::reserve_spare_leaf() {
        return ptr::null_mut();
    }
    // SAFETY: the mapping is this block's alone, owned by the caller.
    let Some(moved) = (unsafe { os::remap(s.map_base as *mut u8, s.map_len, new_len) }) else {
        return ptr::null_mut();
    };
    let new_base = moved.as_ptr() as usize;
    let new_page = PageId::containing(new_base);
    let recorded = page_map::ensure_with_spare(new_page);
    crate::diag::invariant!(recorded, "the spare page-map leaf was taken");
    page_map::clear(PageId::containing(s.block()));
    MAPPED_BYTES.fetch_add(new_len, Relaxed);
    MAPPED_BYTES.fetch_sub(s.map_len, Relaxed);
    s.map_base = new_base;
    s.map_len = new_len;
    s.set_block(new_base);
    s.set_start(new_page);
    s.set_pages(Length::for_bytes(new_len));
    // SAFETY: the leaf exists (ensured above).
    unsafe { page_map::set(new_page, span) };
    new_base as *mut u8
}

/// Serialises the moves of large blocks, which share one spare page-map leaf.
static MOVE_LOCK: Lock<()> = Lock::new(());

#[cfg(test)]
mod tests {
    use super::*;

    /// Serialises the tests here that map and unmap: one of them needs the address after its
    /// block to stay taken, which another's `flush` or `free` could undo.
    static MAPPING: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn mapping_lock() -> std::sync::MutexGuard<'static, ()> {
        MAPPING.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A large block of `size` bytes that is one fresh kernel mapping of its own. `alloc` may
    /// take a cached range instead (whatever tests in other modules freed), which can span
    /// several kernel mappings and never moves with `mremap`.
    fn fresh_block(size: usize) -> *mut u8 {
        let len = size.next_multiple_of(OS_PAGE_SIZE);
        let base = os::map(len).expect("memory for a test block").as_ptr() as usize;
        MAPPED_BYTES.fetch_add(len, Relaxed);
        let p = record_block(base, len, base);
        assert!(!p.is_null(), "a record for a test block");
        p
    }

    #[test]
    fn map_record_free() {
        let _serial = mapping_lock();
        let size = LARGE_THRESHOLD + 12345;
        let p = alloc(size, 8, false);
        assert!(!p.is_null());
        let span = page_map::lookup(p as usize);
        // SAFETY: `p` is a live large block.
        unsafe {
            assert_eq!((*span).kind(), SpanKind::Large);
            assert!(usable_size(span) >= size);
            p.write_bytes(0x5A, size);
            free(span);
        }
        assert!(page_map::lookup(p as usize).is_null(), "entry cleared on free");
    }

    #[test]
    fn realloc_out_of_memory_leaves_the_block_where_it_was() {
        let _serial = mapping_lock();
        let size = 2 * LARGE_THRESHOLD;
        // Not `alloc`: a cached range that spans two kernel mappings cannot move at all (it
        // failed CI so, once; see the next test).
        let p = fresh_block(size);
        assert!(!p.is_null());
        // SAFETY: a live block of `size` bytes.
        unsafe { p.write_bytes(0xA5, size) };
        // Take the address space right after the block, so that it cannot grow in place.
        // SAFETY: a fresh mapping; MAP_FIXED_NOREPLACE never replaces an existing one (if the
        // address is taken already, the block cannot grow in place either).
        let guard = unsafe {
            libc::mmap(
                p.add(size).cast(),
                OS_PAGE_SIZE,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        let span = page_map::lookup(p as usize);
        page_map::test_hooks::ENSURE_FAILS.set(true);
        // SAFETY: `span` is the live block's record, owned here.
        let moved = unsafe { realloc(span, 8 * LARGE_THRESHOLD, 8) };
        page_map::test_hooks::ENSURE_FAILS.set(false);
        assert!(moved.is_null(), "no page-map leaf for the new place: null, no abort");
        assert_eq!(page_map::lookup(p as usize), span, "the block is still recorded");
        // SAFETY: the block is still live and unchanged.
        unsafe {
            assert!(usable_size(span) >= size);
            assert!(core::slice::from_raw_parts(p, size).iter().all(|&b| b == 0xA5));
            let moved = realloc(span, 8 * LARGE_THRESHOLD, 8);
            assert!(!moved.is_null(), "with memory it succeeds");
            // Without the guard (another test's mapping held the address, and may be gone by
            // now; or a kernel before 4.17 took MAP_FIXED_NOREPLACE as a hint and put it
            // elsewhere), growing in place is allowed.
            if guard == p.add(size).cast() {
                assert_ne!(moved, p, "the guard stops it growing in place: it moves");
            }
            assert!(core::slice::from_raw_parts(moved, size).iter().all(|&b| b == 0xA5));
            assert_eq!(page_map::lookup(moved as usize), span);
            if moved != p {
                assert!(page_map::lookup(p as usize).is_null());
            }
            free(span);
        }
        if guard != libc::MAP_FAILED {
            // SAFETY: the guard page mapped above.
            unsafe { libc::munmap(guard, OS_PAGE_SIZE) };
        }
    }

    /// The cache merges neighbouring ranges, which may be separate kernel mappings; a block
    /// cut from such a range cannot grow or move with `mremap`. `realloc` then returns null,
    /// leaving the block where it was (the caller copies it to a new block), and the block
    /// frees normally (into the cache, or unmapped: `munmap` takes several mappings).
    #[test]
    fn a_block_over_two_kernel_mappings_is_not_moved_and_stays_whole() {
        let _serial = mapping_lock();
        let size = 2 * LARGE_THRESHOLD;
        let base = os::map(size).expect("memory for a test block").as_ptr();
        // SAFETY: the mapping made above; a changed flag on its second half splits it in two
        // kernel mappings, as two neighbouring mappings merged in the cache are (the flag,
        // which leaves the pages out of core dumps, changes nothing for a test that the cache
        // may hand this range to later).
        let split =
            unsafe { libc::madvise(base.add(size / 2).cast(), size / 2, libc::MADV_DONTDUMP) };
        assert_eq!(split, 0);
        MAPPED_BYTES.fetch_add(size, Relaxed);
        let p = record_block(base as usize, size, base as usize);
        assert_eq!(p, base);
        // SAFETY: a live block of `size` bytes, owned here.
        unsafe {
            p.write_bytes(0x3C, size);
            let span = page_map::lookup(p as usize);
            assert!(realloc(span, 8 * LARGE_THRESHOLD, 8).is_null(), "mremap refuses it");
            assert_eq!(page_map::lookup(p as usize), span, "the block is still recorded");
            assert!(core::slice::from_raw_parts(p, size).iter().all(|&b| b == 0x3C));
            free(span);
        }
        assert!(page_map::lookup(p as usize).is_null());
    }

    #[test]
    fn over_aligned_blocks() {
        let _serial = mapping_lock();
        for align in [8192usize, 1 << 16, 1 << 20, 1 << 22] {
            let p = alloc(LARGE_THRESHOLD + 1, align, false);
            assert_eq!(p as usize % align, 0);
            let span = page_map::lookup(p as usize);
            // SAFETY: live large block.
            unsafe {
                assert!(usable_size(span) > LARGE_THRESHOLD);
                assert!(
                    realloc(span, 2 * LARGE_THRESHOLD, align).is_null(),
                    "over-aligned blocks copy"
                );
                free(span);
            }
        }
    }

    #[test]
    fn realloc_moves_contents() {
        let _serial = mapping_lock();
        // Its own mapping, so that mremap can move it (see `fresh_block`).
        let p = fresh_block(LARGE_THRESHOLD + 1);
        // SAFETY: live large block, written then grown.
        unsafe {
            for i in 0..LARGE_THRESHOLD {
                *p.add(i) = (i % 251) as u8;
            }
            let span = page_map::lookup(p as usize);
            let q = realloc(span, 64 << 20, 8);
            assert!(!q.is_null());
            assert_eq!(page_map::lookup(q as usize), span);
            for i in 0..LARGE_THRESHOLD {
                assert_eq!(*q.add(i), (i % 251) as u8);
            }
            *q.add((64 << 20) - 1) = 1;
            free(span);
        }
    }

    #[test]
    fn impossible_sizes_fail_cleanly() {
        assert!(alloc(usize::MAX, 8, false).is_null());
        assert!(alloc(usize::MAX - 4096, 8, true).is_null());
        assert!(alloc(1 << 62, 8, false).is_null());
        assert!(alloc(LARGE_THRESHOLD + 1, 1 << 62, false).is_null());
    }

    /// A cache with caching turned on until `until`.
    fn wanted_cache(until: u64) -> MappingCache {
        MappingCache { wanted_until_ms: until, ..MappingCache::new() }
    }

    #[test]
    fn cache_limit_follows_the_live_bytes() {
        const MIB: usize = 1 << 20;
        let mut cache = wanted_cache(u64::MAX);
        let mut evicted = Evicted::new();
        // 300 MiB of live blocks: fourteen freed 20 MiB blocks (280 MiB) are all kept.
        for i in 0..14 {
            let m = Mapping { base: (i + 1) << 30, len: 20 * MIB, ..NO_MAPPING };
            assert_eq!(cache.put(m, 10 + i as u64, 300 * MIB, &mut evicted), 0);
        }
        assert_eq!((cache.count, cache.bytes), (14, 280 * MIB));
        cache.check_invariants();
        // A 40 MiB block is at most half of the limit, so it is kept too, evicting the oldest.
        let big = Mapping { base: 20 << 30, len: 40 * MIB, ..NO_MAPPING };
        assert_eq!(cache.put(big, 50, 300 * MIB, &mut evicted), 1);
        assert_eq!(evicted.as_slice()[0].base, 1 << 30);
        assert_eq!(cache.bytes, 300 * MIB);
        // The program frees its blocks: as the live bytes fall, so does the limit, and what is
        // over it goes at once, oldest first, even when the freed mapping itself is not kept.
        let m = Mapping { base: 30 << 30, len: 20 * MIB, ..NO_MAPPING };
        let n = cache.put(m, 60, 100 * MIB, &mut evicted);
        assert_eq!((n, cache.bytes), (11, 100 * MIB));
        let m = Mapping { base: 31 << 30, len: 40 * MIB, ..NO_MAPPING };
        let mut evicted = Evicted::new();
        let n = cache.put(m, 70, 0, &mut evicted);
        assert_eq!(evicted.as_slice()[0].base, 31 << 30, "over half of the 64 MiB limit: not kept");
        assert_eq!((n, cache.bytes), (3, 60 * MIB));
        assert!(cache.bytes <= CACHE_BYTES);
        cache.check_invariants();
        // However many bytes are live, the cache keeps at most 1 GiB.
        assert_eq!(cache_limit(300 * MIB), 300 * MIB);
        assert_eq!(cache_limit(64 << 30), CACHE_MAX_BYTES);
        let m = Mapping { base: 40 << 30, len: CACHE_MAX_BYTES / 2 + 4096, ..NO_MAPPING };
        assert_eq!(cache.put(m, 80, 64 << 30, &mut evicted), 1, "over half of 1 GiB: not kept");
    }

    #[test]
    fn a_miss_takes_the_largest_movable_range_to_grow() {
        const MIB: usize = 1 << 20;
        let mut cache = wanted_cache(u64::MAX);
        let mut evicted = Evicted::new();
        for (i, len) in [4 * MIB, 9 * MIB, 6 * MIB].into_iter().enumerate() {
            let m = Mapping { base: (i + 1) << 30, len, ..NO_MAPPING };
            assert_eq!(cache.put(m, 10, 100 * MIB, &mut evicted), 0);
        }
        let m = cache.take(12 * MIB, 20).expect("a range to grow");
        assert_eq!((m.base, m.len), (2 << 30, 9 * MIB), "the largest");
        // `mremap` refused to move it: it comes back marked and is never offered to grow again,
        // though a request it holds still gets it.
        assert!(cache.put_back(m).is_none());
        assert_eq!(cache.take(12 * MIB, 30).map(|m| m.base), Some(3 << 30), "the 6 MiB range");
        assert_eq!(cache.take(12 * MIB, 40).map(|m| m.base), Some(1 << 30), "the 4 MiB range");
        assert!(cache.take(12 * MIB, 50).is_none(), "only the unmovable one is left");
        let m = cache.take(8 * MIB, 60).expect("it holds 8 MiB");
        assert_eq!((m.base, m.len, m.unmovable), (2 << 30, 8 * MIB, true));
        assert!(cache.entries[0].unmovable, "the rest of it neither");
        cache.check_invariants();
    }

    #[test]
    fn growing_a_cached_mapping_keeps_its_pages() {
        let _serial = mapping_lock();
        let old = 2 * LARGE_THRESHOLD;
        let new = 5 * LARGE_THRESHOLD;
        let p = os::map(old).unwrap().as_ptr();
        // SAFETY: a fresh mapping of `old` bytes.
        unsafe { p.write_bytes(0xC3, old) };
        MAPPED_BYTES.fetch_add(old, Relaxed);
        let m = Mapping { base: p as usize, len: old, ..NO_MAPPING };
        let grown = grow(m, new, true).expect("mremap grows an anonymous mapping");
        assert_eq!(grown.len, new);
        let q = grown.base as *const u8;
        // SAFETY: the grown mapping is `new` bytes of ours.
        unsafe {
            assert!(core::slice::from_raw_parts(q, new).iter().all(|&b| b == 0), "zeroed");
        }
        unmap_all(&[grown]);
    }

    /// One call may evict every entry and the mapping being freed: `Evicted` has room for them
    /// all, and hands them back in the order evicted. `expire_idle` (what `free` runs under
    /// the lock it holds) evicts exactly the entries idle for the decay time.
    #[test]
    fn a_free_may_evict_every_entry_and_expires_the_idle_ones() {
        const MIB: usize = 1 << 20;
        let mut cache = wanted_cache(u64::MAX);
        let mut evicted = Evicted::new();
        for i in 0..CACHE_ENTRIES {
            let m = Mapping { base: (2 * i + 1) << 30, len: MIB, ..NO_MAPPING };
            assert_eq!(cache.put(m, i as u64, 1 << 40, &mut evicted), 0);
        }
        assert_eq!(cache.count, CACHE_ENTRIES);
        // Caching has turned off: the freed mapping goes alone (the 64 cached MiB still fit
        // the limit of no live blocks, 64 MiB).
        cache.wanted_until_ms = 0;
        let big = Mapping { base: 1 << 45, len: 40 * MIB, ..NO_MAPPING };
        assert_eq!(cache.put(big, 100, 0, &mut evicted), 1);
        // Then every entry expires at once: the buffer holds all 65.
        assert_eq!(cache.expire(u64::MAX, &mut evicted), CACHE_ENTRIES);
        let all = evicted.as_slice();
        assert_eq!(all.len(), CACHE_ENTRIES + 1);
        assert_eq!(all[0].base, 1 << 45, "the freed mapping first");
        let mut bases: Vec<usize> = all[1..].iter().map(|m| m.base).collect();
        bases.sort_unstable();
        let expected: Vec<usize> = (0..CACHE_ENTRIES).map(|i| (2 * i + 1) << 30).collect();
        assert_eq!(bases, expected, "each cached mapping once");
        assert_eq!((cache.count, cache.bytes), (0, 0));

        // Entries cached at 0, 500 and 1500 ms; at 2000 ms those idle for the decay time
        // (1000 ms, unchanged in these tests) go.
        assert_eq!(DECAY.load(Relaxed), DECAY_MS);
        let mut cache = wanted_cache(u64::MAX);
        let mut evicted = Evicted::new();
        for (i, at) in [0u64, 500, 1500].into_iter().enumerate() {
            let m = Mapping { base: (2 * i + 1) << 30, len: MIB, ..NO_MAPPING };
            assert_eq!(cache.put(m, at, 1 << 40, &mut evicted), 0);
        }
        cache.expire_idle(2000, &mut evicted);
        let mut gone: Vec<usize> = evicted.as_slice().iter().map(|m| m.base).collect();
        gone.sort_unstable();
        assert_eq!(gone, [1 << 30, 3 << 30]);
        assert_eq!((cache.count, cache.entries[0].base), (1, 5 << 30));
    }

    #[test]
    fn cache_turns_on_for_reuse_splits_merges_and_decays() {
        let mut cache = MappingCache::new();
        let mut evicted = Evicted::new();
        let m = Mapping { base: 0x1000_0000, len: 8 << 20, ..NO_MAPPING };
        // First free: no sign of reuse, so it is unmapped (and remembered).
        assert_eq!(cache.put(m, 100, 0, &mut evicted), 1);
        assert_eq!(cache.count, 0);
        // A much bigger miss is no sign of reuse; one the unmapped mapping could have served
        // is, and the next free is kept.
        assert!(cache.take(20 << 20, 150).is_none());
        assert_eq!(cache.wanted_until_ms, 0);
        assert!(cache.take(8 << 20, 200).is_none());
        assert_eq!(cache.put(m, 300, 0, &mut evicted), 0);
        assert_eq!((cache.count, cache.bytes), (1, 8 << 20));
        // A smaller request splits it; freeing the piece merges it back.
        let piece = cache.take(3 << 20, 310).unwrap();
        assert_eq!((piece.base, piece.len), (m.base, 3 << 20));
        assert_eq!((cache.count, cache.bytes), (1, 5 << 20));
        assert_eq!(cache.put(piece, 320, 0, &mut evicted), 0);
        assert_eq!((cache.count, cache.bytes), (1, 8 << 20));
        assert_eq!(cache.entries[0].base, m.base);
        // A request a little smaller than the range takes all of it.
        assert_eq!(cache.take(15 << 19, 330).map(|m| m.len), Some(8 << 20));
        assert_eq!(cache.put(m, 400, 0, &mut evicted), 0);
        cache.check_invariants();
        // Idle entries expire.
        assert_eq!(cache.expire(399, &mut evicted), 0);
        assert_eq!(cache.expire(400, &mut evicted), 1);
        assert_eq!((cache.count, cache.bytes), (0, 0));
        // Too big to cache.
        let huge = Mapping { len: CACHE_BYTES / 2 + 4096, ..NO_MAPPING };
        assert_eq!(cache.put(huge, 500, 0, &mut evicted), 1);
    }

    #[test]
    fn repeated_blocks_reuse_one_mapping() {
        let _serial = mapping_lock();
        let size = 6 << 20;
        let mut seen = Vec::new();
        for _ in 0..4 {
            let p = alloc(size, 8, true);
            // SAFETY: a live large block of `size` bytes, zeroed.
            unsafe {
                assert!(core::slice::from_raw_parts(p, size).iter().step_by(4096).all(|&b| b == 0));
                p.write_bytes(0xEE, size);
                seen.push(p as usize);
                free(page_map::lookup(p as usize));
            }
        }
        // Other tests map concurrently, so only ask that some round reused a mapping.
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() < 4, "no reuse: {seen:x?}");
        flush();
    }
}
