//! The size-class generator for tcalloc.
//!
//! tcalloc serves every request up to [`MAX_SIZE`] from one of a fixed set of *size classes*.
//! This crate computes that set and renders it twice:
//!
//! * [`render_rust`] — `src/size_class/table.rs`, the table the allocator compiles;
//! * [`render_table`] — `size_classes/TABLE.md`, the same rows for a human reviewer, with the
//!   waste each class costs.
//!
//! `cargo run -p tcalloc-size-classes` rewrites both files. This crate's test
//! `tests/checked_in.rs` regenerates them in memory and fails when the checked-in copies are
//! stale; the allocator's own unit tests check the compiled table against the rules.
//!
//! # The rules
//!
//! 1. Class sizes are strictly increasing, every one a multiple of 8, and every one above
//!    128 bytes a multiple of 16.
//! 2. Up to 128 bytes there is a class every 8 bytes (the 8-byte quantum), so rounding never
//!    wastes 8 bytes or more. Above 128 bytes, each power-of-two interval `(2^k, 2^(k+1)]` is
//!    cut into eight equal steps of `2^(k-3)` bytes and *every* step is a class. The rounding
//!    waste — the share of an object left unused by the smallest request that lands in its
//!    class — is therefore below 1/8 = 12.5% for every class of 64 bytes or more.
//! 3. Because each interval holds every multiple of its step, a request rounded up to a
//!    multiple of a power-of-two alignment `a <= PAGE_SIZE` lands in a class whose size is a
//!    multiple of `a`; since spans start on page boundaries, every object of that class is
//!    `a`-aligned. The allocator relies on this to serve aligned requests from the same classes.
//! 4. A span of a class is the smallest number of pages that holds at least
//!    [`MIN_OBJECTS_PER_SPAN`] objects (or, for big objects, at least [`MIN_SPAN_BYTES`]) and
//!    whose unused tail (the bytes after the last whole object) is at most 12.5% of the span.
//!    Small classes get one 8 KiB page; mid-sized ones a few pages, so that one span serves
//!    several requests.
//! 5. The batch — how many objects move between a thread cache and the central free list at
//!    once — is `64 KiB / size`, clamped to `[2, 64]`.

use std::fmt::Write as _;

/// log2 of the allocator's page size (8 KiB pages, as in tcmalloc).
pub const PAGE_SHIFT: u32 = 13;
/// The allocator's page size in bytes.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// The largest size served from a size class; larger requests are mapped directly.
pub const MAX_SIZE: usize = 1024 * 1024;
/// Up to this size there is a class every [`QUANTUM`] bytes.
pub const FINE_LIMIT: usize = 128;
/// The spacing of the smallest classes.
pub const QUANTUM: usize = 8;
/// Each power-of-two interval above [`FINE_LIMIT`] is cut into this many classes.
pub const STEPS_PER_DOUBLING: usize = 8;
/// The most pages a class's span may have.
pub const MAX_SPAN_PAGES: usize = 128;
/// A span holds at least this many objects, unless it is already [`MIN_SPAN_BYTES`] long.
pub const MIN_OBJECTS_PER_SPAN: usize = 4;
/// See [`MIN_OBJECTS_PER_SPAN`].
pub const MIN_SPAN_BYTES: usize = 64 * 1024;
/// Bytes the batch size aims to move at once.
pub const BATCH_TARGET_BYTES: usize = 64 * 1024;
/// Bounds of the batch size.
pub const MIN_BATCH: usize = 2;
pub const MAX_BATCH: usize = 64;
/// Upper bound on rounding and tail waste, as a fraction `1 / WASTE_DENOMINATOR`.
pub const WASTE_DENOMINATOR: usize = 8;

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Class {
    /// Bytes per object.
    pub size: usize,
    /// Pages per span.
    pub pages: usize,
    /// Objects carved from one span.
    pub objects: usize,
    /// Objects moved between a thread cache and the central free list at once.
    pub batch: usize,
}

impl Class {
    /// Bytes of one span.
    pub fn span_bytes(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    /// Bytes at the end of a span that no object uses.
    pub fn tail_bytes(&self) -> usize {
        self.span_bytes() - self.objects * self.size
    }

    /// Tail waste as a fraction of the span.
    pub fn tail_waste(&self) -> f64 {
        self.tail_bytes() as f64 / self.span_bytes() as f64
    }
}

/// The class sizes, smallest first (class 0 is not included: the allocator reserves it).
pub fn class_sizes() -> Vec<usize> {
    let mut sizes: Vec<usize> = (1..=FINE_LIMIT / QUANTUM).map(|i| i * QUANTUM).collect();
    let mut low = FINE_LIMIT;
    while low < MAX_SIZE {
        let step = low / STEPS_PER_DOUBLING;
        sizes.extend((1..=STEPS_PER_DOUBLING).map(|j| low + j * step));
        low *= 2;
    }
    sizes
}

/// Pages per span for a class of `size` bytes: the fewest pages that hold enough objects and
/// whose tail waste is at most 1/8 of the span.
pub fn pages_for(size: usize) -> usize {
    let min_bytes = (size * MIN_OBJECTS_PER_SPAN).min(MIN_SPAN_BYTES).max(size);
    let first = min_bytes.div_ceil(PAGE_SIZE);
    (first..=MAX_SPAN_PAGES)
        .find(|&pages| {
            let span = pages * PAGE_SIZE;
            (span % size) * WASTE_DENOMINATOR <= span
        })
        .unwrap_or_else(|| panic!("no span of at most {MAX_SPAN_PAGES} pages fits class {size}"))
}

/// Objects moved at once for a class of `size` bytes.
pub fn batch_for(size: usize) -> usize {
    (BATCH_TARGET_BYTES / size).clamp(MIN_BATCH, MAX_BATCH)
}

/// The whole table.
pub fn classes() -> Vec<Class> {
    class_sizes()
        .into_iter()
        .map(|size| {
            let pages = pages_for(size);
            Class { size, pages, objects: pages * PAGE_SIZE / size, batch: batch_for(size) }
        })
        .collect()
}

/// Rounding waste of class `index` in `table`: the share of the object that the smallest
/// request landing in the class leaves unused.
pub fn rounding_waste(table: &[Class], index: usize) -> f64 {
    let previous = if index == 0 { 0 } else { table[index - 1].size };
    let smallest_request = previous + 1;
    (table[index].size - smallest_request) as f64 / table[index].size as f64
}

/// `src/size_class/table.rs`.
pub fn render_rust() -> String {
    let table = classes();
    let mut out = String::new();
    out.push_str(
        "//! The size-class table, generated by `cargo run -p tcalloc-size-classes`.\n\
         //! Do not edit: change `size_classes/src/lib.rs` and regenerate. The same rows, with\n\
         //! their waste, are in `size_classes/TABLE.md`.\n\n\
         use super::ClassInfo;\n\n",
    );
    writeln!(out, "/// log2 of the page size the table was generated for.").unwrap();
    writeln!(out, "pub const TABLE_PAGE_SHIFT: usize = {PAGE_SHIFT};").unwrap();
    writeln!(out, "/// The largest size served from a class.").unwrap();
    writeln!(out, "pub const TABLE_MAX_SIZE: usize = {MAX_SIZE};").unwrap();
    writeln!(out, "/// Number of classes, counting the reserved class 0.").unwrap();
    writeln!(out, "pub const TABLE_NUM_CLASSES: usize = {};", table.len() + 1).unwrap();
    writeln!(out).unwrap();
    writeln!(out, "/// One row per class; row 0 is reserved (\"no class\").").unwrap();
    writeln!(out, "#[rustfmt::skip]").unwrap();
    writeln!(out, "pub const CLASSES: [ClassInfo; TABLE_NUM_CLASSES] = [").unwrap();
    writeln!(out, "    //             bytes      pages  objects  batch").unwrap();
    let row = |out: &mut String, c: &Class| {
        writeln!(
            out,
            "    ClassInfo::new({:>7}, {:>4}, {:>6}, {:>4}),",
            c.size, c.pages, c.objects, c.batch
        )
        .unwrap();
    };
    row(&mut out, &Class { size: 0, pages: 0, objects: 0, batch: 0 });
    for class in &table {
        row(&mut out, class);
    }
    writeln!(out, "];").unwrap();
    out
}

/// `size_classes/TABLE.md`.
pub fn render_table() -> String {
    let table = classes();
    let mut out = String::new();
    out.push_str("# tcalloc size classes\n\n");
    out.push_str(
        "Generated by `cargo run -p tcalloc-size-classes` from `size_classes/src/lib.rs`; \
         do not edit.\n\n",
    );
    writeln!(
        out,
        "{} classes from {} B to {} KiB, pages of {} KiB. *Rounding waste*: the share of an \
         object left unused by the smallest request that lands in its class. *Tail waste*: the \
         share of a span after its last whole object. *Batch*: objects moved between a thread \
         cache and the central free list at once.\n",
        table.len(),
        table[0].size,
        MAX_SIZE / 1024,
        PAGE_SIZE / 1024
    )
    .unwrap();
    out.push_str(
        "| class | bytes | pages | span bytes | objects | batch | rounding waste | tail waste |\n",
    );
    out.push_str("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (i, c) in table.iter().enumerate() {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.1}% | {:.1}% |",
            i + 1,
            c.size,
            c.pages,
            c.span_bytes(),
            c.objects,
            c.batch,
            100.0 * rounding_waste(&table, i),
            100.0 * c.tail_waste()
        )
        .unwrap();
    }
    out
}
