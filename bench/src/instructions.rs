//! `tcalloc-bench instructions`: instructions per 64-byte allocation and free, counted by
//! valgrind's callgrind, in three tables written to `instructions.md`.
//!
//! - **Rust pair**: `GlobalAlloc::alloc` + `dealloc` of a 64-byte layout in each worker binary
//!   (`worker_<allocator> fastpath <n>`), each worker with its allocator as
//!   `#[global_allocator]`.
//! - **C pair**: `malloc(64)` + `free` through the C ABI (`worker_glibc fastpath-c <n>`), run
//!   without preload (glibc) and with `LD_PRELOAD` of `libtcalloc.so` (built here with the
//!   `override` feature, as the preload comparison builds it) and of Debian's packaged
//!   jemalloc, mimalloc and tcmalloc where they are installed.
//! - **C++ pair**: `new` of 64 bytes + sized `delete` (`worker_glibc fastpath-cxx <n>`), under
//!   the same preloads: the allocator's own operators where its library defines them, the
//!   C++ runtime's (calling `malloc` and `free`) where not.
//!
//! Each count is the callgrind total for 2M pairs minus the total for 1M pairs, so that
//! start-up and exit cancel out, divided by the 1M extra pairs ("with the loop"); the same
//! difference for the loop without the calls (`fastpath-empty`, `fastpath-c-empty`) is then
//! subtracted to give the cost of the pair alone. Valgrind passes `LD_PRELOAD` on to the
//! program it runs; callgrind, unlike memcheck, does not replace `malloc` itself.

use crate::preload::{self, Preload};
use crate::report;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use tcalloc_bench::ALLOCATORS;

/// Pairs in the short and the long run; their difference is what is counted.
const PAIRS: (usize, usize) = (1_000_000, 2_000_000);

/// Counts both tables and writes `instructions.md` into `out`. The worker binaries must
/// already be built in `dir`.
pub fn run(dir: &Path, out: &Path) {
    let has_valgrind = Command::new("valgrind").arg("--version").output().is_ok();
    if !has_valgrind {
        eprintln!("valgrind is not installed (apt-get install valgrind)");
        std::process::exit(2);
    }
    let mut rust_rows = Vec::new();
    for a in ALLOCATORS {
        let worker = crate::worker_path(dir, a);
        let (per_pair, with_loop) = per_pair(|mode, n| {
            let mode = if mode { "fastpath" } else { "fastpath-empty" };
            callgrind(&worker, None, mode, n)
        });
        eprintln!(
            "Rust {a:<9} {per_pair:6.1} instructions per pair ({with_loop:.1} with the loop)"
        );
        rust_rows.push((a, per_pair, with_loop));
    }

    let tcalloc = preload::build_tcalloc(&crate::workspace());
    let mut preloads = preload::allocators(tcalloc, Path::new(preload::DEBIAN_LIBS));
    // tcalloc first, as in the Rust table.
    preloads.sort_by_key(|p| p.name != "tcalloc");
    let worker = crate::worker_path(dir, "glibc");
    let c_rows = preloaded_rows(&worker, &preloads, "C", "fastpath-c");
    let cxx_rows = preloaded_rows(&worker, &preloads, "C++", "fastpath-cxx");

    let mut text = report::instructions_markdown(&rust_rows);
    text.push('\n');
    text.push_str(&c_markdown(&c_rows, C_TITLE));
    text.push('\n');
    text.push_str(&c_markdown(&cxx_rows, CXX_TITLE));
    println!("{text}");
    std::fs::write(out.join("instructions.md"), text).expect("write instructions.md");
    eprintln!("wrote {}", out.join("instructions.md").display());
}

/// One row per preloaded allocator for the worker's `mode` (and `<mode>-empty`, the bare
/// loop), each printed as it is counted, labelled `language`.
fn preloaded_rows<'a>(
    worker: &Path,
    preloads: &'a [Preload],
    language: &str,
    mode: &str,
) -> Vec<CRow<'a>> {
    let empty = format!("{mode}-empty");
    let mut rows = Vec::new();
    for p in preloads {
        let (per_pair, with_loop) = per_pair(|allocate, n| {
            callgrind(worker, Some(p), if allocate { mode } else { &empty }, n)
        });
        eprintln!(
            "{language:<4} {:<9} {per_pair:6.1} instructions per pair ({with_loop:.1} with the loop)",
            p.name
        );
        rows.push(CRow { preload: p, per_pair, with_loop });
    }
    rows
}

/// (instructions per pair without the loop, with the loop) from `count(allocate, pairs)`,
/// the callgrind total of a run of `pairs` iterations with or without the calls.
pub fn per_pair(mut count: impl FnMut(bool, usize) -> f64) -> (f64, f64) {
    let (n1, n2) = PAIRS;
    let extra = (n2 - n1) as f64;
    let with = count(true, n2) - count(true, n1);
    let without = count(false, n2) - count(false, n1);
    ((with - without) / extra, with / extra)
}

/// The total instruction count callgrind reports for `worker mode n`, with `preload`'s
/// library in `LD_PRELOAD` (none: the C library's own `malloc`).
pub fn callgrind(worker: &Path, preload: Option<&Preload>, mode: &str, n: usize) -> f64 {
    let mut cmd = Command::new("valgrind");
    cmd.args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(worker)
        .args([mode, &n.to_string()])
        .env_remove("LD_PRELOAD");
    if let Some(library) = preload.and_then(|p| p.library.as_ref()) {
        cmd.env("LD_PRELOAD", library);
    }
    let output = cmd.output().expect("run valgrind");
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        panic!("{} {mode} {n} failed under callgrind:\n{stderr}", worker.display());
    }
    collected(&stderr)
        .unwrap_or_else(|| panic!("no instruction count in valgrind's output:\n{stderr}"))
}

/// The figure of callgrind's `==pid== Collected : N` line.
fn collected(stderr: &str) -> Option<f64> {
    stderr.lines().find_map(|l| l.split("Collected :").nth(1)).and_then(|v| v.trim().parse().ok())
}

/// One row of the C table.
struct CRow<'a> {
    preload: &'a Preload,
    per_pair: f64,
    with_loop: f64,
}

/// The C table's title.
const C_TITLE: &str = "Instructions per `malloc(64)` + `free` pair through the C ABI \
    (`worker_glibc fastpath-c`), each allocator preloaded with `LD_PRELOAD` (glibc: none), \
    counted by callgrind the same way.";

/// The C++ table's title.
const CXX_TITLE: &str = "Instructions per C++ `new` of 64 bytes + sized `delete` pair \
    (`worker_glibc fastpath-cxx`: `operator new(size_t)` and `operator delete(void *, \
    size_t)` called through pointers to whichever definitions a C++ program would reach, \
    the preloaded library's or else the C++ runtime's, which call `malloc` and `free`), \
    counted the same way.";

/// A table of preloaded pairs (C or C++), in the Rust table's form plus the library each row
/// preloaded.
fn c_markdown(rows: &[CRow], title: &str) -> String {
    let mut out = format!(
        "{title}\n\n\
         | allocator | instructions per pair | with the benchmark loop | library |\n\
         | --- | ---: | ---: | --- |\n",
    );
    for r in rows {
        let library = match &r.preload.library {
            // The file the link resolves to names the version.
            Some(path) => std::fs::canonicalize(path)
                .unwrap_or_else(|_| path.clone())
                .file_name()
                .map(|f| format!("`{}`", f.to_string_lossy()))
                .unwrap_or_default(),
            None => "(none)".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.1} | {library} |",
            r.preload.name, r.per_pair, r.with_loop
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_total_and_subtracts_the_loop() {
        let stderr = "==12== Events    : Ir\n==12== Collected : 95450500\n==12==\n";
        assert_eq!(collected(stderr), Some(95_450_500.0));
        assert_eq!(collected("no such line"), None);
        // 10 instructions per iteration of the bare loop, 95 with the pair, 1000 at start-up.
        let (per_pair, with_loop) =
            per_pair(|allocate, n| 1000.0 + n as f64 * if allocate { 95.0 } else { 10.0 });
        assert_eq!((per_pair, with_loop), (85.0, 95.0));
    }

    #[test]
    fn the_c_table_names_each_library() {
        let glibc = Preload { name: "glibc", library: None };
        let tcalloc = Preload { name: "tcalloc", library: Some("/x/libtcalloc.so".into()) };
        let rows = [
            CRow { preload: &tcalloc, per_pair: 88.0, with_loop: 95.0 },
            CRow { preload: &glibc, per_pair: 100.3, with_loop: 107.0 },
        ];
        let text = c_markdown(&rows, CXX_TITLE);
        assert!(text.starts_with(CXX_TITLE), "{text}");
        assert!(text.contains("| tcalloc | 88.0 | 95.0 | `libtcalloc.so` |"), "{text}");
        assert!(text.contains("| glibc | 100.3 | 107.0 | (none) |"), "{text}");
    }
}
