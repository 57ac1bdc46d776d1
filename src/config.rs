//! Every tunable of tcalloc in one place: first the knobs, then what is derived from them, then
//! compile-time checks that the two agree.
//!
//! Knobs that an operator may change at run time (through environment variables) are read by
//! `env` and start from the defaults here.
//!
//! The bottom layer: it uses no other module. `size_class` checks that its generated table was
//! made for [`PAGE_SHIFT`] and [`LARGE_THRESHOLD`].

// ---------------------------------------------------------------------------------------------
// Knobs
// ---------------------------------------------------------------------------------------------

/// log2 of tcalloc's page: the unit of the page heap and the page map. 8 KiB, as in tcmalloc:
/// twice the OS page, so the page map is half as large.
pub const PAGE_SHIFT: usize = 13;

/// Requests larger than this go straight to the OS (`large`); smaller ones are served from a
/// size class.
pub const LARGE_THRESHOLD: usize = 1024 * 1024;

/// Sizes up to this are classified by one direct table lookup on the fast path.
pub const SMALL_LOOKUP_MAX: usize = 1024;

/// Every allocation is at least this aligned (the smallest class is 8 bytes).
pub const MIN_ALIGN: usize = 8;

/// Alignment of C `malloc` results larger than [`MIN_ALIGN`] bytes (`alignof(max_align_t)`).
pub const C_MALLOC_ALIGN: usize = 16;

/// The page heap keeps exact-length free lists for spans up to this many pages; longer free
/// spans share one list searched best-fit.
pub const MAX_EXACT_PAGES: usize = 128;

/// The page heap grows from the OS by at least this many bytes at a time, aligned to it.
pub const HEAP_GROWTH_BYTES: usize = 4 << 20;

/// Size of a transparent huge page (x86-64 and AArch64 with 4 KiB pages).
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Default size of the page heap from which it runs on transparent huge pages
/// (`TCALLOC_HUGE_PAGE_HEAP_BYTES` sets another; see `page_heap`). A heap this big spreads
/// over more small pages than the TLB maps: scatter-1m's random frees over 300 MB missed it at
/// nearly every block. Below it, huge pages would add up to 2 MiB of resident memory to a
/// heap that touches a few KiB of one.
pub const HUGE_PAGE_HEAP_BYTES: usize = 64 << 20;

/// Address space reserved for the page heap's arena (see `page_heap`): 32 GiB, inaccessible
/// and unbacked until the heap grows into it. C `free` validates objects of the arena through
/// a flat index of 8 bytes per page (`page_map`), 32 MiB of address space that the OS backs
/// only where touched. A heap that outgrows the arena, or a process that cannot reserve it,
/// maps further chunks anywhere; their frees take a slower path (unless they happen to lie in
/// the 32 GiB window after a smaller arena, which the index covers too).
pub const ARENA_BYTES: usize = 32 << 30;

/// Most objects one thread-cache list may hold: 2 MiB of 16-byte objects. At 32 768, the
/// Rust benchmark's std-collections (per round, 50 000 strings and 20 000 upper-case copies,
/// 70 000 objects of 16 bytes, freed and allocated again) sent most of each round through the
/// central lists.
pub const MAX_LIST_LENGTH: u32 = 131072;

/// Most bytes one thread-cache list may hold (but always at least a batch): big objects are
/// few, and a cache of them pins a lot of memory.
pub const MAX_LIST_BYTES: usize = 2 << 20;

/// A list whose length overruns its limit this many times shrinks by a batch.
pub const MAX_LIST_OVERAGES: u32 = 3;

/// Default byte budget of one thread's cache (as gperftools'). At 8 MiB, mstress (threads
/// created 25 times over, each slow-starting its cache) peaked at 18.5 MiB against 14.7, with
/// no measurable gain in speed on the multi-threaded programs.
pub const THREAD_CACHE_BYTES: usize = 4 << 20;

/// Byte budget of the cache of a thread that is the only one with a cache: a program that
/// frees and reallocates more than [`THREAD_CACHE_BYTES`] of small objects in rounds (the Rust
/// benchmark's std-collections: 70 000 strings, 20 000 vectors and a tree per round) otherwise
/// sends most of each round through the central lists and back. The thread keeps it until its
/// next slow-path tick after a second thread's cache is set up (`budget.rs`); one that waits
/// (say, in `join`) without calling the allocator keeps up to this much cached.
pub const SOLE_THREAD_CACHE_BYTES: usize = 16 << 20;

/// Smallest budget a thread's cache is cut down to when many threads share the total.
pub const MIN_THREAD_CACHE_BYTES: usize = 512 << 10;

/// Default cap on the bytes held by all thread caches together.
pub const TOTAL_THREAD_CACHE_BYTES: usize = 64 << 20;

/// Default cap on the bytes all transfer caches together hold (whole batches waiting in the
/// central lists); `TCALLOC_MAX_TRANSFER_CACHE_BYTES` sets another. One size on every machine:
/// on 2 CPUs a cap of 2 MiB raised binary-trees' peak RSS from 18.7 to 22.4 MiB (more freed
/// objects went back to their spans instead) and bought rptest nothing it kept from run to
/// run.
pub const TRANSFER_CACHE_BYTES: usize = 16 << 20;

/// Most transfer-cache and span-list shards per class (one per CPU, up to this). On a lent
/// 16-core machine, 8 shards left a producer-consumer ring at 16 threads at 0.56x jemalloc's
/// throughput, 32 at 0.75x (`bench/results/scaling-16-cores.md` is the command's output).
pub const MAX_SHARDS: usize = 32;

// ---------------------------------------------------------------------------------------------
// Derived
// ---------------------------------------------------------------------------------------------

/// Bytes in one tcalloc page.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

/// The OS page size this build assumes for `mmap` and `madvise` (checked at start-up).
pub const OS_PAGE_SIZE: usize = 4096;

/// User address bits the page map covers (x86-64 and AArch64 with 4-level tables).
pub const ADDRESS_BITS: usize = 48;

/// Pages in the page heap's growth unit.
pub const HEAP_GROWTH_PAGES: usize = HEAP_GROWTH_BYTES >> PAGE_SHIFT;

/// Pages in a transparent huge page.
pub const HUGE_PAGE_PAGES: usize = HUGE_PAGE_BYTES >> PAGE_SHIFT;

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

const _: () = assert!(LARGE_THRESHOLD >= 256 * 1024 && LARGE_THRESHOLD <= 1024 * 1024);
const _: () = assert!(PAGE_SIZE % OS_PAGE_SIZE == 0);
const _: () = assert!(SMALL_LOOKUP_MAX < LARGE_THRESHOLD && SMALL_LOOKUP_MAX % 8 == 0);
const _: () = assert!(HEAP_GROWTH_BYTES.is_power_of_two() && HEAP_GROWTH_PAGES > MAX_EXACT_PAGES);
const _: () =
    assert!(HEAP_GROWTH_BYTES % HUGE_PAGE_BYTES == 0 && HUGE_PAGE_PAGES > MAX_EXACT_PAGES);
const _: () = assert!(MIN_THREAD_CACHE_BYTES <= THREAD_CACHE_BYTES);
const _: () = assert!(THREAD_CACHE_BYTES <= TOTAL_THREAD_CACHE_BYTES);
const _: () = assert!(THREAD_CACHE_BYTES <= SOLE_THREAD_CACHE_BYTES);
