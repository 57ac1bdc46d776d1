//! Helpers shared by the integration tests that run C programs and real programs against the
//! preloadable library.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `libtcalloc.so` built with the `override` feature, once per test binary, in its own target
/// directory (so that the nested cargo does not wait for the lock of the one running the test).
pub fn library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("override");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--lib", "--features", "override", "--target-dir"])
            .arg(&target)
            .status()
            .expect("run cargo");
        assert!(status.success(), "building libtcalloc.so with --features override failed");
        let lib = target.join("debug/libtcalloc.so");
        assert!(lib.exists(), "{} is missing", lib.display());
        lib
    })
}

/// Bytes as text, lossily.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
