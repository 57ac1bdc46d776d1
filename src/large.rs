//! Large blocks: requests above [`LARGE_THRESHOLD`] are mapped straight from the OS and
//! unmapped on free.
//!
//! Each block gets a span record of kind `Large` in the page map at the page of the block's
//! first byte, so that `free(p)` and `realloc(p)` find its mapping from the pointer alone and a
//! pointer that is not the start of a live block is recognised. Growing a block moves it with
//! `mremap`, which moves page tables instead of copying bytes.
//!
//! Entry points: [`alloc`], [`free`], [`realloc`], [`usable_size`], [`stats`]. Layers below:
//! `page_map`, `metadata`, `os`.

use crate::config::{LARGE_THRESHOLD, OS_PAGE_SIZE};
use crate::metadata;
use crate::os;
use crate::page_map;
use crate::span::{Length, PageId, Span, SpanKind};
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

static MAPPED_BYTES: AtomicUsize = AtomicUsize::new(0);
static BLOCKS: AtomicUsize = AtomicUsize::new(0);

/// Figures of the large blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LargeStats {
    /// Live large blocks.
    pub blocks: usize,
    /// Bytes mapped for them.
    pub mapped_bytes: usize,
}

pub fn stats() -> LargeStats {
    LargeStats { blocks: BLOCKS.load(Relaxed), mapped_bytes: MAPPED_BYTES.load(Relaxed) }
}

/// Maps a block of at least `size` bytes aligned to `align` (a power of two); null when out
/// of memory or impossibly large.
pub fn alloc(size: usize, align: usize) -> *mut u8 {
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
    let (base, map_len, block) = if align <= OS_PAGE_SIZE {
        match os::map(len) {
            Some(p) => (p.as_ptr() as usize, len, p.as_ptr() as usize),
            None => (0, 0, 0),
        }
    } else {
        // Keep the whole over-sized mapping (it is only virtual) so that the block is one
        // mapping from `map_base`, which `free` unmaps in one call.
        match len.checked_add(align).and_then(os::map) {
            Some(p) => {
                let base = p.as_ptr() as usize;
                (base, len + align, (base + align - 1) & !(align - 1))
            }
            None => (0, 0, 0),
        }
    };
    let page = PageId::containing(block);
    if block == 0 || !page_map::ensure(page, Length(1)) {
        if block != 0 {
            // SAFETY: the mapping was just made and never handed out.
            unsafe { os::unmap(base as *mut u8, map_len) };
        }
        // SAFETY: the record was never published.
        unsafe { metadata::delete_span(record) };
        return ptr::null_mut();
    }
    // SAFETY: a fresh record; the leaf for `page` exists.
    unsafe {
        (*record).init(page, Length::for_bytes(map_len), SpanKind::Large);
        (*record).map_base = base;
        (*record).map_len = map_len;
        (*record).block = block;
        page_map::set(page, record);
    }
    MAPPED_BYTES.fetch_add(map_len, Relaxed);
    BLOCKS.fetch_add(1, Relaxed);
    block as *mut u8
}

/// Unmaps a large block.
///
/// # Safety
/// - `span` is the `Large` record of a live block that nothing uses any more.
pub unsafe fn free(span: *mut Span) {
    // SAFETY: per the caller. The page-map entry is cleared before the unmap so that a block
    // mapped at the same address by another thread right after cannot lose its entry.
    unsafe {
        let (base, len, block) = ((*span).map_base, (*span).map_len, (*span).block);
        page_map::clear(PageId::containing(block));
        os::unmap(base as *mut u8, len);
        metadata::delete_span(span);
        MAPPED_BYTES.fetch_sub(len, Relaxed);
    }
    BLOCKS.fetch_sub(1, Relaxed);
}

/// Bytes of the block the program may use.
///
/// # Safety
/// - `span` is the `Large` record of a live block.
pub unsafe fn usable_size(span: *const Span) -> usize {
    // SAFETY: per the caller.
    unsafe { (*span).map_base + (*span).map_len - (*span).block }
}

/// Resizes a large block to `new_size` (above the large threshold) in place or by moving its
/// mapping; returns the block's new address, or null (and the block unchanged) if that is not
/// possible, in which case the caller copies.
///
/// # Safety
/// - `span` is the `Large` record of a live block owned by the caller.
pub unsafe fn realloc(span: *mut Span, new_size: usize) -> *mut u8 {
    debug_assert!(new_size > LARGE_THRESHOLD);
    // SAFETY: per the caller.
    let s = unsafe { &mut *span };
    if s.block != s.map_base {
        // Over-aligned: mremap only keeps page alignment.
        return ptr::null_mut();
    }
    let Some(new_len) = new_size.checked_next_multiple_of(OS_PAGE_SIZE) else {
        return ptr::null_mut();
    };
    if new_len > isize::MAX as usize {
        return ptr::null_mut();
    }
    if new_len <= s.map_len && new_len * 2 >= s.map_len {
        return s.block as *mut u8;
    }
    let old_page = PageId::containing(s.block);
    page_map::clear(old_page);
    // SAFETY: the mapping is this block's alone; on success the old range is gone.
    let moved = unsafe { os::remap(s.map_base as *mut u8, s.map_len, new_len) };
    let Some(new_base) = moved.map(|p| p.as_ptr() as usize) else {
        // SAFETY: the leaf exists (it held the entry just cleared).
        unsafe { page_map::set(old_page, span) };
        return ptr::null_mut();
    };
    let new_page = PageId::containing(new_base);
    if !page_map::ensure(new_page, Length(1)) {
        // The moved block cannot be recorded, so `free` could never find it again; running on
        // would leak it silently or abort later with a misleading message.
        crate::diag::fatal(format_args!("realloc(): out of memory for the page map"));
    }
    MAPPED_BYTES.fetch_add(new_len, Relaxed);
    MAPPED_BYTES.fetch_sub(s.map_len, Relaxed);
    s.map_base = new_base;
    s.map_len = new_len;
    s.block = new_base;
    s.set_start(new_page);
    s.set_pages(Length::for_bytes(new_len));
    // SAFETY: the leaf exists.
    unsafe { page_map::set(new_page, span) };
    new_base as *mut u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_record_free() {
        let size = LARGE_THRESHOLD + 12345;
        let p = alloc(size, 8);
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
    fn over_aligned_blocks() {
        for align in [8192usize, 1 << 16, 1 << 20, 1 << 22] {
            let p = alloc(LARGE_THRESHOLD + 1, align);
            assert_eq!(p as usize % align, 0);
            let span = page_map::lookup(p as usize);
            // SAFETY: live large block.
            unsafe {
                assert!(usable_size(span) > LARGE_THRESHOLD);
                assert!(realloc(span, 2 * LARGE_THRESHOLD).is_null(), "over-aligned blocks copy");
                free(span);
            }
        }
    }

    #[test]
    fn realloc_moves_contents() {
        let p = alloc(LARGE_THRESHOLD + 1, 8);
        // SAFETY: live large block, written then grown.
        unsafe {
            for i in 0..LARGE_THRESHOLD {
                *p.add(i) = (i % 251) as u8;
            }
            let span = page_map::lookup(p as usize);
            let q = realloc(span, 64 << 20);
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
        assert!(alloc(usize::MAX, 8).is_null());
        assert!(alloc(usize::MAX - 4096, 8).is_null());
        assert!(alloc(1 << 62, 8).is_null());
        assert!(alloc(LARGE_THRESHOLD + 1, 1 << 62).is_null());
    }
}
