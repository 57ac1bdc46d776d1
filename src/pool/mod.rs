//! Memory pools: per-connection (or per-request) region allocation, as in nginx.
//!
//! A server often allocates many small objects for one connection or request and frees them
//! all together when it ends. A [`Pool`] serves that pattern:
//!
//! - **small requests** (up to [`Pool::max_small`], at most [`MAX_SMALL`] bytes) are bumped out
//!   of blocks of the pool's block size and never freed one by one;
//! - **large requests** get their own allocation, recorded on a list inside the pool, freed with
//!   the pool or early with [`Pool::free_large`];
//! - [`Pool::reset`] frees the large blocks and rewinds the small blocks for reuse (a pool
//!   reset again and again does not grow); dropping the pool frees everything.
//!
//! Blocks that keep failing to fit requests stop being searched: each block counts its misses
//! (nginx's `failed` counter) and after [`MAX_FAILED`] of them the search starts at the next
//! block, so allocation stays O(1) as a pool fills.
//!
//! Values allocated with [`Pool::alloc`] whose type needs `Drop` are dropped when the pool is
//! reset or dropped, **in reverse order of allocation** (like locals going out of scope), each
//! exactly once. The pool keeps these cleanup records itself, in its own small memory, as
//! nginx's cleanup handlers.
//!
//! All memory comes from tcalloc ([`TcAlloc`] through `GlobalAlloc`), whatever the program's
//! global allocator is. The C API over the same pool is in `ffi` (`mp_create_pool`, …).
//!
//! A pool is neither `Send` nor `Sync`: it hands out `&mut` references through `&self` (so
//! allocation needs no `&mut`) and may hold values of any type.
//!
//! ```
//! let mut pool = tcalloc::Pool::new(); // or Pool::with_block_size(4096)
//! let name: &mut str = pool.alloc_str("connection 42");
//! name.make_ascii_uppercase();
//! let headers = pool.alloc(Vec::<(String, String)>::new()); // dropped at reset or drop
//! headers.push(("host".into(), "example.com".into()));
//! let raw = pool.alloc_layout(std::alloc::Layout::from_size_align(64, 16).unwrap());
//! assert_eq!(raw.as_ptr() as usize % 16, 0);
//! let big = pool.alloc_slice_copy(&[0u8; 100_000]); // a large block
//! assert!(pool.free_large(big.as_ptr())); // freed early; small blocks never are
//! assert_eq!(pool.stats().large_blocks, 0);
//! pool.reset(); // drops the values, frees the large blocks, rewinds the small ones
//! ```

mod ffi;

use crate::TcAlloc;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::{align_of, needs_drop, size_of};
use core::ptr::{self, NonNull};

/// Default size of a small block, header included.
pub const DEFAULT_BLOCK_SIZE: usize = 16 * 1024;
/// Smallest block size a pool accepts (smaller requests are raised to it).
pub const MIN_BLOCK_SIZE: usize = 256;
/// Largest small request, whatever the block size (as nginx's `NGX_MAX_ALLOC_FROM_POOL`, one
/// page less one byte): bigger requests are large blocks.
pub const MAX_SMALL: usize = 4095;
/// A block that failed to fit this many requests is no longer searched.
pub const MAX_FAILED: u32 = 4;
/// Alignment of small blocks and of `mp_alloc` results.
pub const POOL_ALIGN: usize = 16;

/// The pool could not get memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocError;

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("memory pool: out of memory")
    }
}

impl std::error::Error for AllocError {}

/// A small block: this header, then the bump area `[start, end)`.
///
/// Invariant: `start <= pos <= end`; `[start, pos)` is handed out, `[pos, end)` is free.
struct Block {
    next: *mut Block,
    pos: *mut u8,
    end: *mut u8,
    failed: u32,
}

/// A large allocation. Invariant: `ptr` is null (a spare record) or a live allocation of
/// `layout` from `TcAlloc`.
struct Large {
    next: *mut Large,
    ptr: *mut u8,
    layout: Layout,
}

/// A value to drop on reset or drop.
struct Cleanup {
    next: *mut Cleanup,
    drop: unsafe fn(*mut u8),
    data: *mut u8,
}

/// Figures of a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes handed out since the last reset: of the small blocks (alignment padding and the
    /// pool's own records included) and the large blocks.
    pub bytes_used: usize,
    /// Small blocks held.
    pub blocks: usize,
    /// Bytes in small blocks, headers included.
    pub block_bytes: usize,
    /// Live large blocks.
    pub large_blocks: usize,
    /// Bytes in live large blocks.
    pub large_bytes: usize,
}

/// A memory pool; see the module docs.
///
/// Invariants (checked by [`Pool::check_invariants`]):
/// - `first` is null (no block yet) or the head of a null-terminated chain of blocks, each of
///   `block_size` bytes from `TcAlloc`; `current` is a block of that chain or null, and every
///   block before it has `failed > MAX_FAILED` — or `current` is null and so is `first`;
/// - `large` and `spare` are null-terminated lists of records inside the pool's small blocks;
///   records on `large` are live allocations, records on `spare` have a null `ptr`;
/// - `cleanups` lists, newest first, values that have not been dropped yet.
pub struct Pool {
    block_size: usize,
    max_small: usize,
    first: Cell<*mut Block>,
    current: Cell<*mut Block>,
    large: Cell<*mut Large>,
    spare: Cell<*mut Large>,
    cleanups: Cell<*mut Cleanup>,
    blocks: Cell<usize>,
    large_blocks: Cell<usize>,
    large_bytes: Cell<usize>,
    /// Not `Send` or `Sync` (the raw pointers already make it so; this states the intent).
    _not_thread_safe: PhantomData<*mut u8>,
}

impl Default for Pool {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("block_size", &self.block_size)
            .field("stats", &self.stats())
            .finish()
    }
}

const BLOCK_HEADER: usize = size_of::<Block>().next_multiple_of(POOL_ALIGN);

impl Pool {
    /// A pool with blocks of [`DEFAULT_BLOCK_SIZE`] bytes. No memory is taken until the first
    /// allocation.
    pub const fn new() -> Pool {
        Pool::with_block_size(DEFAULT_BLOCK_SIZE)
    }

    /// A pool whose small blocks are `bytes` long (header included; at least
    /// [`MIN_BLOCK_SIZE`]). Small requests are those up to the block's payload, at most
    /// [`MAX_SMALL`] bytes.
    pub const fn with_block_size(bytes: usize) -> Pool {
        let block_size = if bytes < MIN_BLOCK_SIZE { MIN_BLOCK_SIZE } else { bytes };
        let payload = block_size - BLOCK_HEADER;
        Pool {
            block_size,
            max_small: if payload < MAX_SMALL { payload } else { MAX_SMALL },
            first: Cell::new(ptr::null_mut()),
            current: Cell::new(ptr::null_mut()),
            large: Cell::new(ptr::null_mut()),
            spare: Cell::new(ptr::null_mut()),
            cleanups: Cell::new(ptr::null_mut()),
            blocks: Cell::new(0),
            large_blocks: Cell::new(0),
            large_bytes: Cell::new(0),
            _not_thread_safe: PhantomData,
        }
    }

    /// Size of the pool's small blocks.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The largest request served from the small blocks.
    pub fn max_small(&self) -> usize {
        self.max_small
    }

    /// Moves `value` into the pool. It is dropped when the pool is reset or dropped, if its
    /// type needs it. Aborts (`handle_alloc_error`) when out of memory.
    #[allow(clippy::mut_from_ref)]
    pub fn alloc<T>(&self, value: T) -> &mut T {
        self.try_alloc(value).unwrap_or_else(|_| std::alloc::handle_alloc_error(Layout::new::<T>()))
    }

    /// [`alloc`](Self::alloc), returning an error instead of aborting.
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc<T>(&self, value: T) -> Result<&mut T, AllocError> {
        let p = self.alloc_layout_inner(Layout::new::<T>())?.as_ptr().cast::<T>();
        if needs_drop::<T>() {
            // SAFETY: `p` is valid for a `T`; the cleanup drops it exactly once, before the
            // memory is reused.
            unsafe { self.add_cleanup(drop_value::<T>, p.cast())? };
        }
        // SAFETY: `p` is a fresh, aligned block of `size_of::<T>()` bytes owned by the pool,
        // which outlives the returned reference.
        unsafe {
            p.write(value);
            Ok(&mut *p)
        }
    }

    /// Copies a slice into the pool.
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_slice_copy<T: Copy>(&self, src: &[T]) -> &mut [T] {
        self.try_alloc_slice_copy(src)
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(Layout::for_value(src)))
    }

    /// [`alloc_slice_copy`](Self::alloc_slice_copy), returning an error instead of aborting.
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc_slice_copy<T: Copy>(&self, src: &[T]) -> Result<&mut [T], AllocError> {
        let layout = Layout::array::<T>(src.len()).map_err(|_| AllocError)?;
        let p = self.alloc_layout_inner(layout)?.as_ptr().cast::<T>();
        // SAFETY: `p` holds `src.len()` `T`s and does not overlap `src`; `T: Copy`.
        unsafe {
            ptr::copy_nonoverlapping(src.as_ptr(), p, src.len());
            Ok(core::slice::from_raw_parts_mut(p, src.len()))
        }
    }

    /// Clones a slice into the pool; the clones are dropped with the pool if `T` needs it.
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_slice_clone<T: Clone>(&self, src: &[T]) -> &mut [T] {
        self.try_alloc_slice_clone(src)
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(Layout::for_value(src)))
    }

    /// [`alloc_slice_clone`](Self::alloc_slice_clone), returning an error instead of aborting.
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc_slice_clone<T: Clone>(&self, src: &[T]) -> Result<&mut [T], AllocError> {
        let layout = Layout::array::<T>(src.len()).map_err(|_| AllocError)?;
        let p = self.alloc_layout_inner(layout)?.as_ptr().cast::<T>();
        for (i, item) in src.iter().enumerate() {
            // SAFETY: slot `i` of the fresh array is in bounds. (A panicking `clone` leaks the
            // clones made so far, which is safe.)
            unsafe { p.add(i).write(item.clone()) };
        }
        if needs_drop::<T>() {
            for i in 0..src.len() {
                // SAFETY: each clone is dropped exactly once by its cleanup.
                unsafe { self.add_cleanup(drop_value::<T>, p.add(i).cast())? };
            }
        }
        // SAFETY: all `src.len()` slots were initialised above; the pool outlives the slice.
        Ok(unsafe { core::slice::from_raw_parts_mut(p, src.len()) })
    }

    /// Copies a string into the pool.
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_str(&self, s: &str) -> &mut str {
        self.try_alloc_str(s)
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(Layout::for_value(s)))
    }

    /// [`alloc_str`](Self::alloc_str), returning an error instead of aborting.
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc_str(&self, s: &str) -> Result<&mut str, AllocError> {
        let bytes = self.try_alloc_slice_copy(s.as_bytes())?;
        // SAFETY: a copy of valid UTF-8.
        Ok(unsafe { core::str::from_utf8_unchecked_mut(bytes) })
    }

    /// Raw memory for `layout` (uninitialised, never dropped). Zero-sized layouts get a
    /// dangling, aligned pointer. Aborts when out of memory.
    #[inline]
    pub fn alloc_layout(&self, layout: Layout) -> NonNull<u8> {
        self.try_alloc_layout(layout).unwrap_or_else(|_| std::alloc::handle_alloc_error(layout))
    }

    /// [`alloc_layout`](Self::alloc_layout), returning an error instead of aborting.
    #[inline]
    pub fn try_alloc_layout(&self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        self.alloc_layout_inner(layout)
    }

    #[inline]
    fn alloc_layout_inner(&self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        if layout.size() == 0 {
            // SAFETY: an alignment is never zero.
            return Ok(unsafe { NonNull::new_unchecked(layout.align() as *mut u8) });
        }
        if layout.size() <= self.max_small && layout.align() <= POOL_ALIGN {
            return self.alloc_small(layout.size(), layout.align());
        }
        self.alloc_large(layout)
    }

    /// Bumps `size` bytes aligned to `align` out of the current block (the fast path).
    #[inline(always)]
    fn alloc_small(&self, size: usize, align: usize) -> Result<NonNull<u8>, AllocError> {
        let block = self.current.get();
        if !block.is_null() {
            // SAFETY: `current` is a live block of the chain, owned by the pool.
            let b = unsafe { &mut *block };
            let at = align_up(b.pos as usize, align);
            if at + size <= b.end as usize {
                b.pos = (at + size) as *mut u8;
                // SAFETY: inside a live block, so non-null.
                return Ok(unsafe { NonNull::new_unchecked(at as *mut u8) });
            }
        }
        self.alloc_small_slow(size, align)
    }

    /// The current block is full: try the later blocks, then add one.
    #[cold]
    #[inline(never)]
    fn alloc_small_slow(&self, size: usize, align: usize) -> Result<NonNull<u8>, AllocError> {
        let mut block = self.current.get();
        while !block.is_null() {
            // SAFETY: blocks of the chain are live and owned by the pool.
            let b = unsafe { &mut *block };
            let at = align_up(b.pos as usize, align);
            if at + size <= b.end as usize {
                b.pos = (at + size) as *mut u8;
                // SAFETY: inside a live block, so non-null.
                return Ok(unsafe { NonNull::new_unchecked(at as *mut u8) });
            }
            block = b.next;
        }
        self.alloc_from_new_block(size, align)
    }

    /// Adds a block at the end of the chain and serves the request from it. Every block from
    /// `current` on failed to fit this request: count that, and move `current` past blocks
    /// that failed too often.
    #[cold]
    fn alloc_from_new_block(&self, size: usize, align: usize) -> Result<NonNull<u8>, AllocError> {
        let layout =
            Layout::from_size_align(self.block_size, POOL_ALIGN).map_err(|_| AllocError)?;
        // SAFETY: the block size is non-zero.
        let raw = unsafe { TcAlloc.alloc(layout) };
        if raw.is_null() {
            return Err(AllocError);
        }
        let block = raw.cast::<Block>();
        let start = raw as usize + BLOCK_HEADER;
        let at = align_up(start, align);
        // SAFETY: `raw` is a fresh block of `block_size` bytes; `size <= max_small` fits its
        // payload even after aligning (alignments above POOL_ALIGN are large requests).
        unsafe {
            block.write(Block {
                next: ptr::null_mut(),
                pos: (at + size) as *mut u8,
                end: (raw as usize + self.block_size) as *mut u8,
                failed: 0,
            });
        }
        self.blocks.set(self.blocks.get() + 1);
        // Append, counting the misses of the searched blocks.
        let mut b = self.current.get();
        if b.is_null() {
            self.first.set(block);
            self.current.set(block);
        } else {
            // SAFETY: chain blocks are live.
            unsafe {
                loop {
                    (*b).failed += 1;
                    if (*b).failed > MAX_FAILED && b == self.current.get() {
                        self.current.set((*b).next);
                    }
                    if (*b).next.is_null() {
                        break;
                    }
                    b = (*b).next;
                }
                (*b).next = block;
            }
            if self.current.get().is_null() {
                self.current.set(block);
            }
        }
        // SAFETY: inside the fresh block.
        Ok(unsafe { NonNull::new_unchecked(at as *mut u8) })
    }

    /// A separate allocation from tcalloc, recorded on the large list.
    fn alloc_large(&self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        let record = self.large_record()?;
        // SAFETY: non-zero size.
        let p = unsafe { TcAlloc.alloc(layout) };
        if p.is_null() {
            // Give the record back to the spare list.
            // SAFETY: `record` is a record of this pool, on no list.
            unsafe {
                (*record).next = self.spare.get();
                self.spare.set(record);
            }
            return Err(AllocError);
        }
        // SAFETY: `record` is a record of this pool, on no list.
        unsafe {
            (*record).ptr = p;
            (*record).layout = layout;
            (*record).next = self.large.get();
        }
        self.large.set(record);
        self.large_blocks.set(self.large_blocks.get() + 1);
        self.large_bytes.set(self.large_bytes.get() + layout.size());
        // SAFETY: `p` is non-null.
        Ok(unsafe { NonNull::new_unchecked(p) })
    }

    /// A record for a large block: a spare one, or a new one from the small blocks.
    fn large_record(&self) -> Result<*mut Large, AllocError> {
        let spare = self.spare.get();
        if !spare.is_null() {
            // SAFETY: spare records are valid.
            self.spare.set(unsafe { (*spare).next });
            return Ok(spare);
        }
        let p = self.alloc_small(size_of::<Large>(), align_of::<Large>())?;
        Ok(p.as_ptr().cast())
    }

    /// Registers `drop(data)` to run at reset or drop.
    ///
    /// # Safety
    /// - `drop(data)` is sound to call once, after every reference to `data` is gone.
    unsafe fn add_cleanup(
        &self,
        drop: unsafe fn(*mut u8),
        data: *mut u8,
    ) -> Result<(), AllocError> {
        let p = self.alloc_small(size_of::<Cleanup>(), align_of::<Cleanup>());
        let Ok(p) = p else {
            // Could not record it: drop the value now rather than leak it silently.
            // SAFETY: per the caller; the value was never handed out.
            unsafe { drop(data) };
            return Err(AllocError);
        };
        let record = p.as_ptr().cast::<Cleanup>();
        // SAFETY: a fresh, aligned record in the pool's memory.
        unsafe { record.write(Cleanup { next: self.cleanups.get(), drop, data }) };
        self.cleanups.set(record);
        Ok(())
    }

    /// Frees the large block at `ptr` now; false (and nothing done) if `ptr` is not a live
    /// large block of this pool — a small block, another pool's, or one already freed.
    pub fn free_large(&self, ptr: *const u8) -> bool {
        let mut prev: *mut Large = ptr::null_mut();
        let mut record = self.large.get();
        while !record.is_null() {
            // SAFETY: records on the large list are valid and owned by the pool.
            unsafe {
                let next = (*record).next;
                if ptr::eq((*record).ptr, ptr) {
                    if prev.is_null() {
                        self.large.set(next);
                    } else {
                        (*prev).next = next;
                    }
                    TcAlloc.dealloc((*record).ptr, (*record).layout);
                    self.large_blocks.set(self.large_blocks.get() - 1);
                    self.large_bytes.set(self.large_bytes.get() - (*record).layout.size());
                    (*record).ptr = ptr::null_mut();
                    (*record).next = self.spare.get();
                    self.spare.set(record);
                    return true;
                }
                prev = record;
                record = next;
            }
        }
        false
    }

    /// Drops the values, frees the large blocks, and rewinds the small blocks for reuse.
    pub fn reset(&mut self) {
        self.release(false);
        let mut b = self.first.get();
        while !b.is_null() {
            // SAFETY: chain blocks are live and owned by the pool.
            unsafe {
                (*b).pos = (b as usize + BLOCK_HEADER) as *mut u8;
                (*b).failed = 0;
                b = (*b).next;
            }
        }
        self.current.set(self.first.get());
    }

    /// Runs the cleanups (newest first) and frees the large blocks; with `blocks`, also frees
    /// the small blocks.
    fn release(&mut self, blocks: bool) {
        let mut c = self.cleanups.replace(ptr::null_mut());
        while !c.is_null() {
            // SAFETY: each cleanup record is valid and runs once: the list was detached.
            unsafe {
                let Cleanup { next, drop, data } = c.read();
                drop(data);
                c = next;
            }
        }
        let mut l = self.large.replace(ptr::null_mut());
        while !l.is_null() {
            // SAFETY: records on the large list hold live allocations from `TcAlloc`.
            unsafe {
                TcAlloc.dealloc((*l).ptr, (*l).layout);
                l = (*l).next;
            }
        }
        // Records live in the small blocks, which are rewound or freed: forget them.
        self.spare.set(ptr::null_mut());
        self.large_blocks.set(0);
        self.large_bytes.set(0);
        if blocks {
            let layout = Layout::from_size_align(self.block_size, POOL_ALIGN)
                .expect("the block layout was valid when the blocks were allocated");
            let mut b = self.first.replace(ptr::null_mut());
            while !b.is_null() {
                // SAFETY: chain blocks were allocated from `TcAlloc` with `layout`.
                unsafe {
                    let next = (*b).next;
                    TcAlloc.dealloc(b.cast(), layout);
                    b = next;
                }
            }
            self.current.set(ptr::null_mut());
            self.blocks.set(0);
        }
    }

    /// Figures of the pool (walks the small blocks).
    pub fn stats(&self) -> PoolStats {
        let mut small_used = 0;
        let mut b = self.first.get();
        while !b.is_null() {
            // SAFETY: chain blocks are live.
            unsafe {
                small_used += (*b).pos as usize - (b as usize + BLOCK_HEADER);
                b = (*b).next;
            }
        }
        PoolStats {
            bytes_used: small_used + self.large_bytes.get(),
            blocks: self.blocks.get(),
            block_bytes: self.blocks.get() * self.block_size,
            large_blocks: self.large_blocks.get(),
            large_bytes: self.large_bytes.get(),
        }
    }

    /// Checks the invariants on the struct; panics with the offending values.
    pub fn check_invariants(&self) {
        let mut blocks = 0;
        let mut seen_current = self.current.get().is_null();
        let mut b = self.first.get();
        while !b.is_null() {
            // SAFETY: chain blocks are live.
            let blk = unsafe { &*b };
            let start = b as usize + BLOCK_HEADER;
            assert!(start <= blk.pos as usize && blk.pos <= blk.end, "block bounds");
            assert_eq!(blk.end as usize - b as usize, self.block_size, "block size");
            if b == self.current.get() {
                seen_current = true;
            } else if !seen_current {
                assert!(blk.failed > MAX_FAILED, "a skipped block has failed {}", blk.failed);
            }
            blocks += 1;
            b = blk.next;
        }
        assert!(seen_current, "current is not on the chain");
        assert_eq!(blocks, self.blocks.get(), "block count");
        let mut large = 0;
        let mut bytes = 0;
        let mut l = self.large.get();
        while !l.is_null() {
            // SAFETY: large records are valid.
            unsafe {
                assert!(!(*l).ptr.is_null(), "a freed record on the large list");
                large += 1;
                bytes += (*l).layout.size();
                l = (*l).next;
            }
        }
        assert_eq!((large, bytes), (self.large_blocks.get(), self.large_bytes.get()));
        let mut s = self.spare.get();
        while !s.is_null() {
            // SAFETY: spare records are valid.
            unsafe {
                assert!((*s).ptr.is_null(), "a live record on the spare list");
                s = (*s).next;
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.release(true);
    }
}

/// Drops the `T` at `p`.
///
/// # Safety
/// - `p` points to a live `T` that nothing uses any more.
unsafe fn drop_value<T>(p: *mut u8) {
    // SAFETY: per the caller.
    unsafe { ptr::drop_in_place(p.cast::<T>()) }
}

fn align_up(x: usize, align: usize) -> usize {
    (x + align - 1) & !(align - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(pool.free_large(big.as_ptr()));
        assert!(!pool.free_large(big.as_ptr()), "twice is harmless");
        assert!(!pool.free_large(a.as_ptr()), "small blocks are not freed early");
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
}
