//! Links `libtcalloc.so` without `libgcc_s.so.1`.
//!
//! Rust's standard library refers to the unwinder (`_Unwind_Resume`, `_Unwind_Backtrace`, ...),
//! which on Linux with glibc is `libgcc_s.so.1`. Preloaded into every process, that library
//! costs a mapping and its relocations at start-up and about 80 KiB of resident memory (its
//! text, faulted in around the pages the loader touches), for code that tcalloc never runs: a
//! panic in the C library aborts. The unwinder's archive, `libgcc_eh.a`, linked whole into the
//! shared library instead, defines those symbols inside it; the linker's `--as-needed` (which
//! rustc passes) then drops `libgcc_s` from its dependencies, and rustc's export list keeps the
//! unwinder's symbols local, so a C++ program's exceptions still go through its own
//! `libgcc_s`.
//!
//! Only with the `override` feature, the build of the drop-in C library: cargo passes a
//! `rustc-link-arg-cdylib` on to the cdylibs of crates that depend on this one too (cargo
//! issue 9562), and a Rust cdylib that only uses `TcAlloc` must keep its own unwinder, or a C++
//! exception passing through its frames would meet an unwinder of another copy. The rlib (Rust
//! programs, the tests) is never linked so. Where the C compiler does not know the archive
//! (another libc, another compiler), or the build is a cross build (the host's compiler would
//! name the host's archive), nothing changes.
//!
//! The same build also orders the library's code (`link/text-layout.ld`): the code a process
//! runs, tcalloc's own and the few functions of the C runtime and the standard library that
//! run at start-up and exit, goes first, so that it shares the first folio of the file that
//! the kernel maps into the process (see the script). The script is only passed to the linkers
//! that rustc picks itself (rust-lld, or the C compiler's ld.bfd): a linker chosen in the
//! cargo configuration or in `RUSTFLAGS` (mold, say, which reads no `SECTIONS`) gets the
//! default layout.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CC");
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let libc = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let cross = env::var("TARGET").ok() != env::var("HOST").ok();
    let override_build = env::var_os("CARGO_FEATURE_OVERRIDE").is_some();
    if os != "linux" || libc != "gnu" || cross || !override_build {
        return;
    }
    if default_linker() {
        let script = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
            .join("link/text-layout.ld");
        println!("cargo:rerun-if-changed={}", script.display());
        println!("cargo:rustc-link-arg-cdylib=-Wl,-T,{}", script.display());
    }
    let Some(archive) = unwinder_archive() else { return };
    println!("cargo:rustc-link-arg-cdylib=-Wl,--whole-archive");
    println!("cargo:rustc-link-arg-cdylib={}", archive.display());
    println!("cargo:rustc-link-arg-cdylib=-Wl,--no-whole-archive");
}

/// Whether rustc links with the linker it picks itself: no linker named in the cargo
/// configuration (cargo passes it as `RUSTC_LINKER`) nor in the flags.
fn default_linker() -> bool {
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    env::var_os("RUSTC_LINKER").is_none()
        && !flags.split('\x1f').any(|flag| flag.contains("linker") || flag.contains("fuse-ld"))
}

/// Where the C compiler keeps `libgcc_eh.a`: an absolute path that exists, or `None`.
fn unwinder_archive() -> Option<PathBuf> {
    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(cc).arg("-print-file-name=libgcc_eh.a").output().ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    // A compiler that does not have the file prints its bare name back.
    (out.status.success() && path.is_absolute() && path.is_file()).then_some(path)
}
