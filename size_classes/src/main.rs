//! Rewrites `src/size_class/table.rs` and `size_classes/TABLE.md` from the rules in the
//! library. Run from anywhere in the workspace: `cargo run -p tcalloc-size-classes`.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let rust = root.join("src/size_class/table.rs");
    let table = root.join("size_classes/TABLE.md");
    std::fs::write(&rust, tcalloc_size_classes::render_rust())?;
    std::fs::write(&table, tcalloc_size_classes::render_table())?;
    println!("wrote {} and {}", rust.display(), table.display());
    Ok(())
}
