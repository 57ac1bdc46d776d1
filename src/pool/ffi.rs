//! The C API over [`Pool`]: `mp_create_pool`, `mp_alloc`, … as declared in
//! `include/tcalloc.h`. Exported from `libtcalloc.so` in every build.
//!
//! | call | answer |
//! | --- | --- |
//! | `mp_create_pool(0)` | a pool with the default block size (16 KiB) |
//! | `mp_create_pool(n)`, `n` below 256 | a pool with 256-byte blocks |
//! | `mp_alloc(pool, 0)` (and the other allocators) | a unique pointer (as for 1 byte) |
//! | any call with a NULL pool | NULL (`errno = EINVAL`), or nothing for `mp_reset_pool` / `mp_destroy_pool`, or -1 for `mp_free` |
//! | out of memory | NULL, `errno = ENOMEM` |
//! | `mp_memalign` with an alignment that is not a power of two | NULL, `errno = EINVAL` |
//! | `mp_free(pool, p)` | 0 if `p` was a live large block of `pool` (now freed), else -1 and nothing done |
//!
//! `mp_alloc` and `mp_calloc` return 16-byte aligned memory, `mp_nalloc` unaligned memory.
//! Requests larger than 4095 bytes (or than a block) are large blocks; a large block is freed
//! by `mp_free`, `mp_reset_pool` or `mp_destroy_pool`, small ones only by the last two.

use super::{Pool, DEFAULT_BLOCK_SIZE, POOL_ALIGN};
use crate::global::TcAlloc;
use core::alloc::{GlobalAlloc, Layout};
use core::ffi::{c_int, c_void};
use core::ptr;

/// The opaque C handle: a `Pool` in memory from tcalloc. C pools hold raw memory only, no
/// values with drops.
#[allow(non_camel_case_types)]
pub struct mp_pool_s {
    pool: Pool<'static>,
}

fn set_errno(value: c_int) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = value };
}

/// Allocates `size` bytes aligned to `align` from `pool`, with errno on failure.
///
/// # Safety
/// - `pool` is null or a live pool from `mp_create_pool`.
unsafe fn pool_alloc(pool: *mut mp_pool_s, size: usize, align: usize) -> *mut c_void {
    if pool.is_null() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    let Ok(layout) = Layout::from_size_align(size.max(1), align) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    // SAFETY: per the caller, `pool` is live; the C caller does not share it across threads.
    match unsafe { (*pool).pool.try_alloc_layout(layout) } {
        Ok(p) => p.as_ptr().cast(),
        Err(_) => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// Creates a pool whose small blocks are `size` bytes (0: the default, 16 KiB).
#[no_mangle]
pub extern "C" fn mp_create_pool(size: usize) -> *mut mp_pool_s {
    let block = if size == 0 { DEFAULT_BLOCK_SIZE } else { size };
    let layout = Layout::new::<mp_pool_s>();
    // SAFETY: the handle has a non-zero size.
    let handle = unsafe { TcAlloc.alloc(layout) }.cast::<mp_pool_s>();
    if handle.is_null() {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    }
    // SAFETY: fresh memory for one handle.
    unsafe { handle.write(mp_pool_s { pool: Pool::with_block_size(block) }) };
    handle
}

/// Frees everything the pool holds, and the pool. NULL is ignored.
///
/// # Safety
/// - `pool` is null or a live pool from `mp_create_pool`, not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mp_destroy_pool(pool: *mut mp_pool_s) {
    if pool.is_null() {
        return;
    }
    // SAFETY: per the caller; the handle came from `TcAlloc` with this layout.
    unsafe {
        ptr::drop_in_place(pool);
        TcAlloc.dealloc(pool.cast(), Layout::new::<mp_pool_s>());
    }
}

/// Frees the large blocks and rewinds the small ones. NULL is ignored.
///
/// # Safety
/// - `pool` is null or a live pool; no pointer from it is used afterwards.
#[no_mangle]
pub unsafe extern "C" fn mp_reset_pool(pool: *mut mp_pool_s) {
    if !pool.is_null() {
        // SAFETY: per the caller.
        unsafe { (*pool).pool.reset() };
    }
}

/// `size` bytes aligned to 16.
///
/// # Safety
/// - `pool` is null or a live pool.
#[no_mangle]
pub unsafe extern "C" fn mp_alloc(pool: *mut mp_pool_s, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { pool_alloc(pool, size, POOL_ALIGN) }
}

/// `size` bytes with no alignment.
///
/// # Safety
/// - `pool` is null or a live pool.
#[no_mangle]
pub unsafe extern "C" fn mp_nalloc(pool: *mut mp_pool_s, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    unsafe { pool_alloc(pool, size, 1) }
}

/// `size` zeroed bytes aligned to 16.
///
/// # Safety
/// - `pool` is null or a live pool.
#[no_mangle]
pub unsafe extern "C" fn mp_calloc(pool: *mut mp_pool_s, size: usize) -> *mut c_void {
    // SAFETY: forwarded.
    let p = unsafe { pool_alloc(pool, size, POOL_ALIGN) };
    if !p.is_null() {
        // SAFETY: `p` holds at least `size` bytes.
        unsafe { p.cast::<u8>().write_bytes(0, size) };
    }
    p
}

/// `size` bytes aligned to `alignment`, a power of two.
///
/// # Safety
/// - `pool` is null or a live pool.
#[no_mangle]
pub unsafe extern "C" fn mp_memalign(
    pool: *mut mp_pool_s,
    size: usize,
    alignment: usize,
) -> *mut c_void {
    if !alignment.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    // SAFETY: forwarded.
    unsafe { pool_alloc(pool, size, alignment) }
}

/// Frees a large block of the pool early: 0 if `p` was one, -1 (and nothing done) otherwise.
///
/// # Safety
/// - `pool` is null or a live pool;
/// - if `p` is a large block of `pool`, the caller does not use it afterwards (the contract of
///   `mp_free`, as of `free`).
#[no_mangle]
pub unsafe extern "C" fn mp_free(pool: *mut mp_pool_s, p: *mut c_void) -> c_int {
    if pool.is_null() || p.is_null() {
        return -1;
    }
    // SAFETY: per the caller, `pool` is live and a freed block is not used again; `pool` is
    // a C handle, not reached through the block, and a C pool holds no values to drop.
    if unsafe { (*pool).pool.free_large(p.cast()) } {
        0
    } else {
        -1
    }
}
