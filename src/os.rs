//! The OS behind one small contract: the only module that calls `mmap`, `munmap`, `mremap`,
//! `mprotect` and `madvise`, and the one that registers with the C library (`fork` handlers,
//! thread-exit destructors) and reads the clock.
//!
//! Preconditions, stated once for every function here: addresses and lengths passed in are
//! multiples of [`OS_PAGE_SIZE`] and lengths are non-zero. Errors are returned (`None` or
//! `false`), never raised: the callers turn them into null pointers. Nothing here allocates.

use crate::config::OS_PAGE_SIZE;
use core::ptr::{self, NonNull};
use core::sync::atomic::AtomicUsize;
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};

/// Maps `len` bytes of fresh, zeroed, read-write memory. The mapping is accounted (no
/// `MAP_NORESERVE`), so the kernel's overcommit check refuses requests no machine could back,
/// as it does for glibc's `malloc`.
pub fn map(len: usize) -> Option<NonNull<u8>> {
    crate::diag::debug_invariant!(len != 0 && len % OS_PAGE_SIZE == 0, "os::map({len})");
    map_anonymous(len, libc::PROT_READ | libc::PROT_WRITE, 0)
}

/// A private anonymous mapping of `len` bytes with protection `prot` and the extra `flags`, at
/// an address of the kernel's choosing.
fn map_anonymous(len: usize, prot: libc::c_int, flags: libc::c_int) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            prot,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
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
    trim_to(len, align, map_anonymous(total, libc::PROT_NONE, libc::MAP_NORESERVE)?)
}

/// Maps `len` bytes readable only: zero pages, with no memory and (as the mapping is not
/// writable) no overcommit charge behind them, until [`commit`] opens parts of it.
pub fn map_readable(len: usize) -> Option<NonNull<u8>> {
    crate::diag::debug_invariant!(len != 0 && len % OS_PAGE_SIZE == 0, "os::map_readable({len})");
    map_anonymous(len, libc::PROT_READ, libc::MAP_NORESERVE)
}

/// Opens `[p, p + len)` of a [`reserve`]d or [`map_readable`] range for reading and writing
/// (what it holds stays: zeroed memory, as from [`map`], where nothing wrote); false when the
/// kernel refuses. The range keeps the mapping's `MAP_NORESERVE`, so unlike [`map`]'s memory
/// it is charged to the overcommit account only under strict overcommit
/// (`vm.overcommit_memory = 2`, which ignores the flag).
///
/// # Safety
/// - `[p, p + len)` is page-aligned and lies in a range that [`reserve`] or [`map_readable`]
///   returned, which nothing else maps or accesses through another protection.
pub unsafe fn commit(p: *mut u8, len: usize) -> bool {
    crate::diag::debug_invariant!(p as usize % OS_PAGE_SIZE == 0 && len % OS_PAGE_SIZE == 0);
    // SAFETY: by the caller's contract the range is ours; opening it keeps its contents.
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
    #[cfg(test)]
    if RELEASE_REFUSED.with(|c| c.get()) {
        return false;
    }
    // SAFETY: by the caller's contract the range is ours and its contents are dead.
    unsafe { libc::madvise(p.cast(), len, libc::MADV_DONTNEED) == 0 }
}

/// `MADV_COLLAPSE` (Linux 6.1): the Linux value, which not every libc names.
const MADV_COLLAPSE: libc::c_int = 25;

/// Makes `[p, p + len)` (whole huge pages) transparent huge pages now, built from the small
/// pages mapped there (split off an earlier huge page, or faulted in one by one): what its
/// pages hold stays, and pages not mapped read as zeros. The range becomes resident. Needs a
/// page table there (a page of each huge page mapped). Returns `false` if the kernel refused
/// (before Linux 6.1, THP off, no page table, or no free huge page): the range is left as it
/// was.
///
/// # Safety
/// - `[p, p + len)` was mapped by this module.
pub unsafe fn collapse_huge_pages(p: *mut u8, len: usize) -> bool {
    crate::diag::debug_invariant!(
        p as usize % crate::config::HUGE_PAGE_BYTES == 0
            && len % crate::config::HUGE_PAGE_BYTES == 0
    );
    // SAFETY: by the caller's contract the range is ours; the kernel keeps its contents.
    unsafe { libc::madvise(p.cast(), len, MADV_COLLAPSE) == 0 }
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

#[cfg(test)]
std::thread_local! {
    static RELEASE_REFUSED: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// Unit tests of a kernel that refuses to release memory (`MADV_DONTNEED` on locked pages
/// fails with `EINVAL`): this thread's [`release`] calls fail while `refused`.
#[cfg(test)]
pub fn set_release_refused(refused: bool) {
    RELEASE_REFUSED.with(|c| c.set(refused));
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
    unsafe { clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// `clock_gettime`, called in the vDSO directly where it can be found there.
///
/// glibc's `clock_gettime` only forwards to the vDSO, but its code lies in a part of libc's
/// text that a program which only allocates never runs otherwise, and the first call faults
/// in the folio around it (64 KiB or more: the kernel maps file pages a folio at a time): that
/// cost every process with `libtcalloc.so` preloaded as much resident memory, for a clock
/// read.
///
/// # Safety
/// - `ts` is valid for a write.
unsafe fn clock_gettime(clock: libc::clockid_t, ts: *mut libc::timespec) -> libc::c_int {
    type ClockFn = unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;
    static CLOCK_GETTIME: AtomicUsize = AtomicUsize::new(0);
    let Some(f) = vdso_function(&CLOCK_GETTIME, b"__vdso_clock_gettime") else {
        // SAFETY: per the caller.
        return unsafe { libc::clock_gettime(clock, ts) };
    };
    // SAFETY: the vDSO's `__vdso_clock_gettime` has `clock_gettime`'s C signature; `ts` is
    // valid per the caller.
    unsafe { core::mem::transmute::<usize, ClockFn>(f)(clock, ts) }
}

/// Hints the CPU to fetch the cache line at `p` (which may be null or dangling: prefetches
/// never fault).
#[inline(always)]
pub fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint; it never faults, whatever the address.
    unsafe {
        core::arch::x86_64::_mm_prefetch(p.cast(), core::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The CPU the calling thread runs on, as the vDSO's `getcpu` says (a hint: the thread may
/// move right after), or `None` where the vDSO has no `getcpu` (only x86-64's has one among
/// the 64-bit targets this builds for). No system call, no libc: on x86-64 the vDSO reads it
/// with `rdpid` or `lsl`, tens of cycles.
pub fn current_cpu() -> Option<usize> {
    type GetcpuFn = unsafe extern "C" fn(*mut u32, *mut u32, *mut libc::c_void) -> libc::c_long;
    static GETCPU: AtomicUsize = AtomicUsize::new(0);
    let f = vdso_function(&GETCPU, b"__vdso_getcpu")?;
    let mut cpu = 0u32;
    // SAFETY: the vDSO's `__vdso_getcpu` has `getcpu`'s C signature; a null node and cache
    // are allowed; `cpu` is a valid out-parameter.
    let status = unsafe {
        core::mem::transmute::<usize, GetcpuFn>(f)(&mut cpu, ptr::null_mut(), ptr::null_mut())
    };
    (status == 0).then_some(cpu as usize)
}

/// The address of the vDSO's function `name`, looked up on the first call and kept in `cache`
/// (0: not looked up yet; 1: the vDSO has no such function).
fn vdso_function(cache: &AtomicUsize, name: &[u8]) -> Option<usize> {
    let mut f = cache.load(Relaxed);
    if f == 0 {
        // Racing threads find the same address.
        f = vdso::symbol(name).unwrap_or(1);
        cache.store(f, Relaxed);
    }
    (f != 1).then_some(f)
}

/// Symbols of the vDSO, the ELF object the kernel maps into every process: read from its
/// dynamic symbol table, without allocating.
mod vdso {
    /// `AT_SYSINFO_EHDR`: the auxiliary-vector entry with the vDSO's address (33 on every
    /// Linux architecture).
    const AT_SYSINFO_EHDR: libc::c_ulong = 33;
    const PT_LOAD: u32 = 1;
    const PT_DYNAMIC: u32 = 2;
    const DT_NULL: i64 = 0;
    const DT_HASH: i64 = 4;
    const DT_STRTAB: i64 = 5;
    const DT_SYMTAB: i64 = 6;
    const STT_FUNC: u8 = 2;

    /// The address of the function `name` in the vDSO, or `None` (no vDSO, not a 64-bit
    /// little-endian ELF object, no `DT_HASH` table to count its symbols, no such function).
    pub fn symbol(name: &[u8]) -> Option<usize> {
        if cfg!(not(all(
            target_os = "linux",
            target_pointer_width = "64",
            target_endian = "little"
        ))) {
            return None;
        }
        // SAFETY: getauxval has no preconditions.
        let base = unsafe { libc::getauxval(AT_SYSINFO_EHDR) } as usize;
        if base == 0 {
            return None;
        }
        // SAFETY: the kernel maps the vDSO, a complete ELF image, at `base` for the life of
        // the process, readable, its headers in its first page.
        unsafe { find(base, name) }
    }

    /// The readable bytes `[base, end)` of the image; every read is checked against them.
    struct Image {
        base: usize,
        end: usize,
    }

    impl Image {
        /// The `T` at `at`, or `None` if it does not lie inside the image.
        fn read<T: Copy>(&self, at: usize) -> Option<T> {
            let inside = at >= self.base && at.checked_add(core::mem::size_of::<T>())? <= self.end;
            // SAFETY: `[base, end)` is mapped and readable (per `find`'s caller, and the
            // first PT_LOAD segment's extent); `read_unaligned` asks no alignment.
            inside.then(|| unsafe { (at as *const T).read_unaligned() })
        }
    }

    /// # Safety
    /// - `base` is the address of a mapped ELF image whose first page is readable.
    unsafe fn find(base: usize, name: &[u8]) -> Option<usize> {
        // The headers first, within the first page; then the image as its first loadable
        // segment spans it.
        let mut image = Image { base, end: base + 4096 };
        // e_ident: the magic number, ELFCLASS64, ELFDATA2LSB.
        if image.read::<[u8; 6]>(base)? != *b"\x7fELF\x02\x01" {
            return None;
        }
        let phoff = image.read::<u64>(base + 0x20)? as usize;
        let phentsize = image.read::<u16>(base + 0x36)? as usize;
        let phnum = image.read::<u16>(base + 0x38)? as usize;
        // The load bias (where the image is, less where it was linked to be) and its extent.
        let (mut bias, mut dynamic) = (None, None);
        for i in 0..phnum {
            let ph = base.checked_add(phoff)?.checked_add(i.checked_mul(phentsize)?)?;
            let kind = image.read::<u32>(ph)?;
            let offset = image.read::<u64>(ph + 8)? as usize;
            let vaddr = image.read::<u64>(ph + 16)? as usize;
            if kind == PT_LOAD && bias.is_none() {
                let memsz = image.read::<u64>(ph + 40)? as usize;
                bias = Some(base.wrapping_add(offset).wrapping_sub(vaddr));
                image.end = image.end.max(base.checked_add(offset)?.checked_add(memsz)?);
            } else if kind == PT_DYNAMIC {
                dynamic = Some(vaddr);
            }
        }
        let bias = bias?;
        let (mut hash, mut strtab, mut symtab) = (None, None, None);
        let mut entry = bias.wrapping_add(dynamic?);
        loop {
            let tag = image.read::<i64>(entry)?;
            let value = image.read::<u64>(entry + 8)? as usize;
            match tag {
                DT_NULL => break,
                DT_HASH => hash = Some(bias.wrapping_add(value)),
                DT_STRTAB => strtab = Some(bias.wrapping_add(value)),
                DT_SYMTAB => symtab = Some(bias.wrapping_add(value)),
                _ => {}
            }
            entry += 16;
        }
        let (hash, strtab, symtab) = (hash?, strtab?, symtab?);
        // DT_HASH: nbucket, nchain, ...; nchain is the number of symbols.
        let symbols = image.read::<u32>(hash + 4)? as usize;
        for i in 0..symbols {
            // Elf64_Sym: st_name u32, st_info u8, st_other u8, st_shndx u16, st_value u64.
            let sym = symtab.checked_add(i.checked_mul(24)?)?;
            let name_at = strtab.checked_add(image.read::<u32>(sym)? as usize)?;
            let info = image.read::<u8>(sym + 4)?;
            let section = image.read::<u16>(sym + 6)?;
            let value = image.read::<u64>(sym + 8)? as usize;
            if info & 0xf != STT_FUNC || section == 0 || value == 0 {
                continue;
            }
            // The name and its terminating NUL.
            let matches = (0..=name.len())
                .all(|j| image.read::<u8>(name_at + j) == Some(name.get(j).copied().unwrap_or(0)));
            if matches {
                return Some(bias.wrapping_add(value));
            }
        }
        None
    }

    #[cfg(test)]
    mod tests {
        #[test]
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        fn the_vdso_clock_is_found_and_agrees_with_libc() {
            // SAFETY: getauxval has no preconditions.
            if unsafe { libc::getauxval(super::AT_SYSINFO_EHDR) } == 0 {
                // A kernel booted with vdso=0: nothing to find, and the clock is libc's.
                assert_eq!(super::symbol(b"__vdso_clock_gettime"), None);
                assert!(super::super::now_millis() > 0);
                return;
            }
            let f = super::symbol(b"__vdso_clock_gettime").expect("x86-64 Linux has a vDSO clock");
            type ClockFn =
                unsafe extern "C" fn(libc::clockid_t, *mut libc::timespec) -> libc::c_int;
            // SAFETY: the vDSO's clock_gettime has this signature.
            let f = unsafe { core::mem::transmute::<usize, ClockFn>(f) };
            let mut ours = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            let mut libcs = ours;
            // SAFETY: valid out-parameters.
            unsafe {
                assert_eq!(f(libc::CLOCK_MONOTONIC, &mut ours), 0);
                assert_eq!(libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut libcs), 0);
            }
            let ns = |t: libc::timespec| t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128;
            let apart = ns(libcs) - ns(ours);
            assert!(
                (0..1_000_000_000).contains(&apart),
                "vDSO {} ns, libc {} ns",
                ns(ours),
                ns(libcs)
            );
            assert!(ns(ours) > 0);
            assert_eq!(super::symbol(b"__vdso_no_such_function"), None);
            assert_eq!(super::symbol(b"__vdso_clock"), None, "a prefix is not a match");
        }

        #[test]
        fn the_page_size_and_the_cpu_span_agree_with_sysconf() {
            // SAFETY: sysconf has no preconditions.
            let (page, configured) = unsafe {
                (libc::sysconf(libc::_SC_PAGESIZE), libc::sysconf(libc::_SC_NPROCESSORS_CONF))
            };
            assert_eq!(super::super::os_page_size(), page as usize);
            let span = super::super::cpu_span().expect("an affinity mask");
            assert!((1..=configured as usize).contains(&span), "{span} of {configured} CPUs");
            if let Some(cpu) = super::super::current_cpu() {
                assert!(cpu < span, "running on CPU {cpu}, span {span}");
            }
        }

        #[test]
        fn the_cpu_span_is_the_processs_not_a_pinned_threads() {
            let span = super::super::cpu_span().expect("an affinity mask");
            let pinned = std::thread::spawn(|| {
                // SAFETY: plain affinity calls on this new thread with a valid set.
                unsafe {
                    let mut allowed: libc::cpu_set_t = core::mem::zeroed();
                    let size = core::mem::size_of::<libc::cpu_set_t>();
                    assert_eq!(libc::sched_getaffinity(0, size, &mut allowed), 0);
                    let lowest = (0..libc::CPU_SETSIZE as usize)
                        .find(|&c| libc::CPU_ISSET(c, &allowed))
                        .expect("an allowed CPU");
                    let mut one: libc::cpu_set_t = core::mem::zeroed();
                    libc::CPU_SET(lowest, &mut one);
                    assert_eq!(libc::sched_setaffinity(0, size, &one), 0);
                }
                super::super::cpu_span()
            })
            .join()
            .unwrap();
            // With one allowed CPU both are 1; with two or more, the pinned thread's own mask
            // would give the lowest CPU plus one.
            assert_eq!(pinned, Some(span), "a thread pinned to one CPU read another span");
        }

        #[test]
        #[cfg(all(target_os = "linux", target_arch = "x86_64"))]
        fn the_vdso_cpu_is_the_one_the_thread_is_pinned_to() {
            // SAFETY: getauxval has no preconditions.
            if unsafe { libc::getauxval(super::AT_SYSINFO_EHDR) } == 0 {
                assert_eq!(super::super::current_cpu(), None);
                return;
            }
            // SAFETY: plain affinity calls on this thread with a valid set.
            unsafe {
                let mut allowed: libc::cpu_set_t = core::mem::zeroed();
                let size = core::mem::size_of::<libc::cpu_set_t>();
                assert_eq!(libc::sched_getaffinity(0, size, &mut allowed), 0);
                let cpus: std::vec::Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                    .filter(|&c| libc::CPU_ISSET(c, &allowed))
                    .collect();
                for &cpu in &cpus {
                    let mut one: libc::cpu_set_t = core::mem::zeroed();
                    libc::CPU_SET(cpu, &mut one);
                    assert_eq!(libc::sched_setaffinity(0, size, &one), 0);
                    assert_eq!(super::super::current_cpu(), Some(cpu));
                }
                assert_eq!(libc::sched_setaffinity(0, size, &allowed), 0);
            }
        }
    }
}

/// A handler of [`at_fork`].
pub type ForkHandler = unsafe extern "C" fn();

/// Registers `fork` handlers, as `pthread_atfork` does.
///
/// On glibc, `pthread_atfork` is not in libc.so but in a static archive linked into the
/// caller, where it only calls libc's `__register_atfork` with the caller's `__dso_handle`;
/// linked at the end of `libtcalloc.so`, it cost the library a 40 KiB stretch of text that
/// nothing else there runs. The same call, made here, lies with the code that runs anyway.
pub fn at_fork(
    prepare: Option<ForkHandler>,
    parent: Option<ForkHandler>,
    child: Option<ForkHandler>,
) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn __register_atfork(
                prepare: Option<ForkHandler>,
                parent: Option<ForkHandler>,
                child: Option<ForkHandler>,
                dso: *mut libc::c_void,
            ) -> libc::c_int;
        }
        // SAFETY: glibc's own `pthread_atfork` is this call, with the value of this object's
        // `__dso_handle` (its own address in a shared object, null in a non-PIE executable);
        // the handlers are `extern "C"` functions with no arguments.
        unsafe { __register_atfork(prepare, parent, child, __dso_handle) };
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    // SAFETY: handlers with no arguments, as `pthread_atfork` requires.
    unsafe {
        libc::pthread_atfork(prepare, parent, child);
    }
}

/// Runs `dtor(arg)` when the calling thread exits, among the C++ runtime's and Rust's
/// thread-local destructors: glibc's `__cxa_thread_atexit_impl`, which both register theirs
/// with. It may allocate (glibc records the destructor with `calloc`). Only on glibc; elsewhere
/// the caller keeps a thread-local with `Drop`.
///
/// (Through a Rust thread-local with `Drop`, the same registration went through
/// `__tls_get_addr`, which the linker puts at the end of `libtcalloc.so`'s text, so every
/// program with a second thread paid for that stretch of text too.)
///
/// # Safety
/// - `dtor` may be called with `arg` once the thread's other code has finished.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub unsafe fn at_thread_exit(
    dtor: unsafe extern "C" fn(*mut libc::c_void),
    arg: *mut libc::c_void,
) {
    extern "C" {
        fn __cxa_thread_atexit_impl(
            dtor: unsafe extern "C" fn(*mut libc::c_void),
            arg: *mut libc::c_void,
            dso: *mut libc::c_void,
        ) -> libc::c_int;
    }
    // SAFETY: per the caller; `__dso_handle` names this object (glibc keeps it loaded while
    // the destructor is pending).
    unsafe { __cxa_thread_atexit_impl(dtor, arg, dso_handle()) };
}

/// Runs `dtor(arg)` when the calling thread exits, as the destructor of a pthread key: those
/// run after the thread-local destructors of [`at_thread_exit`], in up to four rounds, and a
/// value set during one round has its destructor run in the next. So this catches what
/// `at_thread_exit` misses: a registration made once the thread-local destructors have run
/// (from another key's destructor), which they never call. `key` holds the key, created on
/// the first call (0: not created; else the key plus one); `dtor` must be the same in every
/// call with the same `key`. False if no key could be created. Does not allocate for the
/// first 32 keys of a process; glibc allocates (`calloc`) for later ones.
///
/// # Safety
/// - `dtor` may be called with `arg` once the thread's other code has finished.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub unsafe fn at_thread_exit_late(
    key: &AtomicUsize,
    dtor: unsafe extern "C" fn(*mut libc::c_void),
    arg: *mut libc::c_void,
) -> bool {
    // Acquire and release: a thread that uses a key another thread created must see glibc's
    // record of it as created.
    let mut k = key.load(Acquire);
    if k == 0 {
        let mut created: libc::pthread_key_t = 0;
        // SAFETY: `created` is a valid out-parameter; `dtor` has the destructor's signature.
        if unsafe { libc::pthread_key_create(&mut created, Some(dtor)) } != 0 {
            return false;
        }
        k = match key.compare_exchange(0, created as usize + 1, AcqRel, Acquire) {
            Ok(_) => created as usize + 1,
            Err(other) => {
                // Another thread created one first: use that one.
                // SAFETY: `created` is a key of ours that nothing has used.
                unsafe { libc::pthread_key_delete(created) };
                other
            }
        };
    }
    // SAFETY: `k - 1` is a live key; a non-null value makes its destructor run at exit.
    unsafe { libc::pthread_setspecific((k - 1) as libc::pthread_key_t, arg) == 0 }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" {
    /// This object's handle for glibc's registration functions, defined by the C runtime's
    /// start files in every executable and shared library: its own address, except in a
    /// non-PIE executable, where it is null.
    static __dso_handle: *mut libc::c_void;
}

/// The address of this object's `__dso_handle`, as compilers pass it to
/// `__cxa_thread_atexit_impl` (and Rust's standard library does).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn dso_handle() -> *mut libc::c_void {
    // Only the address is taken.
    ptr::addr_of!(__dso_handle) as *mut libc::c_void
}

/// The OS page size, as the kernel reports it (in the auxiliary vector, where `sysconf` reads
/// it too: `getauxval` is the part of libc that tcalloc runs anyway).
pub fn os_page_size() -> usize {
    // SAFETY: getauxval has no preconditions.
    match unsafe { libc::getauxval(libc::AT_PAGESZ) } {
        // SAFETY: sysconf has no preconditions.
        0 => unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize },
        page => page as usize,
    }
}

/// One more than the highest-numbered CPU the process may run on: the CPU numbers that
/// [`current_cpu`] gives lie below it. Read from the affinity mask of the process's main
/// thread (the thread whose id is the process id), one system call, so that a worker pinned to
/// one CPU that happens to start tcalloc does not leave it one shard; from the calling thread's
/// where the main thread's cannot be read. `None` if no mask can be read (a machine of more
/// than 1024 CPUs).
///
/// The mask is read with `syscall`, not with libc's `sched_getaffinity`: the kernel maps
/// libc's code into a process 64 to 128 KiB at a time, and that wrapper lies among libc's
/// regex and `getopt` code, which a program that only allocates never runs. Called, it cost
/// the small programs of mimalloc-bench 64 to 128 KiB of peak resident memory (glibc-simple
/// 1 860 KiB against 1 732 without it, espresso 3 836 against 3 712; medians of 7 interleaved
/// runs); `syscall` lies beside `mmap`, which tcalloc runs anyway.
/// `sysconf(_SC_NPROCESSORS_ONLN)` would be worse: it reads and parses a file of `/sys`.
pub fn cpu_span() -> Option<usize> {
    // SAFETY: an all-zero set is a valid empty one; the kernel writes at most `size` bytes of
    // it (and leaves the rest zero).
    unsafe {
        let mut set: libc::cpu_set_t = core::mem::zeroed();
        let size = core::mem::size_of::<libc::cpu_set_t>();
        let mask = ptr::addr_of_mut!(set);
        // The system call returns the bytes of the mask it wrote (the wrapper returns 0).
        if libc::syscall(libc::SYS_sched_getaffinity, libc::getpid(), size, mask) < 0
            && libc::syscall(libc::SYS_sched_getaffinity, 0, size, mask) < 0
        {
            return None;
        }
        (0..libc::CPU_SETSIZE as usize).rev().find(|&cpu| libc::CPU_ISSET(cpu, &set)).map(|c| c + 1)
    }
}
