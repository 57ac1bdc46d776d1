//! The OS behind one small contract: the only module that calls `mmap`, `munmap`, `mremap`,
//! `mprotect` and `madvise`.
//!
//! Preconditions, stated once for every function here: addresses and lengths passed in are
//! multiples of [`OS_PAGE_SIZE`] and lengths are non-zero. Errors are returned (`None` or
//! `false`), never raised: the callers turn them into null pointers. Nothing here allocates.

use crate::config::OS_PAGE_SIZE;
use core::ptr::{self, NonNull};

/// Maps `len` bytes of fresh, zeroed, read-write memory. The mapping is accounted (no
/// `MAP_NORESERVE`), so the kernel's overcommit check refuses requests no machine could back,
/// as it does for glibc's `malloc`.
pub fn map(len: usize) -> Option<NonNull<u8>> {
    crate::diag::debug_invariant!(len != 0 && len % OS_PAGE_SIZE == 0, "os::map({len})");
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(p.cast())
    }
}

/// Maps `len` bytes aligned to `align` (a power of two, at least the OS page): maps
/// `len + align` bytes and unmaps the slack on both sides.
pub fn map_aligned(len: usize, align: usize) -> Option<NonNull<u8>> {
    crate::diag::debug_invariant!(align.is_power_of_two() && align >= OS_PAGE_SIZE);
    if align == OS_PAGE_SIZE {
        return map(len);
    }
    trim_to(len, align, map(len.checked_add(align)?)?)
}

/// Reserves `len` bytes of address space aligned to `align` (a power of two, at least the OS
/// page), with no access and no memory behind it: it costs the process address space only
/// (and no overcommit charge) until [`commit`] opens parts of it.
pub fn reserve(len: usize, align: usize) -> Option<NonNull<u8>> {
    crate::diag::debug_invariant!(align.is_power_of_two() && align >= OS_PAGE_SIZE);
    let total = len.checked_add(align)?;
    // SAFETY: as in `map`; the mapping is inaccessible.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            total,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return None;
    }
    trim_to(len, align, NonNull::new(p.cast())?)
}

/// Opens `[p, p + len)` of a [`reserve`]d range for reading and writing (zeroed memory, as
/// from [`map`]); false when the kernel refuses. The range keeps the reservation's
/// `MAP_NORESERVE`, so unlike [`map`]'s memory it is charged to the overcommit account only
/// under strict overcommit (`vm.overcommit_memory = 2`, which ignores the flag).
///
/// # Safety
/// - `[p, p + len)` lies in a range that [`reserve`] returned and was not committed before.
pub unsafe fn commit(p: *mut u8, len: usize) -> bool {
    crate::diag::debug_invariant!(p as usize % OS_PAGE_SIZE == 0 && len % OS_PAGE_SIZE == 0);
    // SAFETY: by the caller's contract the range is reserved by us and holds nothing.
    unsafe { libc::mprotect(p.cast(), len, libc::PROT_READ | libc::PROT_WRITE) == 0 }
}

/// The `len` bytes aligned to `align` inside the fresh mapping at `mapped` of `len + align`
/// bytes; the slack on both sides is unmapped.
fn trim_to(len: usize, align: usize, mapped: NonNull<u8>) -> Option<NonNull<u8>> {
    let total = len + align;
    let base = mapped.as_ptr() as usize;
    let start = (base + align - 1) & !(align - 1);
    let end = start + len;
    if start > base {
        // SAFETY: [base, start) is the head of the mapping just made and nobody uses it.
        unsafe { unmap(base as *mut u8, start - base) };
    }
    if base + total > end {
        // SAFETY: [end, base + total) is the tail of the same mapping.
        unsafe { unmap(end as *mut u8, base + total - end) };
    }
    NonNull::new(start as *mut u8)
}

/// Unmaps `[p, p + len)`.
///
/// # Safety
/// - `[p, p + len)` was mapped by this module and nothing will touch it again.
pub unsafe fn unmap(p: *mut u8, len: usize) {
    crate::diag::debug_invariant!(p as usize % OS_PAGE_SIZE == 0 && len % OS_PAGE_SIZE == 0);
    // SAFETY: by the caller's contract the range is ours and dead.
    let rc = unsafe { libc::munmap(p.cast(), len) };
    crate::diag::debug_invariant!(rc == 0, "munmap({p:?}, {len}) failed");
}

/// Gives the physical memory behind `[p, p + len)` back to the OS. The range stays mapped and
/// reads as zeros the next time it is touched. Returns `false` if the kernel refused.
///
/// # Safety
/// - `[p, p + len)` was mapped by this module and holds no live data.
pub unsafe fn release(p: *mut u8, len: usize) -> bool {
    crate::diag::debug_invariant!(p as usize % OS_PAGE_SIZE == 0 && len % OS_PAGE_SIZE == 0);
    // SAFETY: by the caller's contract the range is ours and its contents are dead.
    unsafe { libc::madvise(p.cast(), len, libc::MADV_DONTNEED) == 0 }
}

/// Resizes the mapping `[p, p + old_len)` to `new_len` bytes without moving it; false when the
/// address space after it is taken.
///
/// # Safety
/// - `[p, p + old_len)` is one mapping made by this module.
pub unsafe fn resize_in_place(p: *mut u8, old_len: usize, new_len: usize) -> bool {
    crate::diag::debug_invariant!(
        old_len % OS_PAGE_SIZE == 0 && new_len % OS_PAGE_SIZE == 0 && new_len != 0
    );
    // SAFETY: by the caller's contract the range is one mapping of ours; without
    // `MREMAP_MAYMOVE` the kernel only grows or shrinks it where it is.
    let q = unsafe { libc::mremap(p.cast(), old_len, new_len, 0) };
    q != libc::MAP_FAILED
}

/// Moves or resizes the mapping `[p, p + old_len)` to `new_len` bytes, keeping its contents,
/// possibly at a new address.
///
/// # Safety
/// - `[p, p + old_len)` is one mapping made by this module; on success the old range must not
///   be used again.
pub unsafe fn remap(p: *mut u8, old_len: usize, new_len: usize) -> Option<NonNull<u8>> {
    crate::diag::debug_invariant!(
        old_len % OS_PAGE_SIZE == 0 && new_len % OS_PAGE_SIZE == 0 && new_len != 0
    );
    // SAFETY: by the caller's contract the range is one mapping of ours.
    let q = unsafe { libc::mremap(p.cast(), old_len, new_len, libc::MREMAP_MAYMOVE) };
    if q == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(q.cast())
    }
}

/// The process's limit on address space (`RLIMIT_AS`) in bytes, `None` if unlimited.
pub fn address_space_limit() -> Option<usize> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid out-parameter.
    if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) } != 0 {
        return None;
    }
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur as usize)
}

/// Resident set size of this process in bytes, read from `/proc/self/statm` without
/// allocating; `None` if it cannot be read.
pub fn resident_bytes() -> Option<usize> {
    let mut buf = [0u8; 128];
    // SAFETY: the path is a NUL-terminated literal; the buffer is valid for its length.
    let n = unsafe {
        let fd = libc::open(c"/proc/self/statm".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return None;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    if n <= 0 {
        return None;
    }
    // statm: size resident shared text lib data dt (in pages)
    let text = &buf[..n as usize];
    let mut fields = text.split(|&b| b == b' ');
    fields.next()?;
    let resident = fields.next()?;
    let mut pages = 0usize;
    for &b in resident {
        if !b.is_ascii_digit() {
            break;
        }
        pages = pages * 10 + (b - b'0') as usize;
    }
    Some(pages * OS_PAGE_SIZE)
}

#[cfg(test)]
std::thread_local! {
    static FAKE_NOW_MS: core::cell::Cell<Option<u64>> = const { core::cell::Cell::new(None) };
}

/// Unit tests of timed policies: this thread's `now_millis` reads `ms` (`None`: the clock).
#[cfg(test)]
pub fn set_fake_now_millis(ms: Option<u64>) {
    FAKE_NOW_MS.with(|c| c.set(ms));
}

/// Milliseconds of a monotonic clock (the coarse clock: a vDSO read, no system call, a few
/// milliseconds of resolution).
pub fn now_millis() -> u64 {
    #[cfg(test)]
    if let Some(ms) = FAKE_NOW_MS.with(|c| c.get()) {
        return ms;
    }
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// The OS page size, as the kernel reports it.
pub fn os_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}
