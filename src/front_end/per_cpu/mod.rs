//! Per-CPU caches on restartable sequences: the front end tcmalloc uses where the kernel and
//! C library offer `rseq` (Linux x86-64, glibc 2.35 and later). Built with the `per-cpu`
//! feature.
//!
//! Each CPU has a slab (`slab`): per size class, an array of free-object pointers with a
//! header `current / end / begin`. [`alloc`] pops the last pointer of the calling CPU's array
//! and [`dealloc`] pushes one, each a restartable critical section (`rseq`) committed by one
//! 16-bit store: no lock, no atomic read-modify-write, no fence. A cache belongs to a CPU, not
//! a thread, so the memory cached does not multiply with the number of threads, and an object
//! freed by one thread is at once available to every other thread that runs on that CPU.
//!
//! **Preemption and migration.** A thread can be preempted, migrated to another CPU, or
//! interrupted by a signal handler (which may itself allocate) at any instruction. Inside a
//! critical section the kernel then restarts the section from the top when the thread runs
//! again, on whatever CPU it runs on: the section re-reads `cpu_id` and works on that CPU's
//! slab. Nothing is written to the slab before the commit that another thread could observe:
//! a push's write of the slot above `current` is harmless if the section is abandoned, since
//! that slot is not cached until `current` moves. Between sections the thread holds no
//! per-CPU state, so migration between two calls needs no care at all.
//!
//! **Misses.** Empty on `alloc`: the slow path takes a batch from the central free list (the
//! same `central_free_list::refill` the thread caches use, so a whole batch from a transfer
//! cache moves in O(1)), returns one object and pushes the rest onto the CPU it is now on.
//! Full on `dealloc`: the slow path first grows the class's capacity (below), else pops a
//! batch and hands it to `central_free_list::flush`. Every step of a slow path is its own
//! critical section on whatever CPU the thread is on, so a slow path that migrates halfway
//! leaves each CPU's slab consistent (it may just refill one CPU and drain another).
//!
//! **Capacity.** A class's array may hold at most `slab::MAX_CAPACITY` objects (256 KiB worth,
//! 1 to 512 objects); how many it may hold now (`end - begin`) starts at 0 and grows on a miss:
//! by slow start (1, 2, 4, ...) to a batch, regardless of the budget (so that refills and
//! flushes soon move whole batches, and a class used once does not pin a batch), then a batch
//! at a time while the CPU's capacity in bytes stays within [`PER_CPU_BYTES`] (1.5 MiB,
//! tcmalloc's default). A refill fetches as many objects as the capacity, up to a batch. So a CPU caches at most `max(PER_CPU_BYTES, Σ one batch per class)`. A header is
//! changed only by [`rseq::compare_and_swap_header`], a critical section that commits only on
//! the CPU it names, so a capacity change never races with that CPU's fast paths.
//!
//! **Start-up and fallback.** The first call looks up `__rseq_offset` and `__rseq_size`
//! (`rseq::registered_offset`); the feature is off when glibc did not register `rseq`
//! (`GLIBC_TUNABLES=glibc.pthread.rseq=0`, glibc before 2.35, musl, seccomp), when
//! `TCALLOC_PER_CPU=0`, or when the slab region cannot be mapped. Until it is on, and for
//! good when it is off, every call returns the fallback signal (null from `alloc`, false from
//! `dealloc`) and the caller uses the thread cache. So does a call from a thread that is not
//! registered (negative `cpu_id`) and a re-entrant call while the start-up runs (`dlsym` and
//! `pthread_atfork` may allocate). Objects move freely between the two front ends: both hold
//! plain free objects of a class and both return them to the same central lists.
//!
//! **Thread exit** needs nothing: the objects a thread freed stay in its last CPU's slab for
//! the next thread that runs there. **Fork**: the child's only thread inherits every slab as
//! it was; each slab is consistent because each critical section commits with one store and a
//! section cut short by the fork simply never committed in the child. A CPU that another
//! thread was setting up at the fork is set up again in the child (`after_fork_child`).
//!
//! **Not yet**: capacity never shrinks (except through [`release_all`]), and a CPU's cache is
//! not drained when the CPU goes idle, as tcmalloc does from its background thread; C `free`
//! and its double-free checks stay on the thread caches.
//!
//! Entry points: [`alloc`], [`dealloc`], [`alloc_small`], [`dealloc_small`],
//! [`alloc_medium`], [`dealloc_medium`] (fast); [`cached_bytes`], [`release_all`],
//! [`check_invariants`]. Layers below: `central_free_list`, `free_list`, `size_class`, `os`.

mod rseq;
mod slab;

use crate::central_free_list;
use crate::free_list::{self, FreeObject};
use crate::size_class::{self, SizeClass, MAX_SIZE, MEDIUM_SHIFT};
use core::ptr;
use core::sync::atomic::{AtomicIsize, AtomicU8, AtomicUsize, Ordering::*};
use slab::{Header, MAX_CAPACITY, READY};

/// The bytes of capacity one CPU's arrays may have together beyond one batch per class.
pub const PER_CPU_BYTES: usize = 3 << 19;

/// Requests below this size (at the minimum alignment) take [`alloc_small`].
pub const SMALL_LIMIT: usize = crate::config::SMALL_LOOKUP_MAX + 1;

/// The `rseq` area's offset from the thread pointer once the per-CPU caches are on; 0 before
/// and when they are off. The fast paths test it first.
static RSEQ_OFFSET: AtomicIsize = AtomicIsize::new(0);
/// The slabs' base (valid once `RSEQ_OFFSET` is non-zero).
static SLABS: AtomicUsize = AtomicUsize::new(0);

const NOT_STARTED: u8 = 0;
const STARTING: u8 = 1;
const ON: u8 = 2;
const OFF: u8 = 3;

/// `NOT_STARTED`, `STARTING`, `ON` or `OFF`.
static STATE: AtomicU8 = AtomicU8::new(NOT_STARTED);

/// Pops an object of the class with index `class` from the calling CPU's cache; null means
/// "use the thread cache" (per-CPU caches off, or out of memory).
#[inline(always)]
fn pop(class: usize) -> *mut u8 {
    let offset = RSEQ_OFFSET.load(Acquire);
    if offset == 0 {
        return pop_slow(class);
    }
    // SAFETY: a non-zero offset is the registered area's, published after the slabs (every
    // possible CPU's) were mapped; `class` is a class index, whose header every slab has.
    let object = unsafe { rseq::pop(offset, SLABS.load(Relaxed), class) };
    if object.is_null() {
        return pop_slow(class);
    }
    object
}

/// Pushes `object` onto the calling CPU's cache; false means "use the thread cache".
///
/// # Safety
/// - `object` is a dead block of the class with index `class`.
#[inline(always)]
unsafe fn push(object: *mut u8, class: usize) -> bool {
    let offset = RSEQ_OFFSET.load(Acquire);
    if offset == 0 {
        // SAFETY: per the caller.
        return unsafe { push_slow(object, class) };
    }
    // SAFETY: as in `pop`; the slot written is free per the slab's invariants.
    if unsafe { rseq::push(offset, SLABS.load(Relaxed), class, object) } {
        return true;
    }
    // SAFETY: per the caller.
    unsafe { push_slow(object, class) }
}

/// Pops an object of `class`; null means "use the thread cache".
#[inline(always)]
pub fn alloc(class: SizeClass) -> *mut u8 {
    pop(class.index())
}

/// Pushes `ptr`, a block of `class`; false means "use the thread cache".
///
/// # Safety
/// - `ptr` is a block of `class` handed out by this allocator and no longer used.
#[inline(always)]
pub unsafe fn dealloc(ptr: *mut u8, class: SizeClass) -> bool {
    // SAFETY: forwarded.
    unsafe { push(ptr, class.index()) }
}

/// Allocates `size < SMALL_LIMIT` bytes at the minimum alignment: one table load, then a pop.
/// Null means "use the thread cache".
#[inline(always)]
pub fn alloc_small(size: usize) -> *mut u8 {
    crate::diag::debug_invariant!(size < SMALL_LIMIT);
    // SAFETY: `size < SMALL_LIMIT`, the table's length.
    pop(unsafe { *size_class::SMALL_CLASS.get_unchecked(size) } as usize)
}

/// Frees a block that [`alloc_small`] (or the thread cache) returned for `size`; false means
/// "use the thread cache".
///
/// # Safety
/// - `ptr` is a dead block of the class of `size`.
#[inline(always)]
pub unsafe fn dealloc_small(ptr: *mut u8, size: usize) -> bool {
    crate::diag::debug_invariant!(size < SMALL_LIMIT);
    // SAFETY: `size < SMALL_LIMIT`; `ptr` is a dead block of the class per the caller.
    unsafe { push(ptr, *size_class::SMALL_CLASS.get_unchecked(size) as usize) }
}

/// The medium table's index for `SMALL_LIMIT <= size <= MAX_SIZE`.
#[inline(always)]
fn medium_index(size: usize) -> usize {
    crate::diag::debug_invariant!((SMALL_LIMIT..=MAX_SIZE).contains(&size));
    (size + (1 << MEDIUM_SHIFT) - 1) >> MEDIUM_SHIFT
}

/// Allocates `SMALL_LIMIT <= size <= MAX_SIZE` bytes at the minimum alignment (or any
/// alignment up to `1 << MEDIUM_SHIFT`). Null means "use the thread cache".
#[inline(always)]
pub fn alloc_medium(size: usize) -> *mut u8 {
    // SAFETY: `size <= MAX_SIZE`, so the index is within the table.
    pop(unsafe { *size_class::MEDIUM_CLASS.get_unchecked(medium_index(size)) } as usize)
}

/// Frees a block that [`alloc_medium`] returned for `size`; false means "use the thread
/// cache".
///
/// # Safety
/// - `ptr` is a dead block of the class of `size`.
#[inline(always)]
pub unsafe fn dealloc_medium(ptr: *mut u8, size: usize) -> bool {
    // SAFETY: the index is within the table; `ptr` is a dead block of the class.
    unsafe { push(ptr, *size_class::MEDIUM_CLASS.get_unchecked(medium_index(size)) as usize) }
}

/// Where the slow paths work: the `rseq` offset, the slabs, and the CPU the thread was on
/// when it looked (which it may have left since: every step re-checks in its own section).
#[derive(Clone, Copy)]
struct Here {
    offset: isize,
    slabs: usize,
    cpu: usize,
}

impl Here {
    /// Starts the per-CPU caches if needed and finds the calling thread's CPU, ready for use;
    /// `None` when the caller must use the thread cache.
    fn find() -> Option<Here> {
        let offset = match STATE.load(Acquire) {
            ON => RSEQ_OFFSET.load(Relaxed),
            NOT_STARTED => start()?,
            _ => return None,
        };
        let (slabs, cpus) = slab::region();
        // SAFETY: a registered offset.
        let cpu = unsafe { rseq::cpu_id(offset) };
        if cpu < 0 || cpu as usize >= cpus {
            return None;
        }
        let cpu = cpu as usize;
        // SAFETY: `cpu` is below the number of slabs.
        if !unsafe { slab::init_cpu(cpu) } {
            return None;
        }
        Some(Here { offset, slabs, cpu })
    }

    /// The header of `class` on `self.cpu`.
    fn header(self, class: SizeClass) -> Header {
        // SAFETY: `cpu` is below the number of slabs.
        Header::unpack(unsafe { slab::header(self.cpu, class) }.load(Relaxed))
    }

    /// The shard of the central lists this CPU refills from and flushes to.
    fn shard(self) -> usize {
        crate::transfer_cache::shard_index(self.cpu)
    }

    /// Pops from whichever CPU the thread is on now.
    fn pop(self, class: SizeClass) -> *mut u8 {
        // SAFETY: as in the fast path.
        unsafe { rseq::pop(self.offset, self.slabs, class.index()) }
    }

    /// Pushes onto whichever CPU the thread is on now.
    ///
    /// # Safety
    /// - `object` is a dead block of `class`.
    unsafe fn push(self, class: SizeClass, object: *mut u8) -> bool {
        // SAFETY: as in the fast path.
        unsafe { rseq::push(self.offset, self.slabs, class.index(), object) }
    }

    /// Grows the capacity of `class` on `self.cpu` if the class may grow: by slow start up to
    /// a batch (or the class's maximum) unconditionally (1, 2, 4, ... objects, so that a
    /// class used once on a CPU does not pin a batch there), then a batch at a time within
    /// [`PER_CPU_BYTES`]. True if it grew; false if it may not, or the thread is no longer on
    /// `self.cpu`, or the header changed meanwhile.
    fn grow(self, class: SizeClass) -> bool {
        let old = self.header(class);
        let (capacity, most) = (old.capacity(), MAX_CAPACITY[class.index()] as usize);
        let batch = class.batch().min(most);
        // SAFETY: `cpu` is below the number of slabs.
        let record = unsafe { slab::record(self.cpu) };
        let target = if capacity < batch {
            (capacity * 2).clamp(1, batch)
        } else if capacity < most
            && record.used_bytes.load(Relaxed) + batch * class.size() <= PER_CPU_BYTES
        {
            (capacity + batch).min(most)
        } else {
            return false;
        };
        let bytes = (target - capacity) * class.size();
        record.used_bytes.fetch_add(bytes, Relaxed);
        let new = Header { end: old.begin + target as u16, ..old };
        // SAFETY: as in the fast path; `new` keeps every invariant of `old` (a larger `end`
        // within the class's slots).
        let swapped = unsafe {
            rseq::compare_and_swap_header(
                self.offset,
                self.slabs,
                self.cpu,
                class.index(),
                old.pack(),
                new.pack(),
            )
        };
        if !swapped {
            record.used_bytes.fetch_sub(bytes, Relaxed);
        }
        swapped
    }

    /// Pops up to `n` objects of `class` from whichever CPU the thread is on and returns them
    /// to the central lists; returns how many.
    fn drain(self, class: SizeClass, n: usize) -> usize {
        let mut head: *mut FreeObject = ptr::null_mut();
        let (mut count, mut low, mut high) = (0, usize::MAX, 0);
        while count < n {
            let object = self.pop(class);
            if object.is_null() {
                break;
            }
            (low, high) = (low.min(object as usize), high.max(object as usize));
            // SAFETY: a dead object of `class`, now on no list but this one.
            unsafe { free_list::push(&mut head, object.cast()) };
            count += 1;
        }
        if count > 0 {
            // SAFETY: a list of `count` dead objects of `class`.
            unsafe { central_free_list::flush(class, self.shard(), head, count, high - low) };
        }
        count
    }
}

/// The pop's slow path: the CPU's array of the class with index `class` is empty (or the
/// caches are not on). Null means "use the thread cache".
#[cold]
#[inline(never)]
extern "C" fn pop_slow(class: usize) -> *mut u8 {
    let (Some(here), Some(class)) = (Here::find(), SizeClass::new(class)) else {
        return ptr::null_mut();
    };
    // Another thread may have refilled this CPU meanwhile, or the thread moved.
    let object = here.pop(class);
    if !object.is_null() {
        return object;
    }
    here.grow(class);
    // As many as the capacity (slow start), up to a batch: a whole batch comes from a
    // transfer cache in O(1).
    let want = here.header(class).capacity().clamp(1, class.batch());
    let (mut head, n) = central_free_list::refill(class, here.shard(), want);
    if n == 0 {
        return ptr::null_mut();
    }
    // SAFETY: `head` is a list of `n >= 1` dead objects; `pop` clears each link word as the
    // object leaves the list.
    unsafe {
        let first = free_list::pop(&mut head);
        let mut left = n - 1;
        while left > 0 {
            let object = free_list::pop(&mut head);
            if !here.push(class, object.cast()) {
                free_list::push(&mut head, object);
                break;
            }
            left -= 1;
        }
        if left > 0 {
            central_free_list::flush(class, here.shard(), head, left, usize::MAX);
        }
        first.cast()
    }
}

/// The push's slow path: the CPU's array is full (or the caches are not on). False means
/// "use the thread cache".
///
/// # Safety
/// - `object` is a dead block of the class with index `class`.
#[cold]
#[inline(never)]
unsafe extern "C" fn push_slow(object: *mut u8, class: usize) -> bool {
    let (Some(mut here), Some(class)) = (Here::find(), SizeClass::new(class)) else {
        return false;
    };
    for _ in 0..4 {
        // SAFETY: per the caller.
        if unsafe { here.push(class, object) } {
            return true;
        }
        if !here.grow(class) {
            here.drain(class, class.batch());
        }
        // The thread may have moved: look again.
        match Here::find() {
            Some(now) => here = now,
            None => break,
        }
    }
    // Still no room (the thread keeps moving, or another thread keeps filling the array):
    // the object goes to the central lists alone.
    // SAFETY: a dead object of `class` on no list.
    unsafe {
        let object = object.cast::<FreeObject>();
        free_list::set_next(object, ptr::null_mut());
        central_free_list::flush(class, here.shard(), object, 1, 0);
    }
    true
}

/// Turns the per-CPU caches on, or off for good; the `rseq` offset when on. Runs once, on the
/// first slow path; a re-entrant or concurrent caller gets `None` (the thread cache) until it
/// is done.
#[cold]
fn start() -> Option<isize> {
    if STATE.compare_exchange(NOT_STARTED, STARTING, Acquire, Acquire).is_err() {
        return None;
    }
    let on = try_start();
    STATE.store(if on.is_some() { ON } else { OFF }, Release);
    on
}

fn try_start() -> Option<isize> {
    if disabled_by_environment() {
        return None;
    }
    let offset = rseq::registered_offset()?;
    // SAFETY: a registered offset.
    if unsafe { rseq::cpu_id(offset) } < 0 {
        return None;
    }
    crate::lifecycle::ensure_initialized();
    free_list::init_secret();
    let base = slab::map_region(slab::possible_cpus())?;
    crate::os::at_fork(None, None, Some(after_fork_child));
    SLABS.store(base, Relaxed);
    RSEQ_OFFSET.store(offset, Release);
    Some(offset)
}

/// `TCALLOC_PER_CPU=0` keeps the thread caches.
fn disabled_by_environment() -> bool {
    // SAFETY: a NUL-terminated name; `getenv` returns null or a NUL-terminated string.
    unsafe {
        let value = libc::getenv(c"TCALLOC_PER_CPU".as_ptr());
        !value.is_null() && *value == b'0' as libc::c_char
    }
}

/// In a `fork` child: a CPU whose set-up was cut short by the fork is set up again on its
/// next miss (its headers are still all misses: nothing was cached in it).
extern "C" fn after_fork_child() {
    let (_, cpus) = slab::region();
    for cpu in 0..cpus {
        // SAFETY: `cpu` is below the number of slabs.
        let record = unsafe { slab::record(cpu) };
        let _ = record.state.compare_exchange(slab::INITIALIZING, slab::UNINIT, Relaxed, Relaxed);
    }
}

/// Whether the per-CPU caches are on.
pub fn is_on() -> bool {
    STATE.load(Acquire) == ON
}

/// Calls `f(cpu, class, header)` for every class of every CPU that is set up.
fn for_each_header(mut f: impl FnMut(usize, SizeClass, Header)) {
    if !is_on() {
        return;
    }
    let (_, cpus) = slab::region();
    for cpu in 0..cpus {
        // SAFETY: `cpu` is below the number of slabs.
        if unsafe { slab::record(cpu) }.state.load(Acquire) != READY {
            continue;
        }
        for class in SizeClass::all() {
            // SAFETY: as above.
            f(cpu, class, Header::unpack(unsafe { slab::header(cpu, class) }.load(Relaxed)));
        }
    }
}

/// Bytes of free objects in every CPU's cache (a snapshot: other CPUs keep changing).
pub fn cached_bytes() -> usize {
    let mut total = 0;
    for_each_header(|_, class, header| total += header.len() * class.size());
    total
}

/// Returns every object of every CPU's cache to the central lists and sets every capacity
/// back to 0: the calling thread runs on each CPU in turn (`sched_setaffinity`), drains it,
/// and gets its own CPU mask back. A CPU the thread may not run on is skipped. Cold and slow:
/// for `release_free_memory` and tests.
pub fn release_all() {
    let Some(here) = Here::find() else { return };
    let (_, cpus) = slab::region();
    // SAFETY: `cpu_set_t` is plain data; the calls write at most its size.
    unsafe {
        let mut saved: libc::cpu_set_t = core::mem::zeroed();
        if libc::sched_getaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &mut saved) != 0 {
            return;
        }
        for cpu in 0..cpus.min(libc::CPU_SETSIZE as usize) {
            if slab::record(cpu).state.load(Acquire) != READY {
                continue;
            }
            let mut only: libc::cpu_set_t = core::mem::zeroed();
            libc::CPU_SET(cpu, &mut only);
            if libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &only) != 0 {
                continue;
            }
            drain_cpu(Here { cpu, ..here });
        }
        libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &saved);
    }
}

/// Empties every array of `here.cpu` and sets its capacity to 0, as long as the thread stays
/// on that CPU (each capacity change checks it).
fn drain_cpu(here: Here) {
    for class in SizeClass::all() {
        while here.drain(class, class.batch()) > 0 {}
        let old = here.header(class);
        if old.current != old.begin || old.capacity() == 0 {
            continue;
        }
        let new = Header { end: old.begin, ..old };
        // SAFETY: as in `Here::grow`; an empty array may have capacity 0.
        let swapped = unsafe {
            rseq::compare_and_swap_header(
                here.offset,
                here.slabs,
                here.cpu,
                class.index(),
                old.pack(),
                new.pack(),
            )
        };
        if swapped {
            // SAFETY: `cpu` is below the number of slabs.
            let record = unsafe { slab::record(here.cpu) };
            record.used_bytes.fetch_sub(old.capacity() * class.size(), Relaxed);
        }
    }
}

/// Checks the slabs' invariants (`slab`'s module docs) for every CPU that is set up; aborts
/// with the offending values. Exact only while no other thread allocates: a capacity
/// change counts its bytes before its header commits, so `used_bytes` may run ahead.
pub fn check_invariants() {
    // (cpu, bytes of capacity counted so far on it)
    let mut counted: Option<(usize, usize)> = None;
    let check_cpu = |(cpu, bytes): (usize, usize)| {
        // SAFETY: `cpu` came from `for_each_header`: below the number of slabs.
        let used = unsafe { slab::record(cpu) }.used_bytes.load(Relaxed);
        crate::diag::invariant!(bytes <= used, "cpu {cpu}: capacity {bytes} B, counted {used} B");
    };
    for_each_header(|cpu, class, h| {
        let k = class.index();
        crate::diag::invariant!(
            h.begin == slab::START[k]
                && h.begin <= h.current
                && h.current <= h.end
                && h.capacity() <= MAX_CAPACITY[k] as usize,
            "cpu {cpu} class {k}: header {h:?}, start {}, max {}",
            slab::START[k],
            MAX_CAPACITY[k]
        );
        for slot in h.begin..h.current {
            // SAFETY: a slot of the CPU's slab.
            let object = unsafe { slab::slot(cpu, slot as usize) } as usize;
            let span = crate::page_map::lookup(object);
            // SAFETY: a metadata record (never unmapped); `class_index` is atomic.
            let span_index = if span.is_null() { 0 } else { unsafe { (*span).class_index() } };
            let span_class = SizeClass::new(span_index);
            crate::diag::invariant!(
                object % 8 == 0 && span_class.is_some_and(|found| found.size() >= class.size()),
                "cpu {cpu} class {k}: slot {slot} holds {object:#x}, span class {span_index}"
            );
        }
        match counted {
            Some((c, bytes)) if c == cpu => {
                counted = Some((c, bytes + h.capacity() * class.size()))
            }
            _ => {
                if let Some(done) = counted {
                    check_cpu(done);
                }
                counted = Some((cpu, h.capacity() * class.size()));
            }
        }
    });
    if let Some(done) = counted {
        check_cpu(done);
    }
}

/// What tests may see of the per-CPU caches (`tcalloc::per_cpu_introspect`).
pub mod introspect {
    /// Whether the per-CPU caches are on (after the first allocation that tried them).
    pub fn is_on() -> bool {
        super::is_on()
    }

    /// Bytes of free objects in every CPU's cache.
    pub fn cached_bytes() -> usize {
        super::cached_bytes()
    }

    /// Checks every set-up CPU's slab; aborts on a broken invariant.
    pub fn check_invariants() {
        super::check_invariants()
    }

    /// Returns every cached object to the central lists.
    pub fn release_all() {
        super::release_all()
    }

    /// The CPU the calling thread is on, as its `rseq` area says; `None` if the caches are
    /// off or the thread is not registered.
    pub fn current_cpu() -> Option<usize> {
        let offset = super::RSEQ_OFFSET.load(core::sync::atomic::Ordering::Acquire);
        if offset == 0 {
            return None;
        }
        // SAFETY: a registered offset.
        let cpu = unsafe { super::rseq::cpu_id(offset) };
        usize::try_from(cpu).ok()
    }
}

#[cfg(test)]
mod tests;
