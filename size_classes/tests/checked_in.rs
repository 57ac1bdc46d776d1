//! The checked-in outputs of the generator are current: `src/size_class/table.rs` (compiled
//! into the allocator) and `size_classes/TABLE.md` (for reviewers) are exactly what the rules
//! in this crate produce. The test lives here rather than in the allocator, so that `tcalloc`
//! itself needs no dependency on the generator.

#[test]
fn checked_in_table_is_current() {
    assert_eq!(
        include_str!("../../src/size_class/table.rs"),
        tcalloc_size_classes::render_rust(),
        "src/size_class/table.rs is stale: run `cargo run -p tcalloc-size-classes`"
    );
    assert_eq!(
        include_str!("../TABLE.md"),
        tcalloc_size_classes::render_table(),
        "size_classes/TABLE.md is stale: run `cargo run -p tcalloc-size-classes`"
    );
}
