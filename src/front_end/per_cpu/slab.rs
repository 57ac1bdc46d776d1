//! The slabs: one region of `possible CPUs × 256 KiB`, one slab per CPU, each an array of
//! object pointers per size class.
//!
//! ```text
//! slab of CPU c = base + (c << SLAB_SHIFT)
//! word 0 .. NUM_CLASSES          headers: u16 current, u16 end, u16 begin, u16 unused
//! word NUM_CLASSES ..            the arrays, class after class: class k owns slots
//!                                [START[k], START[k] + MAX_CAPACITY[k])
//! last 64 bytes                  the CPU's record: state, bytes of capacity handed out
//! ```
//!
//! A header's fields are slot indices from the slab's start. Invariants, per CPU and class,
//! once the CPU's state is `READY` (between critical sections):
//! - `begin == START[k]` and `begin <= current <= end <= begin + MAX_CAPACITY[k]`;
//! - slots `begin..current` hold the cached objects of class `k` (plain pointers: no links);
//! - `record.used_bytes == Σ_k (end - begin) × size(k)`.
//!
//! Before a CPU is `READY` its headers are all zero, which both fast paths read as a miss
//! (`current <= begin` and `current >= end`), so a slab needs no setting up before first use:
//! the region is mapped once (`os::map`; the kernel backs a page only when it is touched, so a
//! CPU that never runs an allocating thread costs no memory) and [`init_cpu`] writes a CPU's
//! headers on its first miss. An initialised header has `end == begin`: capacity 0, so still
//! a miss until the slow path grows it.
//!
//! Entry points: [`map_region`], [`init_cpu`], [`header`], [`Header`], [`record`],
//! [`START`], [`MAX_CAPACITY`]. Layers below: `os`, `size_class`.

use super::rseq::SLAB_SHIFT;
use crate::size_class::{SizeClass, CLASSES, NUM_CLASSES};
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::*};

/// Bytes of one CPU's slab.
pub const SLAB_BYTES: usize = 1 << SLAB_SHIFT;

/// Bytes at the end of each slab for the CPU's [`CpuRecord`].
const RECORD_BYTES: usize = 64;

/// Most objects one class may cache per CPU.
pub const MAX_OBJECTS: usize = 512;

/// Most bytes one class may cache per CPU (but at least one object).
pub const MAX_CLASS_BYTES: usize = 256 << 10;

/// How many objects class `index` may cache per CPU: [`MAX_CLASS_BYTES`] worth, at least one
/// and at most [`MAX_OBJECTS`] (0 for the unused class 0).
const fn max_capacity(index: usize) -> usize {
    if index == 0 {
        return 0;
    }
    let by_bytes = MAX_CLASS_BYTES / CLASSES[index].size as usize;
    if by_bytes < 1 {
        1
    } else if by_bytes > MAX_OBJECTS {
        MAX_OBJECTS
    } else {
        by_bytes
    }
}

/// `MAX_CAPACITY[k]`: the slots class `k` owns in every slab.
pub static MAX_CAPACITY: [u16; NUM_CLASSES] = {
    let mut t = [0u16; NUM_CLASSES];
    let mut k = 0;
    while k < NUM_CLASSES {
        t[k] = max_capacity(k) as u16;
        k += 1;
    }
    t
};

/// `START[k]`: the first slot of class `k`'s array (its `begin`).
pub static START: [u16; NUM_CLASSES] = starts();

const fn starts() -> [u16; NUM_CLASSES] {
    let mut t = [0u16; NUM_CLASSES];
    let mut next = NUM_CLASSES;
    let mut k = 0;
    while k < NUM_CLASSES {
        t[k] = next as u16;
        next += max_capacity(k);
        k += 1;
    }
    t
}

/// The first slot after the last array.
const fn slots_used() -> usize {
    starts()[NUM_CLASSES - 1] as usize + max_capacity(NUM_CLASSES - 1)
}

const _: () = assert!(slots_used() * 8 <= SLAB_BYTES - RECORD_BYTES, "the arrays overflow a slab");
const _: () = assert!(SLAB_BYTES / 8 <= u16::MAX as usize, "slot indices are 16-bit");

/// A CPU's slab has not been set up (its headers are zero).
pub const UNINIT: u8 = 0;
/// A thread is writing the CPU's headers.
pub const INITIALIZING: u8 = 1;
/// The CPU's headers are set; its arrays may hold objects.
pub const READY: u8 = 2;

/// Per-CPU state kept at the end of the CPU's slab (zero when the region is mapped).
#[repr(C)]
pub struct CpuRecord {
    /// [`UNINIT`], [`INITIALIZING`] or [`READY`].
    pub state: AtomicU8,
    /// `Σ_k (end - begin) × size(k)`: the bytes this CPU may cache with today's capacities.
    pub used_bytes: AtomicUsize,
}

const _: () = assert!(core::mem::size_of::<CpuRecord>() <= RECORD_BYTES);

/// The region's base (0 until [`map_region`]) and its number of slabs.
static BASE: AtomicUsize = AtomicUsize::new(0);
static CPUS: AtomicUsize = AtomicUsize::new(0);

/// A header, unpacked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// One past the last cached object.
    pub current: u16,
    /// One past the last slot the class may use now (its capacity ends here).
    pub end: u16,
    /// The first slot of the class's array.
    pub begin: u16,
}

impl Header {
    /// Unpacks the word the fast paths read.
    pub fn unpack(word: u64) -> Header {
        Header { current: word as u16, end: (word >> 16) as u16, begin: (word >> 32) as u16 }
    }

    /// Packs the header into its word.
    pub fn pack(self) -> u64 {
        self.current as u64 | (self.end as u64) << 16 | (self.begin as u64) << 32
    }

    /// Objects cached.
    pub fn len(self) -> usize {
        self.current.saturating_sub(self.begin) as usize
    }

    /// Objects the class may cache now.
    pub fn capacity(self) -> usize {
        self.end.saturating_sub(self.begin) as usize
    }
}

/// Maps the slabs of `cpus` CPUs; returns the base, or `None` when out of memory. Called once.
#[cold]
pub fn map_region(cpus: usize) -> Option<usize> {
    let base = crate::os::map(cpus.checked_mul(SLAB_BYTES)?)?.as_ptr() as usize;
    CPUS.store(cpus, Relaxed);
    BASE.store(base, Release);
    Some(base)
}

/// The region's base (0 if not mapped) and its number of slabs.
pub fn region() -> (usize, usize) {
    let base = BASE.load(Acquire);
    (base, if base == 0 { 0 } else { CPUS.load(Relaxed) })
}

/// The record of CPU `cpu`.
///
/// # Safety
/// - the region is mapped and `cpu` is below its number of slabs.
pub unsafe fn record(cpu: usize) -> &'static CpuRecord {
    let (base, _) = region();
    // SAFETY: per the caller, inside the mapping, which is never unmapped; zero is a valid
    // `CpuRecord`.
    unsafe { &*((base + (cpu << SLAB_SHIFT) + SLAB_BYTES - RECORD_BYTES) as *const CpuRecord) }
}

/// The header of `class` in CPU `cpu`'s slab, for atomic reads (and for [`init_cpu`]'s
/// writes, which no fast path races with).
///
/// # Safety
/// - as for [`record`].
pub unsafe fn header(cpu: usize, class: SizeClass) -> &'static AtomicU64 {
    let (base, _) = region();
    // SAFETY: per the caller; headers are 8-aligned words of the slab.
    unsafe { &*((base + (cpu << SLAB_SHIFT) + class.index() * 8) as *const AtomicU64) }
}

/// The object in slot `slot` of CPU `cpu`'s slab (for statistics and invariant checks).
///
/// # Safety
/// - as for [`record`]; `slot` is below `SLAB_BYTES / 8`.
pub unsafe fn slot(cpu: usize, slot: usize) -> *mut u8 {
    let (base, _) = region();
    // SAFETY: per the caller.
    unsafe { ((base + (cpu << SLAB_SHIFT) + slot * 8) as *const *mut u8).read_volatile() }
}

/// Makes CPU `cpu` `READY` if it is not: writes every header with `current == end == begin`
/// (one atomic 8-byte store each, so that a fast path reads either zero or the whole header;
/// both are misses). True when the CPU is ready; false while another thread sets it up.
///
/// # Safety
/// - as for [`record`].
#[cold]
pub unsafe fn init_cpu(cpu: usize) -> bool {
    // SAFETY: per the caller.
    let record = unsafe { record(cpu) };
    if record.state.load(Acquire) == READY {
        return true;
    }
    match record.state.compare_exchange(UNINIT, INITIALIZING, Acquire, Acquire) {
        Ok(_) => {}
        Err(state) => return state == READY,
    }
    for class in SizeClass::all() {
        let begin = START[class.index()];
        let word = Header { current: begin, end: begin, begin }.pack();
        // SAFETY: per the caller.
        unsafe { header(cpu, class) }.store(word, Relaxed);
    }
    record.used_bytes.store(0, Relaxed);
    record.state.store(READY, Release);
    true
}

/// The number of possible CPUs (`/sys/devices/system/cpu/possible`, "0-N" or a list of
/// ranges: one more than the highest), else the number the C library configures. Read without
/// allocating.
#[cold]
pub fn possible_cpus() -> usize {
    let mut buffer = [0u8; 256];
    // SAFETY: a NUL-terminated path; `read` writes at most the buffer's length.
    let read = unsafe {
        let fd = libc::open(c"/sys/devices/system/cpu/possible".as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            -1
        } else {
            let n = libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len());
            libc::close(fd);
            n
        }
    };
    if read > 0 {
        if let Some(highest) = highest_in_list(&buffer[..read as usize]) {
            return highest + 1;
        }
    }
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) }.max(1) as usize
}

/// The highest number in a CPU list such as `0-3,8-11\n`.
fn highest_in_list(text: &[u8]) -> Option<usize> {
    let mut highest = None;
    let mut number: Option<usize> = None;
    for &byte in text {
        match byte {
            b'0'..=b'9' => {
                let digit = (byte - b'0') as usize;
                number = Some(number.unwrap_or(0).checked_mul(10)?.checked_add(digit)?);
            }
            b'-' | b',' | b'\n' | b' ' => {
                if let Some(n) = number.take() {
                    highest = Some(highest.map_or(n, |h: usize| h.max(n)));
                }
            }
            _ => return None,
        }
    }
    if let Some(n) = number {
        highest = Some(highest.map_or(n, |h: usize| h.max(n)));
    }
    highest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(highest_in_list(b"0-1\n"), Some(1));
        assert_eq!(highest_in_list(b"0\n"), Some(0));
        assert_eq!(highest_in_list(b"0-3,8-11\n"), Some(11));
        assert_eq!(highest_in_list(b"x"), None);
        assert!(possible_cpus() >= 1);
    }

    #[test]
    fn arrays_are_disjoint_and_fit() {
        for k in 1..NUM_CLASSES {
            assert!(MAX_CAPACITY[k] >= 1, "class {k}");
            assert_eq!(START[k] as usize, START[k - 1] as usize + MAX_CAPACITY[k - 1] as usize);
            let size = CLASSES[k].size as usize;
            assert!(MAX_CAPACITY[k] as usize * size <= MAX_CLASS_BYTES.max(size));
        }
        assert!(slots_used() * 8 <= SLAB_BYTES - RECORD_BYTES);
    }

    #[test]
    fn headers_pack_and_unpack() {
        let h = Header { current: 300, end: 400, begin: 121 };
        assert_eq!(Header::unpack(h.pack()), h);
        assert_eq!(h.len(), 179);
        assert_eq!(h.capacity(), 279);
        assert_eq!(Header::unpack(0).len(), 0);
    }
}
