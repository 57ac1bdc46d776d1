//! Memory pools: per-connection (or per-request) region allocation, as in nginx.
//!
//! A server often allocates many small objects for one connection or request and frees them
//! all together when it ends. A [`Pool`] serves that pattern:
//!
//! - **small requests** (up to [`Pool::max_small`], at most [`MAX_SMALL`] bytes) are bumped out
//!   of blocks of the pool's block size and never freed one by one;
//! - **large requests** get their own allocation, recorded on a list inside the pool, freed with
//!   the pool or early with the `unsafe` [`Pool::free_large`];
//! - [`Pool::reset`] drops the values, frees the large blocks and rewinds the small blocks for
//!   reuse (a pool reset again and again does not grow); dropping the pool frees everything.
//!
//! Blocks that keep failing to fit requests stop being searched: each block counts its misses
//! (nginx's `failed` counter) and after [`MAX_FAILED`] of them the search starts at the next
//! block, so allocation stays O(1) as a pool fills.
//!
//! Values allocated with [`Pool::alloc`] or [`Pool::alloc_slice_clone`] whose type needs `Drop`
//! are dropped when the pool is reset or dropped, **in reverse order of allocation** (like
//! locals going out of scope), each exactly once. The pool keeps these cleanup records itself,
//! in its own small blocks, as nginx's cleanup handlers; a record is taken *before* the value
//! is written, so a failed allocation never leaves a record for a value that is not there.
//!
//! All memory comes from tcalloc ([`TcAlloc`] through `GlobalAlloc`), whatever the program's
//! global allocator is. The C API over the same pool is in `ffi` (`mp_create_pool`, …).
//!
//! # What the types promise
//!
//! - Every reference the pool hands out borrows the pool, so it ends before
//!   [`reset`](Pool::reset) (which takes `&mut self`) or the pool's drop.
//! - `Pool<'a>`: a value moved into the pool ([`alloc`](Pool::alloc),
//!   [`alloc_slice_clone`](Pool::alloc_slice_clone): `T: 'a`) may borrow only data that
//!   outlives `'a`, and `'a` outlives the pool (its `Drop` runs the values' drops), so a
//!   value's `Drop` never sees a dangling reference. The pool is *invariant* in `'a`: a
//!   `&Pool<'static>` cannot be passed where a `&Pool<'short>` is expected and then fed
//!   short-lived borrows. Such a value therefore cannot borrow another value of the same pool
//!   either (the pool would have to outlive itself); `Copy` data, which the pool never drops,
//!   can ([`alloc_slice_copy`](Pool::alloc_slice_copy) has no such bound).
//! - [`free_large`](Pool::free_large) is `unsafe`: the pool cannot see whether references into
//!   the block are still in use. It drops the values stored in the block before freeing it.
//! - A pool is neither `Send` nor `Sync`: it hands out `&mut` references through `&self` via
//!   `Cell`s (two threads allocating through one `&Pool` would race), and it may hold values
//!   that are not `Send` (an `Rc`). Each thread or connection owns its pool.
//! - A value's `Drop` that panics during `reset` or the pool's drop does not stop the others:
//!   the remaining values are still dropped (a second panic aborts, as for a slice's
//!   elements), the memory is rewound or freed, and then the panic goes on.
//!
//! ```
//! let mut pool = tcalloc::Pool::new(); // or Pool::with_block_size(4096)
//! let name: &mut str = pool.alloc_str("connection 42");
//! name.make_ascii_uppercase();
//! let headers = pool.alloc(Vec::<(String, String)>::new()); // dropped at reset or drop
//! headers.push(("host".into(), "example.com".into()));
//! let raw = pool.alloc_layout(std::alloc::Layout::from_size_align(64, 16).unwrap());
//! assert_eq!(raw.as_ptr() as usize % 16, 0);
//! let big = pool.alloc_slice_copy(&[0u8; 100_000]).as_ptr(); // a large block
//! // SAFETY: nothing uses the block after this (the `&mut [u8]` is gone).
//! assert!(unsafe { pool.free_large(big) }); // freed early; small blocks never are
//! assert_eq!(pool.stats().large_blocks, 0);
//! pool.reset(); // drops the values, frees the large blocks, rewinds the small ones
//! ```

mod ffi;

use crate::global::TcAlloc;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::fmt;
use core::marker::PhantomData;
use core::mem::{self, align_of, needs_drop, size_of};
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

/// A large allocation.
///
/// Invariants: `ptr` is null (a spare record) or a live allocation of `layout` from
/// `TcAlloc`; `values` == the number of records on the pool's cleanup list whose `block` is
/// this record (0 on a spare record).
struct Large {
    next: *mut Large,
    ptr: *mut u8,
    layout: Layout,
    values: usize,
}

/// Values to drop on reset or drop: `drop(data, len)` drops `len` values stored from `data`.
///
/// Invariant: `block` is the large block that holds the values (its record is on the large
/// list), or null when they are in a small block or zero-sized.
struct Cleanup {
    next: *mut Cleanup,
    drop: unsafe fn(*mut u8, usize),
    data: *mut u8,
    len: usize,
    block: *mut Large,
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

/// A memory pool whose values may borrow data that outlives `'a`; see the module docs.
///
/// Invariants (checked by [`Pool::check_invariants`]):
/// - `first` is null (no block yet) or the head of a null-terminated chain of blocks, each of
///   `block_size` bytes from `TcAlloc`; `current` is a block of that chain or null, and every
///   block before it has `failed > MAX_FAILED` — or `current` is null and so is `first`;
/// - `large` and `spare` are null-terminated lists of records inside the pool's small blocks;
///   records on `large` are live allocations, records on `spare` have a null `ptr`;
///   `large_blocks` and `large_bytes` count the records on `large` and their bytes;
/// - `cleanups` lists, newest first, values that have not been dropped yet; a record whose
///   values are in a large block names a record on `large`.
///
/// # What the compiler rejects
///
/// A value that borrows a local which dies before the pool (the pool would drop it later,
/// and its `Drop` would read the dangling reference):
///
/// ```compile_fail,E0597
/// struct Reads<'s>(&'s String);
/// impl Drop for Reads<'_> {
///     fn drop(&mut self) {
///         assert!(self.0.is_empty());
///     }
/// }
/// let pool = tcalloc::Pool::new();
/// {
///     let s = String::new();
///     pool.alloc(Reads(&s)); // error[E0597]: `s` does not live long enough
/// }
/// drop(pool);
/// ```
///
/// The same program with `s` declared before the pool compiles:
///
/// ```
/// # struct Reads<'s>(&'s String);
/// # impl Drop for Reads<'_> {
/// #     fn drop(&mut self) {
/// #         assert!(self.0.is_empty());
/// #     }
/// # }
/// let s = String::new();
/// let pool = tcalloc::Pool::new();
/// {
///     pool.alloc(Reads(&s));
/// }
/// drop(pool);
/// ```
///
/// A `Pool<'static>` seen as a pool of a shorter lifetime (were `Pool` covariant in `'a`,
/// `store` would accept it and the pool would keep `Reads(&s)` past `s`):
///
/// ```compile_fail,E0597
/// # struct Reads<'s>(&'s String);
/// # impl Drop for Reads<'_> {
/// #     fn drop(&mut self) {
/// #         assert!(self.0.is_empty());
/// #     }
/// # }
/// fn store<'s>(pool: &tcalloc::Pool<'s>, s: &'s String) {
///     pool.alloc(Reads(s));
/// }
/// let pool: tcalloc::Pool<'static> = tcalloc::Pool::new();
/// {
///     let s = String::new();
///     store(&pool, &s); // error[E0597]: `s` does not live long enough
/// }
/// drop(pool);
/// ```
///
/// With data that does live for `'static`, the same call compiles:
///
/// ```
/// # struct Reads<'s>(&'s String);
/// # impl Drop for Reads<'_> {
/// #     fn drop(&mut self) {
/// #         assert!(self.0.is_empty());
/// #     }
/// # }
/// # fn store<'s>(pool: &tcalloc::Pool<'s>, s: &'s String) {
/// #     pool.alloc(Reads(s));
/// # }
/// let pool: tcalloc::Pool<'static> = tcalloc::Pool::new();
/// {
///     let s: &'static String = Box::leak(Box::new(String::new()));
///     store(&pool, s);
/// }
/// drop(pool);
/// ```
///
/// A value with a `Drop` that borrows another value of the same pool (the pool drops values
/// newest first, but nothing stops the borrowed one from being the newer):
///
/// ```compile_fail,E0597
/// # struct Reads<'s>(&'s String);
/// # impl Drop for Reads<'_> {
/// #     fn drop(&mut self) {
/// #         assert!(self.0.is_empty());
/// #     }
/// # }
/// let pool = tcalloc::Pool::new();
/// let s: &String = pool.alloc(String::new());
/// pool.alloc(Reads(s)); // error[E0597]: `pool` does not live long enough
/// ```
///
/// `Copy` data, which the pool never drops, may borrow values of the same pool:
///
/// ```
/// let pool = tcalloc::Pool::new();
/// let s: &String = pool.alloc(String::from("x"));
/// let refs: &mut [&String] = pool.alloc_slice_copy(&[s, s]);
/// assert_eq!(refs[1], "x");
/// ```
///
/// Two threads allocating through one `&Pool` (a pool is not `Sync`):
///
/// ```compile_fail,E0277
/// let pool = tcalloc::Pool::new();
/// std::thread::scope(|s| {
///     s.spawn(|| *pool.alloc(1u32)); // error[E0277]: `Cell<..>` cannot be shared between threads
///     *pool.alloc(2u32)
/// });
/// ```
///
/// A pool of its own in each thread compiles:
///
/// ```
/// std::thread::scope(|s| {
///     s.spawn(|| *tcalloc::Pool::new().alloc(1u32));
///     *tcalloc::Pool::new().alloc(2u32)
/// });
/// ```
///
/// Moving a pool, perhaps holding an `Rc`, to another thread (a pool is not `Send`):
///
/// ```compile_fail,E0277
/// let pool = tcalloc::Pool::new();
/// pool.alloc(std::rc::Rc::new(1));
/// std::thread::spawn(move || drop(pool)); // error[E0277]: cannot be sent between threads
/// ```
///
/// Creating it in that thread compiles:
///
/// ```
/// std::thread::spawn(move || {
///     let pool = tcalloc::Pool::new();
///     pool.alloc(std::rc::Rc::new(1));
///     drop(pool)
/// })
/// .join()
/// .unwrap();
/// ```
///
/// For [`reset`](Pool::reset) and [`free_large`](Pool::free_large), see their docs.
pub struct Pool<'a> {
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
    /// Unit tests: how many more blocks and large blocks tcalloc may give before it "fails".
    #[cfg(test)]
    fail_after: Cell<Option<usize>>,
    /// The values may borrow data of lifetime `'a`; `Cell` makes the pool invariant in `'a`
    /// (see the type docs), and the `Drop` impl makes `'a` outlive the pool.
    _values: PhantomData<Cell<&'a ()>>,
    /// Not `Send` or `Sync` (the raw pointers and cells already make it so; this states it).
    _not_thread_safe: PhantomData<*mut u8>,
}

impl Default for Pool<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Pool<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("block_size", &self.block_size)
            .field("stats", &self.stats())
            .finish()
    }
}

const BLOCK_HEADER: usize = size_of::<Block>().next_multiple_of(POOL_ALIGN);

impl<'a> Pool<'a> {
    /// A pool with blocks of [`DEFAULT_BLOCK_SIZE`] bytes. No memory is taken until the first
    /// allocation.
    pub const fn new() -> Pool<'a> {
        Pool::with_block_size(DEFAULT_BLOCK_SIZE)
    }

    /// A pool whose small blocks are `bytes` long (header included; at least
    /// [`MIN_BLOCK_SIZE`]). Small requests are those up to the block's payload, at most
    /// [`MAX_SMALL`] bytes. A size no allocation can have makes every small request fail.
    pub const fn with_block_size(bytes: usize) -> Pool<'a> {
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
            #[cfg(test)]
            fail_after: Cell::new(None),
            _values: PhantomData,
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

    /// Moves `value` into the pool. It is dropped when the pool is reset or dropped (or its
    /// large block freed), if its type needs it. Aborts (`handle_alloc_error`) when out of
    /// memory.
    ///
    /// `T: 'a`: whatever the value borrows outlives the pool (see the type docs).
    #[allow(clippy::mut_from_ref)]
    pub fn alloc<T: 'a>(&self, value: T) -> &mut T {
        self.try_alloc(value).unwrap_or_else(|_| std::alloc::handle_alloc_error(Layout::new::<T>()))
    }

    /// [`alloc`](Self::alloc), returning an error instead of aborting. On error the value is
    /// dropped at once and the pool holds nothing of it.
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc<T: 'a>(&self, value: T) -> Result<&mut T, AllocError> {
        // The cleanup record comes first: once the value is written nothing may fail.
        let record = if needs_drop::<T>() { self.cleanup_record()? } else { ptr::null_mut() };
        let (p, block) = self.alloc_raw(Layout::new::<T>())?;
        let p = p.as_ptr().cast::<T>();
        // SAFETY: `p` is fresh, aligned memory for a `T` owned by the pool, which outlives the
        // returned reference.
        unsafe { p.write(value) };
        if !record.is_null() {
            // SAFETY: `record` is unlinked; the `T` at `p` is written, and its drop runs once,
            // at reset, drop or `free_large` of `block`, when the reference is gone.
            unsafe { self.push_cleanup(record, drop_values::<T>, p.cast(), 1, block) };
        }
        // SAFETY: as above.
        Ok(unsafe { &mut *p })
    }

    /// Copies a slice into the pool. (The pool never drops `Copy` data, so `T` may borrow
    /// anything that outlives the returned slice, values of this pool included.)
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_slice_copy<T: Copy>(&self, src: &[T]) -> &mut [T] {
        self.try_alloc_slice_copy(src)
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(Layout::for_value(src)))
    }

    /// [`alloc_slice_copy`](Self::alloc_slice_copy), returning an error instead of aborting.
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc_slice_copy<T: Copy>(&self, src: &[T]) -> Result<&mut [T], AllocError> {
        let layout = Layout::array::<T>(src.len()).map_err(|_| AllocError)?;
        let p = self.alloc_raw(layout)?.0.as_ptr().cast::<T>();
        // SAFETY: `p` holds `src.len()` `T`s (or they are zero-sized) and does not overlap
        // `src`; `T: Copy`.
        unsafe {
            ptr::copy_nonoverlapping(src.as_ptr(), p, src.len());
            Ok(core::slice::from_raw_parts_mut(p, src.len()))
        }
    }

    /// Clones a slice into the pool; the clones are dropped with the pool (or their large
    /// block) if `T` needs it. If a `clone` panics, the clones made so far are dropped.
    #[allow(clippy::mut_from_ref)]
    pub fn alloc_slice_clone<T: Clone + 'a>(&self, src: &[T]) -> &mut [T] {
        self.try_alloc_slice_clone(src)
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(Layout::for_value(src)))
    }

    /// [`alloc_slice_clone`](Self::alloc_slice_clone), returning an error instead of aborting.
    #[allow(clippy::mut_from_ref)]
    pub fn try_alloc_slice_clone<T: Clone + 'a>(&self, src: &[T]) -> Result<&mut [T], AllocError> {
        let layout = Layout::array::<T>(src.len()).map_err(|_| AllocError)?;
        // One record for the whole slice, taken first (see `try_alloc`).
        let record = if needs_drop::<T>() { self.cleanup_record()? } else { ptr::null_mut() };
        let (p, block) = self.alloc_raw(layout)?;
        let p = p.as_ptr().cast::<T>();
        /// Drops the first `done` clones if a `clone` panics.
        struct Clones<T> {
            p: *mut T,
            done: usize,
        }
        impl<T> Drop for Clones<T> {
            fn drop(&mut self) {
                // SAFETY: the first `done` slots hold clones that nothing else owns.
                unsafe { drop_values::<T>(self.p.cast(), self.done) }
            }
        }
        let mut clones = Clones { p, done: 0 };
        for item in src {
            // SAFETY: slot `done < src.len()` of the fresh array is in bounds.
            unsafe { p.add(clones.done).write(item.clone()) };
            clones.done += 1;
        }
        mem::forget(clones);
        if !record.is_null() {
            // SAFETY: `record` is unlinked; all `src.len()` clones are written, and they are
            // dropped once, when the returned slice is gone.
            unsafe { self.push_cleanup(record, drop_values::<T>, p.cast(), src.len(), block) };
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

    /// Raw memory for `layout` (uninitialised, never dropped), valid until the pool is reset
    /// or dropped, or its large block freed. Zero-sized layouts get a dangling, aligned
    /// pointer. Aborts when out of memory.
    #[inline]
    pub fn alloc_layout(&self, layout: Layout) -> NonNull<u8> {
        self.try_alloc_layout(layout).unwrap_or_else(|_| std::alloc::handle_alloc_error(layout))
    }

    /// [`alloc_layout`](Self::alloc_layout), returning an error instead of aborting.
    #[inline]
    pub fn try_alloc_layout(&self, layout: Layout) -> Result<NonNull<u8>, AllocError> {
        Ok(self.alloc_raw(layout)?.0)
    }

    /// Memory for `layout`, and the record of the large block that holds it (null when it is
    /// in a small block or zero-sized).
    #[inline]
    fn alloc_raw(&self, layout: Layout) -> Result<(NonNull<u8>, *mut Large), AllocError> {
        if layout.size() == 0 {
            let dangling = ptr::without_provenance_mut::<u8>(layout.align());
            // SAFETY: an alignment is never zero.
            return Ok((unsafe { NonNull::new_unchecked(dangling) }, ptr::null_mut()));
        }
        if layout.size() <= self.max_small && layout.align() <= POOL_ALIGN {
            return Ok((self.alloc_small(layout.size(), layout.align())?, ptr::null_mut()));
        }
        let record = self.alloc_large(layout)?;
        // SAFETY: a record just put on the large list holds a live, non-null allocation.
        Ok((unsafe { NonNull::new_unchecked((*record).ptr) }, record))
    }

    /// Memory from tcalloc for a small block or a large request; null when out of memory.
    /// (Unit tests can make it fail after a number of calls.)
    ///
    /// # Safety
    /// - `layout` has a non-zero size.
    #[inline]
    unsafe fn tcalloc_alloc(&self, layout: Layout) -> *mut u8 {
        #[cfg(test)]
        if let Some(left) = self.fail_after.get() {
            if left == 0 {
                return ptr::null_mut();
            }
            self.fail_after.set(Some(left - 1));
        }
        // SAFETY: per the caller.
        unsafe { TcAlloc.alloc(layout) }
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
        let raw = unsafe { self.tcalloc_alloc(layout) };
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

    /// A separate allocation from tcalloc, recorded on the large list; returns its record.
    fn alloc_large(&self, layout: Layout) -> Result<*mut Large, AllocError> {
        let record = self.large_record()?;
        // SAFETY: non-zero size (zero-sized layouts never get here).
        let p = unsafe { self.tcalloc_alloc(layout) };
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
            record.write(Large { next: self.large.get(), ptr: p, layout, values: 0 });
        }
        self.large.set(record);
        self.large_blocks.set(self.large_blocks.get() + 1);
        self.large_bytes.set(self.large_bytes.get() + layout.size());
        Ok(record)
    }

    /// A record for a large block, on no list: a spare one, or a new one from the small blocks.
    fn large_record(&self) -> Result<*mut Large, AllocError> {
        let spare = self.spare.get();
        if !spare.is_null() {
            // SAFETY: spare records are valid.
            self.spare.set(unsafe { (*spare).next });
            return Ok(spare);
        }
        let p = self.alloc_small(size_of::<Large>(), align_of::<Large>())?.as_ptr().cast::<Large>();
        // SAFETY: fresh, aligned memory for a record; a spare record has a null `ptr`.
        unsafe {
            p.write(Large {
                next: ptr::null_mut(),
                ptr: ptr::null_mut(),
                layout: Layout::new::<u8>(),
                values: 0,
            })
        };
        Ok(p)
    }

    /// Room for a cleanup record, not linked yet. Taken before the value it is for is
    /// written, so that nothing can fail once the value is in the pool. (If the value's own
    /// allocation fails, the room stays unused until the next reset.)
    fn cleanup_record(&self) -> Result<*mut Cleanup, AllocError> {
        let p = self.alloc_small(size_of::<Cleanup>(), align_of::<Cleanup>())?;
        Ok(p.as_ptr().cast())
    }

    /// Links `record` to run `drop(data, len)` at reset or drop (or when `block` is freed).
    ///
    /// # Safety
    /// - `record` came from `cleanup_record` and is not linked;
    /// - `drop(data, len)` is sound to call once, after every reference to the values is
    ///   gone; the values are stored in `block` (a record on the large list), or `block` is
    ///   null and they are in a small block or zero-sized.
    unsafe fn push_cleanup(
        &self,
        record: *mut Cleanup,
        drop: unsafe fn(*mut u8, usize),
        data: *mut u8,
        len: usize,
        block: *mut Large,
    ) {
        // SAFETY: `record` is fresh, aligned room for a record (per the caller).
        unsafe { record.write(Cleanup { next: self.cleanups.get(), drop, data, len, block }) };
        self.cleanups.set(record);
        if !block.is_null() {
            // SAFETY: `block` is a live record on the large list (per the caller).
            unsafe { (*block).values += 1 };
        }
    }

    /// Frees the large block at `ptr` now: drops the values stored in it that are waiting for
    /// a drop (newest first), then gives the memory back. Returns false (and does nothing) if
    /// `ptr` is not a live large block of this pool — a small block, another pool's, a pointer
    /// inside a block, or one already freed.
    ///
    /// Drops run here may use the pool (allocate, free other blocks); a panicking drop does
    /// not stop the others, and the block is freed before the panic goes on.
    ///
    /// # Safety
    /// - Nothing uses the block after this call: no reference or pointer into it (from
    ///   [`alloc_slice_copy`](Self::alloc_slice_copy), [`alloc`](Self::alloc), …) is used
    ///   again, whether made before the call or copied from one;
    /// - `self` is not reached through the block (say, through an `Rc<Pool>` stored in it).
    ///
    /// When `ptr` is not a live large block of this pool the call is always safe.
    ///
    /// (A safe signature taking the block's `&mut [T]` by value would not do: the caller could
    /// pass a reborrow `&mut *big` and go on using `big`, or keep a pointer made before.)
    ///
    /// Called without `unsafe`, the program is rejected (the freed slice could be written):
    ///
    /// ```compile_fail,E0133
    /// let pool = tcalloc::Pool::new();
    /// let big = pool.alloc_slice_copy(&[7u8; 100_000]);
    /// pool.free_large(big.as_ptr()); // error[E0133]: call to unsafe function
    /// big[0] = 1;
    /// ```
    ///
    /// With the caller's promise, and the block no longer used:
    ///
    /// ```
    /// let pool = tcalloc::Pool::new();
    /// let big = pool.alloc_slice_copy(&[7u8; 100_000]);
    /// big[0] = 1;
    /// let p = big.as_ptr();
    /// // SAFETY: `big` is not used after this.
    /// assert!(unsafe { pool.free_large(p) });
    /// ```
    pub unsafe fn free_large(&self, ptr: *const u8) -> bool {
        let Some(record) = self.unlink_large(ptr) else {
            return false;
        };
        /// Frees the block and keeps its record as a spare, even if a drop panics.
        struct FreeBlock<'p, 'a> {
            pool: &'p Pool<'a>,
            record: *mut Large,
        }
        impl Drop for FreeBlock<'_, '_> {
            fn drop(&mut self) {
                let record = self.record;
                // SAFETY: `record` was unlinked from the large list: its block is live and
                // freed here once; the record itself lives in the pool's small blocks.
                unsafe {
                    TcAlloc.dealloc((*record).ptr, (*record).layout);
                    (*record).ptr = ptr::null_mut();
                    (*record).next = self.pool.spare.get();
                }
                self.pool.spare.set(record);
            }
        }
        // SAFETY: `record` is a live record, just unlinked.
        let values = unsafe { self.detach_cleanups(record) };
        let free = FreeBlock { pool: self, record };
        // SAFETY: the records were detached, so they run once; per the caller, nothing uses
        // the values any more.
        unsafe { run_cleanups(values) };
        drop(free);
        true
    }

    /// Takes the large block at `ptr` off the large list and out of the counts.
    fn unlink_large(&self, ptr: *const u8) -> Option<*mut Large> {
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
                    self.large_blocks.set(self.large_blocks.get() - 1);
                    self.large_bytes.set(self.large_bytes.get() - (*record).layout.size());
                    (*record).next = ptr::null_mut();
                    return Some(record);
                }
                prev = record;
                record = next;
            }
        }
        None
    }

    /// Unlinks the cleanup records of the values stored in the large block `block` and
    /// returns them as a list, newest first.
    ///
    /// # Safety
    /// - `block` is a valid large record of this pool.
    unsafe fn detach_cleanups(&self, block: *mut Large) -> *mut Cleanup {
        let mut head: *mut Cleanup = ptr::null_mut();
        let mut tail: *mut Cleanup = ptr::null_mut();
        // SAFETY: `block` is valid (per the caller); the cleanup records are valid, and the
        // links walked are the list head or a record's `next`.
        unsafe {
            let mut left = (*block).values;
            let mut link: *mut *mut Cleanup = self.cleanups.as_ptr();
            while left > 0 && !(*link).is_null() {
                let c = *link;
                if (*c).block == block {
                    *link = (*c).next;
                    (*c).next = ptr::null_mut();
                    if tail.is_null() {
                        head = c;
                    } else {
                        (*tail).next = c;
                    }
                    tail = c;
                    left -= 1;
                } else {
                    link = &raw mut (*c).next;
                }
            }
            debug_assert_eq!(left, 0, "large block {:p}: cleanup records missing", (*block).ptr);
            (*block).values = 0;
        }
        head
    }

    /// Drops the values, frees the large blocks, and rewinds the small blocks for reuse.
    ///
    /// It takes `&mut self`, so every reference the pool handed out is gone:
    ///
    /// ```compile_fail,E0502
    /// let mut pool = tcalloc::Pool::new();
    /// let x = pool.alloc(String::from("dropped by reset"));
    /// pool.reset(); // error[E0502]: `pool` is also borrowed as immutable (by `x`)
    /// x.push('!');
    /// ```
    ///
    /// Nor does a reference outlive the pool:
    ///
    /// ```compile_fail,E0505
    /// let pool = tcalloc::Pool::new();
    /// let x = pool.alloc(String::from("dropped with the pool"));
    /// drop(pool); // error[E0505]: cannot move out of `pool` because it is borrowed
    /// x.push('!');
    /// ```
    ///
    /// Used before the reset, and a fresh one after it:
    ///
    /// ```
    /// let mut pool = tcalloc::Pool::new();
    /// let x = pool.alloc(String::from("dropped by reset"));
    /// x.push('!');
    /// pool.reset();
    /// let x = pool.alloc(String::from("dropped with the pool"));
    /// x.push('!');
    /// drop(pool);
    /// ```
    pub fn reset(&mut self) {
        self.release(false);
    }

    /// Runs the cleanups (newest first), frees the large blocks, then rewinds the small
    /// blocks (`free_blocks` false: a reset) or frees them (the pool's drop). The memory is
    /// released even when a drop panics; the panic goes on once the pool is consistent.
    fn release(&mut self, free_blocks: bool) {
        /// Releases the memory when the cleanups are done, or unwinding.
        struct ReleaseMemory<'p, 'a> {
            pool: &'p mut Pool<'a>,
            free_blocks: bool,
        }
        impl Drop for ReleaseMemory<'_, '_> {
            fn drop(&mut self) {
                self.pool.release_memory(self.free_blocks);
            }
        }
        let values = self.cleanups.replace(ptr::null_mut());
        let release = ReleaseMemory { pool: self, free_blocks };
        // SAFETY: the list was detached, so each record runs once; `&mut self` means no
        // reference to the values is left.
        unsafe { run_cleanups(values) };
        drop(release);
    }

    /// Frees the large blocks; rewinds or frees the small ones. The cleanups have run.
    fn release_memory(&mut self, free_blocks: bool) {
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
        if free_blocks {
            let mut b = self.first.replace(ptr::null_mut());
            while !b.is_null() {
                // (Only when there is a block: a pool whose block size no allocation can
                // have never made one, and its drop must not panic.)
                let layout = Layout::from_size_align(self.block_size, POOL_ALIGN)
                    .expect("the block layout was valid when the blocks were allocated");
                // SAFETY: chain blocks were allocated from `TcAlloc` with `layout`.
                unsafe {
                    let next = (*b).next;
                    TcAlloc.dealloc(b.cast(), layout);
                    b = next;
                }
            }
            self.current.set(ptr::null_mut());
            self.blocks.set(0);
        } else {
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
        let mut values = 0;
        let mut l = self.large.get();
        while !l.is_null() {
            // SAFETY: large records are valid.
            let record = unsafe { &*l };
            assert!(!record.ptr.is_null(), "a freed record on the large list");
            let mut count = 0;
            let mut c = self.cleanups.get();
            while !c.is_null() {
                // SAFETY: cleanup records are valid.
                let cleanup = unsafe { &*c };
                count += usize::from(cleanup.block == l);
                c = cleanup.next;
            }
            assert_eq!(count, record.values, "cleanups of large block {:p}", record.ptr);
            large += 1;
            bytes += record.layout.size();
            values += record.values;
            l = record.next;
        }
        assert_eq!((large, bytes), (self.large_blocks.get(), self.large_bytes.get()));
        let mut in_large = 0;
        let mut c = self.cleanups.get();
        while !c.is_null() {
            // SAFETY: cleanup records are valid.
            let cleanup = unsafe { &*c };
            in_large += usize::from(!cleanup.block.is_null());
            c = cleanup.next;
        }
        assert_eq!(in_large, values, "cleanups naming a block that is not on the large list");
        let mut s = self.spare.get();
        while !s.is_null() {
            // SAFETY: spare records are valid.
            unsafe {
                assert!((*s).ptr.is_null(), "a live record on the spare list");
                assert_eq!((*s).values, 0, "a spare record with values");
                s = (*s).next;
            }
        }
    }
}

impl Drop for Pool<'_> {
    fn drop(&mut self) {
        self.release(true);
    }
}

/// Runs a detached list of cleanup records, newest first. If a drop panics, the rest still
/// run while the panic unwinds (a second panic aborts, as when a slice's elements are
/// dropped), so each value is dropped once.
///
/// # Safety
/// - the list is detached (no one else runs these records) and its records are valid;
/// - each record's values are live and nothing uses them any more.
unsafe fn run_cleanups(mut list: *mut Cleanup) {
    /// Runs the rest of the list if a drop panics.
    struct RunRest(*mut Cleanup);
    impl Drop for RunRest {
        fn drop(&mut self) {
            // SAFETY: the rest of the list that the caller of `run_cleanups` vouched for.
            unsafe { run_cleanups(self.0) }
        }
    }
    while !list.is_null() {
        // SAFETY: per the caller; the record is copied out before its values are dropped.
        let Cleanup { next, drop, data, len, .. } = unsafe { list.read() };
        let rest = RunRest(next);
        // SAFETY: per the caller.
        unsafe { drop(data, len) };
        mem::forget(rest);
        list = next;
    }
}

/// Drops the `len` values of type `T` stored from `p`, the last first. If one panics, the
/// others are still dropped (a second panic aborts).
///
/// # Safety
/// - `p` points to `len` live `T`s that nothing uses any more.
unsafe fn drop_values<T>(p: *mut u8, len: usize) {
    /// Drops the elements not dropped yet if one panics.
    struct DropRest<T> {
        p: *mut T,
        left: usize,
    }
    impl<T> Drop for DropRest<T> {
        fn drop(&mut self) {
            // SAFETY: the first `left` values are live and unused (per the caller).
            unsafe { drop_values::<T>(self.p.cast(), self.left) }
        }
    }
    // Newest first: the last element was written last.
    let p = p.cast::<T>();
    let mut left = len;
    while left > 0 {
        left -= 1;
        let rest = DropRest { p, left };
        // SAFETY: element `left < len` is live and unused (per the caller).
        unsafe { ptr::drop_in_place(p.add(left)) };
        mem::forget(rest);
    }
}

fn align_up(x: usize, align: usize) -> usize {
    (x + align - 1) & !(align - 1)
}

#[cfg(test)]
mod tests;
