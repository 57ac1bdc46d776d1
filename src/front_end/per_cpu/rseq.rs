//! Restartable sequences: finding the thread's `rseq` area and the three critical sections
//! the per-CPU caches are built from ([`pop`], [`push`], [`compare_and_swap_header`]).
//!
//! **The area.** glibc 2.35 and later registers an `rseq` area for every thread it starts
//! (the kernel ABI's `struct rseq`: `cpu_id_start` at byte 0, `cpu_id` at 4, `rseq_cs` at 8)
//! and exports two data symbols: `__rseq_offset`, the area's offset from the thread pointer
//! (`%fs` base on x86-64), and `__rseq_size`, 0 when registration is off
//! (`GLIBC_TUNABLES=glibc.pthread.rseq=0`) or failed. Both are looked up once with `dlsym`,
//! so a C library without them (older glibc, musl) links and runs: [`registered_offset`]
//! answers `None` and the caller keeps the thread caches. A thread that is not registered
//! reads `cpu_id` as -1 or -2; every section treats a negative CPU as a miss.
//!
//! **A critical section** is a run of instructions `[start, post_commit)` that the kernel
//! restarts instead of resuming: if the thread is preempted, migrated or signalled inside it,
//! the kernel moves its instruction pointer to `abort_ip` before it runs again in user space.
//! The thread announces the section by storing the address of its descriptor (`struct
//! rseq_cs`: version, flags, start_ip, post_commit_offset, abort_ip; 32-byte aligned) into
//! its area's `rseq_cs` field, then reads `cpu_id`, works on that CPU's data, and commits
//! with a single store, the section's last instruction. Every load before the commit may be
//! repeated and every store before it must be invisible to the data structure's readers
//! (push writes the slot above `current`, which nobody reads until `current` moves), so an
//! abort at any instruction leaves the slab as it was. The kernel also checks the 4 bytes
//! before `abort_ip` against the signature the thread registered with (glibc: `RSEQ_SIG`,
//! 0x53053053 on x86), so that a forged descriptor cannot send a thread anywhere; each abort
//! handler is therefore preceded by `ud1` with the signature as its displacement (an
//! instruction that traps if ever executed, as the kernel's selftests do) and jumps back to
//! re-arm the descriptor and start again. The kernel clears `rseq_cs` itself when it finds
//! the thread outside the section, so nothing here clears it.
//!
//! Descriptors live in `.data.rel.ro.tcalloc_rseq` (writable only while the dynamic linker
//! relocates their addresses, then read-only); abort handlers and miss exits in
//! `.text.unlikely`. Labels are numeric, so that every inlined copy of a section gets its own.
//!
//! Layer below: none (the slab layout is passed in: `slabs + (cpu << SLAB_SHIFT)` is a CPU's
//! slab, whose 8-byte word number `class` is the header of a size class's array:
//! `u16 current, u16 end, u16 begin, u16 unused`, slot indices from the slab's start).

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
use core::arch::asm;

/// The common part of every critical section, as assembly text: the descriptor (in
/// `.data.rel.ro`), the signature and abort handler and the miss exit `8` (in
/// `.text.unlikely`; the miss runs the two given instructions), then arming the descriptor
/// (`3`) and the section's start (`4`). Labels: `3` arm, `4` start, `5` post-commit (the
/// section defines it after its commit), `6` abort, `7` descriptor, `8` miss. Needs the
/// operands `sig`, `scratch` and `rseq`.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
macro_rules! section {
    ($miss:literal, $exit:literal) => {
        concat!(
            ".pushsection .data.rel.ro.tcalloc_rseq, \"aw\"\n",
            ".balign 32\n",
            "7:\n",
            ".long 0, 0\n",
            ".quad 4f, 5f - 4f, 6f\n",
            ".popsection\n",
            ".pushsection .text.unlikely, \"ax\"\n",
            // `ud1 RSEQ_SIG(%rip), %edi`: the signature is the 4 bytes before `6`.
            ".byte 0x0f, 0xb9, 0x3d\n",
            ".long {sig}\n",
            "6:\n",
            "jmp 3f\n",
            "8:\n",
            $miss,
            "\n",
            $exit,
            "\n",
            ".popsection\n",
            "3:\n",
            "lea {scratch}, [rip + 7b]\n",
            "mov qword ptr fs:[{rseq} + 8], {scratch}\n",
            "4:",
        )
    };
}

/// The signature glibc registers every thread's area with on x86 (`RSEQ_SIG`).
pub const RSEQ_SIG: u32 = 0x5305_3053;

/// log2 of the bytes of one CPU's slab.
pub const SLAB_SHIFT: u32 = 18;

/// The thread pointer offset of the calling thread's `rseq` area if glibc registered one for
/// every thread, else `None`. Cold: looks two symbols up with `dlsym` (which may allocate, and
/// so re-enter the allocator, when it fails).
#[cold]
pub fn registered_offset() -> Option<isize> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        // SAFETY: `dlsym` with the default scope and NUL-terminated names; it returns the
        // symbol's address or null.
        let (size, offset) = unsafe {
            (
                libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()),
                libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()),
            )
        };
        if size.is_null() || offset.is_null() {
            return None;
        }
        // SAFETY: glibc defines `unsigned int __rseq_size` and `ptrdiff_t __rseq_offset`, set
        // before `main` and never changed.
        let (size, offset) = unsafe { (*size.cast::<u32>(), *offset.cast::<isize>()) };
        if size == 0 || offset == 0 {
            return None;
        }
        Some(offset)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    None
}

/// The CPU the calling thread runs on according to its `rseq` area: negative if the thread is
/// not registered. Outside a critical section this is only a hint (the thread may move).
///
/// # Safety
/// - `offset` came from [`registered_offset`].
#[inline]
pub unsafe fn cpu_id(offset: isize) -> i32 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let cpu: i32;
        // SAFETY: the area is in the thread's static TLS block at `offset` from the thread
        // pointer (per the caller): readable for the thread's lifetime.
        unsafe {
            asm!(
                "mov {cpu:e}, dword ptr fs:[{rseq} + 4]",
                rseq = in(reg) offset,
                cpu = out(reg) cpu,
                options(nostack, readonly, preserves_flags),
            );
        }
        cpu
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = offset;
        -1
    }
}

/// Pops the last object of the array of size class `class` (its header is the slab's
/// 8-byte word number `class`) in the calling CPU's slab; null when the array is empty (or
/// uninitialised: all-zero headers) or the thread is not registered. One critical section,
/// committed by the 16-bit store of `current - 1`.
///
/// # Safety
/// - `offset` came from [`registered_offset`]; `slabs` is the base of the slabs of every CPU
///   the thread can read as its `cpu_id`, each `1 << SLAB_SHIFT` bytes, mapped;
/// - the header of `class` in every such slab is all zero or has `current` and `begin`
///   indexing slots of that slab (`begin <= current`), and slots `begin..current` hold objects.
#[inline(always)]
pub unsafe fn pop(offset: isize, slabs: usize, class: usize) -> *mut u8 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let result: usize;
        // SAFETY: per the caller; see the module docs for why an abort anywhere is harmless.
        unsafe {
            asm!(
                // Miss: empty, uninitialised, or not registered.
                section!("xor {result:e}, {result:e}", "jmp 5f"),
                "movsxd {scratch}, dword ptr fs:[{rseq} + 4]",
                "shl {scratch}, {shift}",
                "js 8b",
                "add {scratch}, {slabs}",
                "movzx {current:e}, word ptr [{scratch} + {class} * 8]",
                "cmp {current:x}, word ptr [{scratch} + {class} * 8 + 4]",
                "jbe 8b",
                "mov {result}, qword ptr [{scratch} + {current} * 8 - 8]",
                "dec {current:e}",
                "mov word ptr [{scratch} + {class} * 8], {current:x}",
                "5:",
                sig = const RSEQ_SIG,
                shift = const SLAB_SHIFT,
                rseq = in(reg) offset,
                slabs = in(reg) slabs,
                class = in(reg) class,
                scratch = out(reg) _,
                current = out(reg) _,
                result = out(reg) result,
                options(nostack),
            );
        }
        result as *mut u8
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = (offset, slabs, class);
        core::ptr::null_mut()
    }
}

/// Pushes `object` on the array of size class `class` in the calling CPU's slab;
/// false when the array is full (or uninitialised) or the thread is not registered. One
/// critical section: the object goes into the slot at `current` (invisible until the commit),
/// and the 16-bit store of `current + 1` commits.
///
/// # Safety
/// - as for [`pop`], with `current <= end` and slots `current..end` free to write.
#[inline(always)]
pub unsafe fn push(offset: isize, slabs: usize, class: usize, object: *mut u8) -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let current: usize;
        // SAFETY: per the caller; see the module docs.
        unsafe {
            asm!(
                // Miss: full, uninitialised, or not registered. `current` 0 says so (a
                // committed push leaves it at least 1).
                section!("xor {current:e}, {current:e}", "jmp 5f"),
                "movsxd {scratch}, dword ptr fs:[{rseq} + 4]",
                "shl {scratch}, {shift}",
                "js 8b",
                "add {scratch}, {slabs}",
                "movzx {current:e}, word ptr [{scratch} + {class} * 8]",
                "cmp {current:x}, word ptr [{scratch} + {class} * 8 + 2]",
                "jae 8b",
                "mov qword ptr [{scratch} + {current} * 8], {object}",
                "inc {current:e}",
                "mov word ptr [{scratch} + {class} * 8], {current:x}",
                "5:",
                sig = const RSEQ_SIG,
                shift = const SLAB_SHIFT,
                rseq = in(reg) offset,
                slabs = in(reg) slabs,
                class = in(reg) class,
                object = in(reg) object,
                scratch = out(reg) _,
                current = out(reg) current,
                options(nostack),
            );
        }
        current != 0
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = (offset, slabs, class, object);
        false
    }
}

/// Replaces the header of class `class` in CPU `cpu`'s slab with `new` if it holds
/// `old` and the calling thread runs on `cpu`: the slow paths' only way to change a header
/// (its capacity), so that it never races with a fast path on that CPU. False if the thread
/// is elsewhere (or not registered) or the header changed.
///
/// # Safety
/// - as for [`pop`]; `class` is below the number of headers and `cpu` indexes a mapped slab.
#[inline]
pub unsafe fn compare_and_swap_header(
    offset: isize,
    slabs: usize,
    cpu: usize,
    class: usize,
    old: u64,
    new: u64,
) -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let swapped: usize;
        // SAFETY: per the caller; the only store is the commit.
        unsafe {
            asm!(
                // Not on `cpu`, or another header.
                section!("xor {swapped:e}, {swapped:e}", "jmp 9f"),
                "movsxd {scratch}, dword ptr fs:[{rseq} + 4]",
                "cmp {scratch}, {cpu}",
                "jne 8b",
                "shl {scratch}, {shift}",
                "add {scratch}, {slabs}",
                "cmp qword ptr [{scratch} + {class} * 8], {old}",
                "jne 8b",
                "mov qword ptr [{scratch} + {class} * 8], {new}",
                "5:",
                "mov {swapped:e}, 1",
                "9:",
                sig = const RSEQ_SIG,
                shift = const SLAB_SHIFT,
                rseq = in(reg) offset,
                slabs = in(reg) slabs,
                cpu = in(reg) cpu,
                class = in(reg) class,
                old = in(reg) old,
                new = in(reg) new,
                scratch = out(reg) _,
                swapped = out(reg) swapped,
                options(nostack),
            );
        }
        swapped != 0
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = (offset, slabs, cpu, class, old, new);
        false
    }
}
