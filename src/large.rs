//! Large blocks: requests above [`LARGE_THRESHOLD`] get a mapping of their own from the OS.
//!
//! Each block gets a span record of kind `Large` in the page map at the page of the block's
//! first byte, so that `free(p)` and `realloc(p)` find its mapping from the pointer alone and a
//! pointer that is not the start of a live block is recognised. Growing a block moves it with
//! `mremap`, which moves page tables instead of copying bytes.
//!
//! **The mapping cache.** A program that allocates and frees multi-MiB buffers over and over
//! would pay an `mmap`, a page fault per 4 KiB and an `munmap` every time. So freed mappings
//! of up to [`MAX_CACHED_MAPPING`] bytes may be kept, resident, in a small cache (at most
//! [`CACHE_ENTRIES`] ranges and [`CACHE_BYTES`] bytes) and handed out again: a request takes
//! the smallest cached range that holds it, split when the rest is worth keeping; freed
//! ranges merge with cached neighbours. The cache is adaptive, like glibc's mmap threshold: it
//! only keeps mappings while the program shows it reuses them — a large allocation that a
//! mapping unmapped in the last [`DECAY_MS`] could have served turns caching on for the next
//! [`DECAY_MS`] — so a one-off big buffer is still unmapped the moment it is freed. Ranges
//! idle in the cache for [`DECAY_MS`] are unmapped (checked on every large operation and on
//! the release policy's tick), so the memory does go back to the OS.
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
use core::ptr;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Largest mapping the cache keeps.
pub const MAX_CACHED_MAPPING: usize = 32 << 20;
/// Most bytes the cache keeps.
pub const CACHE_BYTES: usize = 64 << 20;
/// Most mappings the cache keeps.
pub const CACHE_ENTRIES: usize = 16;
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
}

const NO_MAPPING: Mapping = Mapping { base: 0, len: 0, at_ms: 0 };

/// The cache of freed mappings.
///
/// Invariants: `entries[..count]` are whole mappings from `os`, each at most
/// `MAX_CACHED_MAPPING` bytes, owned by nobody else, with `bytes == Σ len <= CACHE_BYTES`;
/// `history` holds sizes (not mappings) of recent unmaps.
struct MappingCache {
    entries: [Mapping; CACHE_ENTRIES],
    count: usize,
    bytes: usize,
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
            history: [NO_MAPPING; HISTORY],
            history_next: 0,
            wanted_until_ms: 0,
            freed: [0; FREED_RING],
            freed_next: 0,
        }
    }

    /// Takes a cached mapping for `len` bytes: the smallest that holds it, split if the rest
    /// is worth keeping. A miss that a recently unmapped mapping could have served turns
    /// caching on.
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
            return None;
        };
        self.wanted_until_ms = now.saturating_add(decay);
        let m = self.remove(i);
        if m.len - len >= SPLIT_MIN {
            let rest = Mapping { base: m.base + len, len: m.len - len, at_ms: m.at_ms };
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

    /// Keeps `m` if caching is on and it fits; otherwise returns it for unmapping. Makes room
    /// by evicting the oldest entries (returned through `evicted`).
    fn put(&mut self, m: Mapping, now: u64, evicted: &mut [Mapping; CACHE_ENTRIES]) -> usize {
        let mut n = 0;
        if now >= self.wanted_until_ms || m.len > MAX_CACHED_MAPPING {
            self.remember_unmap(m.len, now);
            evicted[n] = m;
            return 1;
        }
        // Merge with cached neighbours (pieces of one split mapping, or mappings the kernel
        // placed side by side): fewer, bigger entries serve more requests.
        let mut m = Mapping { at_ms: now, ..m };
        let mut i = 0;
        while i < self.count {
            let e = self.entries[i];
            if e.base + e.len == m.base || m.base + m.len == e.base {
                self.remove(i);
                m = Mapping { base: e.base.min(m.base), len: e.len + m.len, at_ms: now };
            } else {
                i += 1;
            }
        }
        while self.count > 0 && (self.count == CACHE_ENTRIES || self.bytes + m.len > CACHE_BYTES) {
            let oldest = (0..self.count).min_by_key(|&i| self.entries[i].at_ms).unwrap_or(0);
            evicted[n] = self.remove(oldest);
            n += 1;
        }
        if m.len > CACHE_BYTES {
            evicted[n] = m;
            return n + 1;
        }
        self.insert(m);
        #[cfg(debug_assertions)]
        self.check_invariants();
        n
    }

    /// Checks the invariants on the struct.
    #[cfg_attr(not(any(test, debug_assertions)), allow(dead_code))]
    fn check_invariants(&self) {
        invariant!(self.count <= CACHE_ENTRIES, "self.count <= CACHE_ENTRIES");
        let sum: usize = self.entries[..self.count].iter().map(|m| m.len).sum();
        invariant_eq!(sum, self.bytes, "cached bytes");
        invariant!(self.bytes <= CACHE_BYTES, "self.bytes <= CACHE_BYTES");
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
        self.history[self.history_next] = Mapping { base: 0, len, at_ms: now };
        self.history_next = (self.history_next + 1) % HISTORY;
    }

    /// Moves entries cached at or before `before` into `evicted`; returns how many.
    fn expire(&mut self, before: u64, evicted: &mut [Mapping; CACHE_ENTRIES]) -> usize {
        let mut n = 0;
        let mut i = 0;
        while i < self.count {
            if self.entries[i].at_ms <= before {
                evicted[n] = self.remove(i);
                n += 1;
            } else {
                i += 1;
            }
        }
        n
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
    let mut evicted = [NO_MAPPING; CACHE_ENTRIES];
    let n = {
        let Some(mut cache) = CACHE.try_lock() else { return };
        if cache.count == 0 {
            return;
        }
        let decay = DECAY.load(Relaxed);
        if decay == u64::MAX {
            return;
        }
        cache.expire(now.saturating_sub(decay), &mut evicted)
    };
    unmap_all(&evicted[..n]);
}

/// Unmaps every cached mapping now.
pub fn flush() {
    let mut evicted = [NO_MAPPING; CACHE_ENTRIES];
    let n = CACHE.lock().expire(u64::MAX, &mut evicted);
    unmap_all(&evicted[..n]);
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
    let record = metadata::new_span();
    if record.is_null() {
        return ptr::null_mut();
    }
    let now = os::now_millis();
    let cached = if align <= OS_PAGE_SIZE && len <= MAX_CACHED_MAPPING {
        CACHE.lock().take(len, now)
    } else {
        None
    };
    let (base, map_len, block) = if let Some(m) = cached {
        if zeroed {
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
    let page = PageId::containing(block);
    if block == 0 || !page_map::ensure(page, Length(1)) {
        if block != 0 {
            unmap_all(&[Mapping { base, len: map_len, at_ms: now }]);
        }
        // SAFETY: the record was never published.
        unsafe { metadata::delete_span(record) };
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
        let m = Mapping { base: (*span).map_base, len: (*span).map_len, at_ms: 0 };
        page_map::clear(PageId::containing(block));
        metadata::delete_span(span);
        (m, block)
    };
    BLOCKS.fetch_sub(1, Relaxed);
    let now = os::now_millis();
    let mut evicted = [NO_MAPPING; CACHE_ENTRIES];
    let n = {
        let mut cache = CACHE.lock();
        let slot = cache.freed_next % FREED_RING;
        cache.freed[slot] = block;
        cache.freed_next = cache.freed_next.wrapping_add(1);
        cache.put(mapping, now, &mut evicted)
    };
    unmap_all(&evicted[..n]);
    decay(now);
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

    #[test]
    fn map_record_free() {
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
        let size = 2 * LARGE_THRESHOLD;
        let p = alloc(size, 8, false);
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
            assert!(!moved.is_null() && moved != p, "with memory it moves");
            assert!(core::slice::from_raw_parts(moved, size).iter().all(|&b| b == 0xA5));
            assert_eq!(page_map::lookup(moved as usize), span);
            assert!(page_map::lookup(p as usize).is_null());
            free(span);
        }
        if guard != libc::MAP_FAILED {
            // SAFETY: the guard page mapped above.
            unsafe { libc::munmap(guard, OS_PAGE_SIZE) };
        }
    }

    #[test]
    fn over_aligned_blocks() {
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
        let p = alloc(LARGE_THRESHOLD + 1, 8, false);
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

    #[test]
    fn cache_turns_on_for_reuse_splits_merges_and_decays() {
        let mut cache = MappingCache::new();
        let mut evicted = [NO_MAPPING; CACHE_ENTRIES];
        let m = Mapping { base: 0x1000_0000, len: 8 << 20, at_ms: 0 };
        // First free: no sign of reuse, so it is unmapped (and remembered).
        assert_eq!(cache.put(m, 100, &mut evicted), 1);
        assert_eq!(cache.count, 0);
        // A much bigger miss is no sign of reuse; one the unmapped mapping could have served
        // is, and the next free is kept.
        assert!(cache.take(20 << 20, 150).is_none());
        assert_eq!(cache.wanted_until_ms, 0);
        assert!(cache.take(8 << 20, 200).is_none());
        assert_eq!(cache.put(m, 300, &mut evicted), 0);
        assert_eq!((cache.count, cache.bytes), (1, 8 << 20));
        // A smaller request splits it; freeing the piece merges it back.
        let piece = cache.take(3 << 20, 310).unwrap();
        assert_eq!((piece.base, piece.len), (m.base, 3 << 20));
        assert_eq!((cache.count, cache.bytes), (1, 5 << 20));
        assert_eq!(cache.put(piece, 320, &mut evicted), 0);
        assert_eq!((cache.count, cache.bytes), (1, 8 << 20));
        assert_eq!(cache.entries[0].base, m.base);
        // A request a little smaller than the range takes all of it.
        assert_eq!(cache.take(15 << 19, 330).map(|m| m.len), Some(8 << 20));
        assert_eq!(cache.put(m, 400, &mut evicted), 0);
        cache.check_invariants();
        // Idle entries expire.
        assert_eq!(cache.expire(399, &mut evicted), 0);
        assert_eq!(cache.expire(400, &mut evicted), 1);
        assert_eq!((cache.count, cache.bytes), (0, 0));
        // Too big to cache.
        let huge = Mapping { base: 0, len: MAX_CACHED_MAPPING + 4096, at_ms: 0 };
        assert_eq!(cache.put(huge, 500, &mut evicted), 1);
    }

    #[test]
    fn repeated_blocks_reuse_one_mapping() {
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
