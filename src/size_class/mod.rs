//! Size classes: the generated table (`table.rs`) and the O(1) lookups built on it.
//!
//! Every request up to [`MAX_SIZE`](crate::config::LARGE_THRESHOLD) bytes is served from one of
//! [`NUM_CLASSES`]` - 1` classes; class 0 means "no class". The table itself comes from the
//! generator in `size_classes/` (see its docs for the rules) and is checked in; `TABLE.md`
//! beside the generator shows the same rows with their waste.
//!
//! Lookups use two tables built at compile time from the rows, so that the fast path does a
//! bounds check and one load, with no division and no loop:
//!
//! * sizes `0..=SMALL_LOOKUP_MAX` index [`SMALL_CLASS`] directly;
//! * larger sizes index [`MEDIUM_CLASS`] by `(size + 127) >> 7` (every class above 1 KiB is a
//!   multiple of 128).
//!
//! Alignment: a request of `size` bytes aligned to `align <= PAGE_SIZE` is served by the class
//! of `size` rounded up to a multiple of `align`. The generator guarantees that class's size is
//! itself a multiple of `align`, and spans start on page boundaries, so every object in it is
//! aligned (`tests::aligned_requests_land_on_aligned_classes` checks all pairs).

mod table;

pub use table::{TABLE_MAX_SIZE, TABLE_NUM_CLASSES, TABLE_PAGE_SHIFT};

use crate::config::{LARGE_THRESHOLD, MIN_ALIGN, PAGE_SHIFT, PAGE_SIZE, SMALL_LOOKUP_MAX};

// The checked-in table was generated for this build's page and large threshold (the table is
// this layer's; `config`, below it, only holds the knobs).
const _: () = assert!(PAGE_SHIFT == TABLE_PAGE_SHIFT, "table made for another page");
const _: () = assert!(LARGE_THRESHOLD == TABLE_MAX_SIZE, "table made for another threshold");

/// Number of classes, counting the reserved class 0.
pub const NUM_CLASSES: usize = TABLE_NUM_CLASSES;

/// Largest size served from a class.
pub const MAX_SIZE: usize = TABLE_MAX_SIZE;

/// Granularity of [`MEDIUM_CLASS`]: every class above 1 KiB is a multiple of `1 << 7`.
pub const MEDIUM_SHIFT: usize = 7;

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassInfo {
    /// Bytes per object.
    pub size: u32,
    /// Pages (of `PAGE_SIZE`) per span.
    pub pages: u32,
    /// Objects carved from one span: `objects * size <= pages * PAGE_SIZE`.
    pub objects: u32,
    /// Objects moved between a thread cache and the central list at once.
    pub batch: u32,
}

impl ClassInfo {
    pub const fn new(size: u32, pages: u32, objects: u32, batch: u32) -> Self {
        ClassInfo { size, pages, objects, batch }
    }
}

/// The rows, indexed by class.
pub const CLASSES: [ClassInfo; NUM_CLASSES] = table::CLASSES;

/// A size class: an index into [`CLASSES`] in `1..NUM_CLASSES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct SizeClass(u8);

impl SizeClass {
    /// The smallest class.
    pub const SMALLEST: SizeClass = SizeClass(1);

    /// The class with this index, if it is one (0 is not).
    pub const fn new(index: usize) -> Option<SizeClass> {
        if index == 0 || index >= NUM_CLASSES {
            None
        } else {
            Some(SizeClass(index as u8))
        }
    }

    #[inline(always)]
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    #[inline(always)]
    pub const fn info(self) -> &'static ClassInfo {
        &CLASSES[self.0 as usize]
    }

    /// Bytes per object.
    #[inline(always)]
    pub const fn size(self) -> usize {
        CLASSES[self.0 as usize].size as usize
    }

    /// Objects moved at once between a thread cache and the central list.
    #[inline(always)]
    pub const fn batch(self) -> usize {
        CLASSES[self.0 as usize].batch as usize
    }

    /// Every class, smallest first.
    pub fn all() -> impl DoubleEndedIterator<Item = SizeClass> {
        (1..NUM_CLASSES).map(|i| SizeClass(i as u8))
    }
}

/// The index of the smallest class of at least `size` bytes (0 if none), for tables built at
/// compile time. A binary search: the lookup tables call it for some 20 000 sizes, and a
/// linear scan made const evaluation take seconds of every build of the crate.
pub const fn smallest_class_for(size: usize) -> u8 {
    if size > CLASSES[NUM_CLASSES - 1].size as usize {
        return 0;
    }
    // Invariant: CLASSES[hi] fits `size`, and every class below `lo` does not.
    let (mut lo, mut hi) = (1, NUM_CLASSES - 1);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if CLASSES[mid].size as usize >= size {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    hi as u8
}

/// Class of every size `0..=SMALL_LOOKUP_MAX`, indexed by the size itself (size 0 gets the
/// smallest class).
pub static SMALL_CLASS: [u8; SMALL_LOOKUP_MAX + 1] = {
    let mut t = [0u8; SMALL_LOOKUP_MAX + 1];
    let mut size = 0;
    while size <= SMALL_LOOKUP_MAX {
        t[size] = smallest_class_for(size);
        size += 1;
    }
    t
};

/// Class of every size up to [`MAX_SIZE`], indexed by `(size + 127) >> 7`.
pub static MEDIUM_CLASS: [u8; (MAX_SIZE >> MEDIUM_SHIFT) + 1] = {
    let mut t = [0u8; (MAX_SIZE >> MEDIUM_SHIFT) + 1];
    let mut i = 0;
    while i < t.len() {
        t[i] = smallest_class_for(i << MEDIUM_SHIFT);
        i += 1;
    }
    t
};

// Every class above the direct table is a multiple of the medium granularity, so the medium
// lookup is exact; the first class of the table is at least the minimum alignment.
const _: () = {
    let mut i = 1;
    while i < NUM_CLASSES {
        let size = CLASSES[i].size as usize;
        assert!(size % MIN_ALIGN == 0);
        assert!(size <= SMALL_LOOKUP_MAX || size % (1 << MEDIUM_SHIFT) == 0);
        assert!(CLASSES[i].objects as usize * size <= CLASSES[i].pages as usize * PAGE_SIZE);
        assert!(CLASSES[i].objects >= 1 && CLASSES[i].batch >= 1);
        // A page-map tag holds a page's offset in its span below 256 pages.
        assert!(CLASSES[i].pages <= 256);
        i += 1;
    }
    assert!(CLASSES[NUM_CLASSES - 1].size as usize == MAX_SIZE);
    assert!(NUM_CLASSES <= 256);
};

/// What [`SizeClass::is_object_start`] reads, for one class, in 16 bytes (the stride of the
/// thread cache's lists, so that one scaled class index serves both): C `free` validates a
/// pointer with one multiplication and one compare.
///
/// The test is Lemire's divisibility check, extended to bound the object index. With
/// `c = ceil(2^64 / size)` (plus one for a power of two, so that `e > 0`) and
/// `e = c * size - 2^64` (`0 < e <= size`), for an offset below 2^21:
/// - `offset = k * size` gives `offset * c = k * e` (mod 2^64), which grows with `k`, so
///   `offset * c < objects * e` exactly when `k < objects`;
/// - any other offset, `k * size + r` with `0 < r < size`, gives `k * e + r * c`, which is at
///   least `c` and does not wrap (`(k + 1) * e < 2^42 < c`), while `objects * e < 2^42 < c`.
///
/// So `offset * c < objects * e` holds exactly for the starts of the span's objects.
#[repr(C, align(16))]
struct ObjectCheck {
    /// `c` above.
    factor: u64,
    /// `objects * e`.
    limit: u64,
}

/// Offsets from a span's start that [`SizeClass::is_object_start`] answers for: a page-map tag
/// holds a page's offset in its span below 256 pages.
pub(crate) const OBJECT_CHECK_RANGE: usize = 256 * PAGE_SIZE;

static OBJECT_CHECK: [ObjectCheck; NUM_CLASSES] = {
    let mut t = [const { ObjectCheck { factor: 0, limit: 0 } }; NUM_CLASSES];
    let mut i = 1;
    while i < NUM_CLASSES {
        let size = CLASSES[i].size as u64;
        let mut factor = u64::MAX / size + 1; // ceil(2^64 / size), size > 1
        if size.is_power_of_two() {
            factor += 1;
        }
        let e = factor.wrapping_mul(size);
        assert!(e > 0 && e <= size);
        let limit = CLASSES[i].objects as u64 * e;
        // The bounds the argument above needs.
        assert!(size < 1 << 21 && (OBJECT_CHECK_RANGE as u64 / size + 1) * e < factor);
        assert!(limit < factor);
        t[i] = ObjectCheck { factor, limit };
        i += 1;
    }
    t
};
const _: () = assert!(OBJECT_CHECK_RANGE <= 1 << 21);

/// [`SizeClass::is_object_start`] for the class whose index times 16 is `scaled_class` (as a
/// page-map tag holds it), which saves C `free` from scaling the index back.
///
/// # Safety
/// - `scaled_class` is 16 times a class index below [`NUM_CLASSES`], not 0.
#[inline(always)]
pub(crate) unsafe fn is_object_start_scaled(scaled_class: usize, offset: usize) -> bool {
    crate::diag::debug_invariant!(offset < OBJECT_CHECK_RANGE);
    // SAFETY: per the caller (a class that is not 0 is one `row_passes` takes).
    unsafe { row_passes(scaled_class, offset) }
}
const _: () = assert!(core::mem::size_of::<ObjectCheck>() == 16);

/// [`is_object_start_scaled`] for any `scaled_class` that is 16 times a class index below
/// [`NUM_CLASSES`], 0 included (its row passes no offset), and any offset: beyond
/// [`OBJECT_CHECK_RANGE`] the answer means nothing (for C `free`'s arena index, where only a
/// read that meets a write gives such an offset, and the caller copes with either answer).
///
/// # Safety
/// - `scaled_class` is 16 times a class index below [`NUM_CLASSES`], or 0.
#[inline(always)]
pub(crate) unsafe fn row_passes(scaled_class: usize, offset: usize) -> bool {
    crate::diag::debug_invariant!(scaled_class % 16 == 0 && scaled_class / 16 < NUM_CLASSES);
    // SAFETY: rows are 16 bytes; the row is in bounds per the caller.
    let check = unsafe { &*OBJECT_CHECK.as_ptr().byte_add(scaled_class) };
    (offset as u64).wrapping_mul(check.factor) < check.limit
}

impl SizeClass {
    /// The alignment every object of this class has, and so the most that a request served
    /// by it may rely on: objects sit at multiples of `size()` from a page boundary, so this is
    /// the largest power of two dividing the size, at most a page.
    #[inline]
    pub const fn alignment(self) -> usize {
        let natural = 1 << self.size().trailing_zeros();
        if natural < PAGE_SIZE {
            natural
        } else {
            PAGE_SIZE
        }
    }

    /// Whether `offset` bytes from the start of one of this class's spans is the start of an
    /// object: a multiple of the size, below the last object's end. `offset` must be below
    /// [`OBJECT_CHECK_RANGE`] (any such offset may be asked); beyond, the answer means nothing.
    #[cfg(test)]
    pub(crate) fn is_object_start(self, offset: usize) -> bool {
        // SAFETY: a `SizeClass` is below `NUM_CLASSES` and not 0.
        unsafe { is_object_start_scaled(self.index() * 16, offset) }
    }

    /// The class of a page-map tag's class field, which is never 0 when called.
    ///
    /// # Safety
    /// - `index` is in `1..NUM_CLASSES` (a tag written by the central free lists).
    #[inline(always)]
    pub unsafe fn from_tag(index: usize) -> SizeClass {
        crate::diag::debug_invariant!(index != 0 && index < NUM_CLASSES);
        SizeClass(index as u8)
    }
}

/// The class that serves `size` bytes aligned to `align` (a power of two), or `None` when the
/// request must go elsewhere (larger than [`MAX_SIZE`] once rounded, or aligned beyond a page).
#[inline(always)]
pub fn class_for(size: usize, align: usize) -> Option<SizeClass> {
    crate::diag::debug_invariant!(align.is_power_of_two());
    if size > MAX_SIZE || align > PAGE_SIZE {
        return None;
    }
    // No overflow: both terms are bounded just above. A zero size counts as one byte, so that
    // it rounds up to `align` (C's `aligned_alloc(4096, 0)` must be aligned too).
    let rounded = (size.max(1) + align - 1) & !(align - 1);
    let class = if rounded <= SMALL_LOOKUP_MAX {
        // SAFETY: bounded by the table's length.
        unsafe { *SMALL_CLASS.get_unchecked(rounded) }
    } else if rounded <= MAX_SIZE {
        let index = (rounded + (1 << MEDIUM_SHIFT) - 1) >> MEDIUM_SHIFT;
        // SAFETY: `rounded <= MAX_SIZE`, so `index <= MAX_SIZE >> MEDIUM_SHIFT`, in bounds.
        unsafe { *MEDIUM_CLASS.get_unchecked(index) }
    } else {
        return None;
    };
    Some(SizeClass(class))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_follows_its_rules() {
        for (i, class) in SizeClass::all().enumerate() {
            let info = class.info();
            let size = info.size as usize;
            let span = info.pages as usize * PAGE_SIZE;
            if i > 0 {
                assert!(size > CLASSES[i].size as usize, "not increasing at class {i}");
            }
            assert_eq!(size % 8, 0, "class {size} not 8-aligned");
            if size > 128 {
                assert_eq!(size % 16, 0, "class {size} not 16-aligned");
            }
            // The smallest request that lands in this class is one byte above the previous
            // class; the share of the object it leaves unused is the rounding waste.
            let smallest_request = CLASSES[i].size as usize + 1;
            let waste = (size - smallest_request) as f64 / size as f64;
            if size >= 64 {
                assert!(waste <= 0.125, "class {size}: rounding waste {waste}");
            } else {
                assert_eq!(size, (i + 1) * 8, "small classes are 8 bytes apart");
            }
            assert_eq!(info.objects as usize, span / size);
            let tail = span - info.objects as usize * size;
            assert!(tail * 8 <= span, "class {size}: tail {tail} of {span}");
            assert!(info.batch >= 2 && info.batch <= 64);
        }
    }

    #[test]
    fn every_size_maps_to_the_smallest_class_that_fits() {
        for size in 0..=MAX_SIZE {
            let class = class_for(size, 1).expect("size within the table");
            assert!(class.size() >= size, "size {size} -> class {}", class.size());
            if class.index() > 1 {
                let below = CLASSES[class.index() - 1].size as usize;
                assert!(below < size, "size {size} -> {} but {below} fits", class.size());
            }
            assert_eq!(class_for(size, 8), Some(class));
        }
        assert_eq!(class_for(MAX_SIZE + 1, 1), None);
        assert_eq!(class_for(usize::MAX, 1), None);
    }

    #[test]
    fn binary_search_agrees_with_a_scan() {
        for size in (0..=MAX_SIZE + 1).step_by(3).chain([0, 1, 8, 9, MAX_SIZE, MAX_SIZE + 1]) {
            let scan = (1..NUM_CLASSES).find(|&i| CLASSES[i].size as usize >= size).unwrap_or(0);
            assert_eq!(smallest_class_for(size) as usize, scan, "size {size}");
        }
    }

    #[test]
    fn aligned_requests_land_on_aligned_classes() {
        let mut align = 16;
        while align <= PAGE_SIZE {
            for size in (1..=MAX_SIZE).step_by(7).chain([0, align, MAX_SIZE]) {
                match class_for(size, align) {
                    Some(class) => {
                        assert!(class.size() >= size);
                        assert_eq!(class.size() % align, 0, "size {size} align {align}");
                        assert!(class.alignment() >= align, "size {size} align {align}");
                    }
                    None => assert!(size.next_multiple_of(align) > MAX_SIZE),
                }
            }
            align *= 2;
        }
        assert_eq!(class_for(8, PAGE_SIZE * 2), None);
    }

    #[test]
    fn object_starts_are_exactly_the_objects() {
        for class in SizeClass::all() {
            let span = class.info().pages as usize * PAGE_SIZE;
            let size = class.size();
            let objects = class.info().objects as usize;
            // Every offset of the span and beyond, then a sweep of the rest of the range (every
            // multiple of the size, and offsets just off them).
            for offset in (0..(span + 2 * size).min(OBJECT_CHECK_RANGE)).step_by(if size < 1024 {
                1
            } else {
                8
            }) {
                let expected = offset % size == 0 && offset / size < objects;
                assert_eq!(class.is_object_start(offset), expected, "{offset} in {size}");
            }
            for start in (span..OBJECT_CHECK_RANGE).step_by(size) {
                for offset in [start, start + 1, start + 8, start + size - 8, start + size - 1] {
                    if offset < OBJECT_CHECK_RANGE {
                        assert!(!class.is_object_start(offset), "{offset:#x} in {size}");
                    }
                }
            }
        }
    }
}
