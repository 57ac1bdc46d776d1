//! The rest of glibc's malloc API, C23's sized frees and jemalloc's size queries, so that a
//! program preloaded with `libtcalloc.so` gets tcalloc's answers instead of glibc's (which
//! would describe glibc's empty heap).
//!
//! Like `ffi`, every function exists under a `tcalloc_` prefix in every build, and with the
//! `override` feature also under its own name.
//!
//! | call | answer |
//! | --- | --- |
//! | `malloc_trim(pad)` | flushes the caller's thread cache and gives every free page and cached mapping back to the OS (as `tcalloc::release_free_memory`); 1 if that released something, else 0. `pad` is ignored: tcalloc has no heap top to keep |
//! | `mallinfo2()` | see the fields below |
//! | `mallinfo()` | the same, each field saturated to `INT_MAX` |
//! | `malloc_stats()` | tcalloc's statistics report on stderr |
//! | `malloc_info(0, fp)` | an XML document with glibc's elements (`<malloc version="1">`, `<heap nr="0">`, `<sizes>`, `<total type=…>`, `<system type=…>`, `<aspace type=…>`) filled with tcalloc's figures, plus a `<tcalloc …/>` element with all of them; 0. Options other than 0: `EINVAL` (returned, as glibc does) |
//! | `mallopt(param, value)` | 1 or 0 exactly when glibc 2.36 returns them; see below |
//! | `free_sized(p, size)` | `free(p)`, after checking that `size` fits the block |
//! | `free_aligned_sized(p, align, size)` | `free(p)`, after checking `align` and `size` against the block |
//! | `sdallocx(p, size, flags)` | the same, with jemalloc's `MALLOCX_LG_ALIGN` bits of `flags` as the alignment |
//! | `nallocx(size, flags)` | the usable size a request of `size` bytes (aligned per `flags`) gets; 0 if it cannot be served |
//! | `malloc_good_size(size)` | the usable size `malloc(size)` gets (`size` itself if it cannot be served) |
//!
//! **`mallinfo2` fields** (from [`crate::stats`]): `arena` the bytes mapped for the page heap,
//! where every block up to 1 MiB lives; `uordblks` the bytes of those blocks the program holds;
//! `fordblks` the rest of `arena` (free objects in thread caches and central lists, free and
//! released pages); `ordblks` the free objects in the central lists; `fsmblks` the bytes in
//! thread caches (glibc's freed fast blocks); `hblks` and `hblkhd` the large blocks (above
//! 1 MiB, each its own mapping) and their bytes; `keepcost` what `malloc_trim` could give back
//! now (free backed pages and cached large mappings); `smblks` and `usmblks` 0.
//!
//! **`mallopt`**: `M_TRIM_THRESHOLD` sets how many bytes of free pages stay backed (as
//! `TCALLOC_FREE_RESERVE_BYTES`; a negative value keeps them all). `M_MMAP_THRESHOLD` is
//! accepted, as glibc 2.36 accepts any value, and changes nothing: tcalloc's threshold is
//! fixed at 1 MiB, where the size-class table ends, and blocks above it are always their own
//! mapping, unmapped (or briefly cached) on free. `M_MXFAST` is accepted up to glibc's limit
//! of 160 bytes and changes nothing. `M_ARENA_MAX`, `M_ARENA_TEST`, `M_TOP_PAD`,
//! `M_MMAP_MAX`, `M_CHECK_ACTION`, `M_PERTURB` and unknown parameters succeed and change
//! nothing, as unknown ones do in glibc.
//!
//! **Sized frees** check the size given against the block, always (C callers get checked
//! frees): a size larger than the block, an alignment that is not a power of two or that the
//! block does not have, aborts with `tcalloc: free_sized(): size mismatch …` (named after the
//! function called). A smaller size is accepted: a block that `realloc` shrank in place, or
//! one that was over-aligned, is larger than the size its owner knows. They then free through
//! the validated path of `free`, so a pointer tcalloc never handed out aborts as it does there.
//!
//! Nothing here allocates: `malloc_info` formats with `core::fmt` straight into `fwrite` calls
//! (the `FILE` may allocate its own buffer through `malloc`, which is safe: no allocator lock
//! is held while writing), and the report goes out through `diag`'s stack buffer.
//!
//! Layers below: `router` (sizes and the validated free), `stats`, `release`, `front_end`
//! (flushing the caller's cache), `size_class`, `diag`, `lifecycle` (start-up before `mallopt`
//! changes a setting).

use crate::config::{LARGE_THRESHOLD, OS_PAGE_SIZE};
use crate::router::{self, MAX_PAGE_RUN_ALIGN};
use crate::size_class::{class_for, SizeClass, MAX_SIZE};
use crate::span::Length;
use crate::stats::{self, Stats};
use crate::{diag, front_end, lifecycle, release};
use core::ffi::{c_int, c_void};
use core::fmt::{self, Write};

/// glibc's `struct mallinfo2` (`<malloc.h>`), field for field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mallinfo2 {
    /// Non-mmapped space allocated from the system.
    pub arena: usize,
    /// Number of free chunks.
    pub ordblks: usize,
    /// Number of free fastbin blocks.
    pub smblks: usize,
    /// Number of mmapped regions.
    pub hblks: usize,
    /// Space allocated in mmapped regions.
    pub hblkhd: usize,
    /// Unused, always 0.
    pub usmblks: usize,
    /// Space in freed fastbin blocks.
    pub fsmblks: usize,
    /// Total allocated space.
    pub uordblks: usize,
    /// Total free space.
    pub fordblks: usize,
    /// Top-most, releasable space.
    pub keepcost: usize,
}

/// glibc's `struct mallinfo`: the same fields as `int`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mallinfo {
    /// See [`Mallinfo2`] for every field.
    pub arena: c_int,
    pub ordblks: c_int,
    pub smblks: c_int,
    pub hblks: c_int,
    pub hblkhd: c_int,
    pub usmblks: c_int,
    pub fsmblks: c_int,
    pub uordblks: c_int,
    pub fordblks: c_int,
    pub keepcost: c_int,
}

/// Free objects in the central lists, over every class.
fn central_free_objects(s: &Stats) -> usize {
    SizeClass::all().map(|c| s.classes[c.index()].central_free_objects).sum()
}

/// The `mallinfo2` figures of a snapshot (see the module docs).
fn mallinfo2_of(s: &Stats) -> Mallinfo2 {
    let arena = s.page_heap_bytes;
    let uordblks = s.allocated_bytes.saturating_sub(s.large_bytes);
    Mallinfo2 {
        arena,
        ordblks: central_free_objects(s),
        smblks: 0,
        hblks: s.large_blocks,
        hblkhd: s.large_bytes,
        usmblks: 0,
        fsmblks: s.thread_cache_bytes,
        uordblks,
        fordblks: arena.saturating_sub(uordblks),
        keepcost: s.page_heap_free_bytes + s.large_cache_bytes,
    }
}

fn mallinfo2_impl() -> Mallinfo2 {
    mallinfo2_of(&stats::stats())
}

fn mallinfo_impl() -> Mallinfo {
    let m = mallinfo2_impl();
    let int = |v: usize| c_int::try_from(v).unwrap_or(c_int::MAX);
    Mallinfo {
        arena: int(m.arena),
        ordblks: int(m.ordblks),
        smblks: int(m.smblks),
        hblks: int(m.hblks),
        hblkhd: int(m.hblkhd),
        usmblks: int(m.usmblks),
        fsmblks: int(m.fsmblks),
        uordblks: int(m.uordblks),
        fordblks: int(m.fordblks),
        keepcost: int(m.keepcost),
    }
}

fn malloc_trim_impl(_pad: usize) -> c_int {
    front_end::flush_current();
    c_int::from(release::release_all() > 0)
}

fn malloc_stats_impl() {
    stats::print_to_stderr();
}

/// `fmt::Write` into a C `FILE` with `fwrite`: no buffer of ours, no allocation.
struct CFile(*mut libc::FILE);

impl Write for CFile {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if s.is_empty() {
            return Ok(());
        }
        // SAFETY: `self.0` is the caller's open stream (malloc_info's contract); the bytes are
        // valid for `s.len()`.
        let written = unsafe { libc::fwrite(s.as_ptr().cast(), 1, s.len(), self.0) };
        if written == s.len() {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

/// Writes the `malloc_info` document for snapshot `s`.
fn write_malloc_info(out: &mut impl Write, s: &Stats) -> fmt::Result {
    let central_objects = central_free_objects(s);
    let rest_bytes = s.central_cache_bytes + s.page_heap_free_bytes;
    let heap = s.page_heap_bytes;
    let mapped = s.mapped_bytes();
    out.write_str("<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n")?;
    let mut from = 1;
    for class in SizeClass::all() {
        let c = &s.classes[class.index()];
        if c.central_free_objects > 0 {
            writeln!(
                out,
                "  <size from=\"{from}\" to=\"{}\" total=\"{}\" count=\"{}\"/>",
                c.size,
                c.central_free_objects * c.size,
                c.central_free_objects
            )?;
        }
        from = c.size + 1;
    }
    out.write_str("</sizes>\n")?;
    let totals = |out: &mut dyn Write| -> fmt::Result {
        writeln!(out, "<total type=\"fast\" count=\"0\" size=\"{}\"/>", s.thread_cache_bytes)?;
        writeln!(out, "<total type=\"rest\" count=\"{central_objects}\" size=\"{rest_bytes}\"/>")
    };
    let systems = |out: &mut dyn Write, bytes: usize| -> fmt::Result {
        writeln!(out, "<system type=\"current\" size=\"{bytes}\"/>")?;
        writeln!(out, "<system type=\"max\" size=\"{bytes}\"/>")?;
        writeln!(out, "<aspace type=\"total\" size=\"{bytes}\"/>")?;
        writeln!(out, "<aspace type=\"mprotect\" size=\"{bytes}\"/>")
    };
    totals(out)?;
    systems(out, heap)?;
    out.write_str("</heap>\n")?;
    totals(out)?;
    writeln!(
        out,
        "<total type=\"mmap\" count=\"{}\" size=\"{}\"/>",
        s.large_blocks, s.large_bytes
    )?;
    systems(out, mapped)?;
    writeln!(
        out,
        "<tcalloc allocated=\"{}\" thread_cache=\"{}\" central_cache=\"{}\" \
         page_heap=\"{}\" page_heap_free=\"{}\" released=\"{}\" large=\"{}\" large_blocks=\"{}\" \
         large_cache=\"{}\" metadata=\"{}\" threads=\"{}\" resident=\"{}\"/>",
        s.allocated_bytes,
        s.thread_cache_bytes,
        s.central_cache_bytes,
        s.page_heap_bytes,
        s.page_heap_free_bytes,
        s.released_bytes,
        s.large_bytes,
        s.large_blocks,
        s.large_cache_bytes,
        s.metadata_bytes,
        s.threads,
        s.process_resident_bytes
    )?;
    out.write_str("</malloc>\n")
}

/// # Safety
/// - `fp` is null or an open stream.
unsafe fn malloc_info_impl(options: c_int, fp: *mut libc::FILE) -> c_int {
    if options != 0 || fp.is_null() {
        return libc::EINVAL;
    }
    let snapshot = stats::stats();
    match write_malloc_info(&mut CFile(fp), &snapshot) {
        Ok(()) => 0,
        Err(_) => -1,
    }
}

// glibc's `mallopt` parameters (`<malloc.h>`).
const M_MXFAST: c_int = 1;
const M_TRIM_THRESHOLD: c_int = -1;
#[cfg(test)]
const M_MMAP_THRESHOLD: c_int = -3;
/// glibc's largest fast-bin size on 64-bit (`MAX_FAST_SIZE`).
const GLIBC_MAX_FAST_SIZE: usize = 160;

fn mallopt_impl(param: c_int, value: c_int) -> c_int {
    // Start-up applies the environment's settings; it must not overwrite these later.
    lifecycle::ensure_initialized();
    // glibc converts `value` to `size_t`: a negative value becomes huge.
    let size = value as isize as usize;
    match param {
        M_MXFAST => c_int::from(size <= GLIBC_MAX_FAST_SIZE),
        M_TRIM_THRESHOLD => {
            release::set_reserve_bytes(size);
            1
        }
        _ => 1,
    }
}

/// Aborts with `tcalloc: <caller>(): size mismatch …` through the non-allocating path.
#[cold]
#[inline(never)]
fn size_mismatch(caller: &str, ptr: *mut c_void, size: usize, align: usize, usable: usize) -> ! {
    diag::fatal(format_args!(
        "{caller}(): size mismatch: {size} bytes aligned to {align} given for {ptr:p}, \
         a block of {usable} bytes"
    ))
}

/// Frees `ptr` after checking that a block of `size` bytes aligned to `align` fits it.
///
/// # Safety
/// - `ptr` is null or a block of this allocator that the caller no longer uses (anything else
///   aborts with a message).
unsafe fn free_checked(ptr: *mut c_void, size: usize, align: usize, caller: &'static str) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: per the caller; the block is validated (one page-map lookup) and checked not
    // free before the size is compared with it.
    unsafe {
        router::free_checked(ptr.cast(), caller, |usable| {
            if size > usable || !align.is_power_of_two() || ptr as usize % align != 0 {
                size_mismatch(caller, ptr, size, align, usable);
            }
        })
    }
}

unsafe fn free_sized_impl(ptr: *mut c_void, size: usize) {
    // SAFETY: forwarded.
    unsafe { free_checked(ptr, size, 1, "free_sized") }
}

unsafe fn free_aligned_sized_impl(ptr: *mut c_void, align: usize, size: usize) {
    // SAFETY: forwarded.
    unsafe { free_checked(ptr, size, align, "free_aligned_sized") }
}

/// The alignment jemalloc's `flags` ask for (`MALLOCX_LG_ALIGN` in the low 6 bits), or
/// `None` when it does not fit a `usize`.
fn flags_align(flags: c_int) -> Option<usize> {
    1usize.checked_shl((flags & 0x3f) as u32)
}

unsafe fn sdallocx_impl(ptr: *mut c_void, size: usize, flags: c_int) {
    let align = flags_align(flags).unwrap_or(0);
    // SAFETY: forwarded; an impossible alignment (0) is reported as a mismatch.
    unsafe { free_checked(ptr, size, align, "sdallocx") }
}

/// The usable size of the block that a request of `size` bytes aligned to `align` gets (see
/// `router::alloc`), or `None` if it cannot be served. Blocks above 1 MiB are mappings rounded
/// up to whole OS pages; one that reuses a cached mapping may be larger still.
fn usable_for(size: usize, align: usize) -> Option<usize> {
    if size > isize::MAX as usize || align > isize::MAX as usize {
        return None;
    }
    let align = align.max(router::c_align(size));
    if let Some(class) = class_for(size, align) {
        return Some(class.size());
    }
    if size <= MAX_SIZE && align <= MAX_PAGE_RUN_ALIGN {
        return Some(Length::for_bytes(size.max(1)).bytes());
    }
    debug_assert!(size > LARGE_THRESHOLD || align > MAX_PAGE_RUN_ALIGN);
    size.max(1).checked_next_multiple_of(OS_PAGE_SIZE).filter(|&n| n <= isize::MAX as usize)
}

fn nallocx_impl(size: usize, flags: c_int) -> usize {
    flags_align(flags).and_then(|align| usable_for(size, align)).unwrap_or(0)
}

fn malloc_good_size_impl(size: usize) -> usize {
    usable_for(size, 1).unwrap_or(size)
}

/// Defines each function under its `tcalloc_` name, and with `override` under its own.
macro_rules! export {
    ($(
        $(#[$doc:meta])*
        fn $prefixed:ident / $plain:ident ($($arg:ident : $ty:ty),*) -> $ret:ty = $imp:ident;
    )*) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        /// - As for the function of the same name (glibc's, C23's or jemalloc's).
        #[no_mangle]
        pub unsafe extern "C" fn $prefixed($($arg: $ty),*) -> $ret {
            #[allow(unused_unsafe)]
            // SAFETY: the caller upholds the contract of this function.
            unsafe { $imp($($arg),*) }
        }

        #[cfg(feature = "override")]
        #[doc = concat!("The unprefixed name of [`", stringify!($prefixed), "`].")]
        ///
        /// # Safety
        /// - As for the function of the same name (glibc's, C23's or jemalloc's).
        #[no_mangle]
        pub unsafe extern "C" fn $plain($($arg: $ty),*) -> $ret {
            #[allow(unused_unsafe)]
            // SAFETY: the caller upholds the contract of this function.
            unsafe { $imp($($arg),*) }
        }
    )*};
}

export! {
    /// `malloc_trim(3)`: gives free memory back to the OS; 1 if any was released.
    fn tcalloc_malloc_trim / malloc_trim (pad: usize) -> c_int = malloc_trim_impl;
    /// `mallinfo2(3)`: tcalloc's figures in glibc's structure.
    fn tcalloc_mallinfo2 / mallinfo2 () -> Mallinfo2 = mallinfo2_impl;
    /// `mallinfo(3)`: as `mallinfo2`, each field saturated to `INT_MAX`.
    fn tcalloc_mallinfo / mallinfo () -> Mallinfo = mallinfo_impl;
    /// `malloc_stats(3)`: tcalloc's report on standard error.
    fn tcalloc_malloc_stats / malloc_stats () -> () = malloc_stats_impl;
    /// `malloc_info(3)`: an XML document of tcalloc's figures in glibc's elements.
    fn tcalloc_malloc_info / malloc_info (options: c_int, fp: *mut libc::FILE) -> c_int
        = malloc_info_impl;
    /// `mallopt(3)`: glibc's parameters; 1 or 0 as glibc answers.
    fn tcalloc_mallopt / mallopt (param: c_int, value: c_int) -> c_int = mallopt_impl;
    /// C23 `free_sized`: `free` of a block allocated with `size` bytes.
    fn tcalloc_free_sized / free_sized (ptr: *mut c_void, size: usize) -> () = free_sized_impl;
    /// C23 `free_aligned_sized`: `free` of a block allocated with `align` and `size`.
    fn tcalloc_free_aligned_sized / free_aligned_sized
        (ptr: *mut c_void, align: usize, size: usize) -> () = free_aligned_sized_impl;
    /// jemalloc's `sdallocx`: `free` of a block allocated with `size` bytes and `flags`.
    fn tcalloc_sdallocx / sdallocx (ptr: *mut c_void, size: usize, flags: c_int) -> ()
        = sdallocx_impl;
    /// jemalloc's `nallocx`: the usable size a request gets, 0 if it cannot be served.
    fn tcalloc_nallocx / nallocx (size: usize, flags: c_int) -> usize = nallocx_impl;
    /// `malloc_good_size` (macOS): the usable size `malloc(size)` gets.
    fn tcalloc_malloc_good_size / malloc_good_size (size: usize) -> usize
        = malloc_good_size_impl;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `fmt::Write` into a fixed buffer, to look at `malloc_info`'s document.
    struct Text(diag::StackBuf<65536>);

    impl Write for Text {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0.write_str(s)
        }
    }

    #[test]
    fn usable_sizes_match_what_allocation_gives() {
        for size in (0..=3 << 20).step_by(997).chain([0, 1, 8, 9, 16, 17, 1024, 1025]) {
            let p = router::alloc_c(size);
            assert!(!p.is_null());
            // SAFETY: a live block of ours, freed right after.
            let usable = unsafe { router::usable_size(p, "test") };
            let predicted = nallocx_impl(size, 0);
            if size <= LARGE_THRESHOLD {
                assert_eq!(predicted, usable, "size {size}");
            } else {
                assert!(predicted >= size && predicted <= usable, "size {size}: {predicted}");
            }
            assert_eq!(malloc_good_size_impl(size), predicted);
            // SAFETY: as above.
            unsafe { router::free_unsized(p, "test") };
        }
        for lg in [4, 6, 12, 13, 14, 16, 20, 21] {
            for size in [1, 100, 5000, 70_000, 1 << 20, 3 << 20] {
                let p = router::alloc(size, 1 << lg);
                // SAFETY: a live block of ours, freed right after.
                let usable = unsafe { router::usable_size(p, "test") };
                let predicted = nallocx_impl(size, lg);
                assert!(predicted >= size && predicted <= usable, "{size} align 2^{lg}");
                if size <= LARGE_THRESHOLD && lg <= 20 {
                    assert_eq!(predicted, usable, "{size} align 2^{lg}");
                }
                // SAFETY: as above.
                unsafe { router::free_unsized(p, "test") };
            }
        }
        assert_eq!(nallocx_impl(usize::MAX, 0), 0);
        assert_eq!(nallocx_impl(16, 63), 0);
        assert_eq!(malloc_good_size_impl(usize::MAX), usize::MAX);
    }

    #[test]
    fn mallopt_answers_as_glibc() {
        assert_eq!(mallopt_impl(M_MXFAST, 64), 1);
        assert_eq!(mallopt_impl(M_MXFAST, 161), 0);
        assert_eq!(mallopt_impl(M_MXFAST, -1), 0);
        assert_eq!(mallopt_impl(M_MMAP_THRESHOLD, 1 << 20), 1);
        assert_eq!(mallopt_impl(M_MMAP_THRESHOLD, 64 << 20), 1);
        assert_eq!(mallopt_impl(M_MMAP_THRESHOLD, -1), 1);
        assert_eq!(mallopt_impl(-8, 4), 1); // M_ARENA_MAX
        assert_eq!(mallopt_impl(12345, 1), 1);
        assert_eq!(mallopt_impl(M_TRIM_THRESHOLD, 16 << 20), 1);
    }

    #[test]
    fn mallinfo_adds_up_and_saturates() {
        let s = stats::stats();
        let m = mallinfo2_of(&s);
        assert_eq!(m.arena, m.uordblks + m.fordblks);
        assert_eq!(m.hblkhd, s.large_bytes);
        let small = mallinfo_impl();
        assert!(small.arena >= 0 && small.uordblks >= 0 && small.keepcost >= 0);
    }

    #[test]
    fn malloc_info_uses_glibc_elements() {
        let p = router::alloc_c(100);
        let mut text = Text(diag::StackBuf::new());
        write_malloc_info(&mut text, &stats::stats()).unwrap();
        // SAFETY: our block, freed once.
        unsafe { router::free_unsized(p, "test") };
        let doc = core::str::from_utf8(text.0.as_bytes()).unwrap();
        assert!(doc.starts_with("<malloc version=\"1\">\n<heap nr=\"0\">\n<sizes>\n"), "{doc}");
        assert!(doc.ends_with("</malloc>\n"), "{doc}");
        for needle in [
            "<total type=\"mmap\" count=",
            "<system type=\"current\" size=",
            "<aspace type=\"total\" size=",
            "<tcalloc allocated=",
            "</heap>",
        ] {
            assert!(doc.contains(needle), "no {needle} in {doc}");
        }
        assert_eq!(doc.matches('<').count(), doc.matches('>').count());
    }
}
