//! The C library: builds `libtcalloc.so` with the `override` feature (in its own target
//! directory, so that the nested cargo does not wait for the lock of the one running this
//! test), compiles the C programs in `tests/c/` and runs them with `LD_PRELOAD`, or linked
//! against the library for the memory-pool API.
//!
//! `model_test.c` is the model-based randomised test of `tests/model.rs` through the C entry
//! points; it takes the same `TCALLOC_MODEL_SEED`, `TCALLOC_MODEL_SEEDS` and
//! `TCALLOC_MODEL_OPS` variables.

mod common;

use common::{library, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Compiles `tests/c/<name>.c` into the temporary directory, with `extra` arguments.
fn compile_with(name: &str, extra: &[String]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("tests/c").join(format!("{name}.c"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let status = Command::new("cc")
        .args(["-O2", "-pthread", "-Wno-alloc-size-larger-than", "-o"])
        .arg(&out)
        .arg(&src)
        .arg(format!("-I{}", root.join("include").display()))
        .args(extra)
        .arg("-ldl")
        .status()
        .expect("run cc (install gcc)");
    assert!(status.success(), "compiling {} failed", src.display());
    out
}

/// Compiles `tests/c/<name>.c` into the temporary directory, once per process: tests run in
/// parallel, and several run the same program (`invalid_free`, `glibc_api_test`); one that
/// compiled it again while another ran it failed ("Permission denied" from exec, on a file
/// the compiler was rewriting).
fn compile(name: &str) -> PathBuf {
    static COMPILED: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut compiled = COMPILED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, program)) = compiled.iter().find(|(n, _)| n == name) {
        return program.clone();
    }
    let program = compile_with(name, &[]);
    compiled.push((name.to_string(), program.clone()));
    program
}

fn run(program: &Path, args: &[&str], preload: bool) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if preload {
        cmd.env("LD_PRELOAD", library());
    }
    cmd.output().expect("run a test program")
}

#[test]
fn glibc_semantics_under_ld_preload() {
    let program = compile("malloc_test");
    let out = run(&program, &[], true);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "malloc_test failed:\n{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("ok   malloc resolves to libtcalloc"), "{stdout}");
    assert!(stdout.contains("0 failure(s)"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    // The same program on glibc passes every check but the ones about tcalloc itself and the
    // two places where tcalloc deliberately differs from this glibc (2.36): aligned_alloc
    // rejects a non-power-of-two alignment (C17, and glibc from 2.38), and pvalloc(0) gives a
    // whole page. So the checks test glibc's semantics, not tcalloc's quirks.
    let out = run(&program, &[], false);
    let stdout = text(&out.stdout);
    let allowed = [
        "resolves to libtcalloc",
        "tcalloc_malloc is exported",
        "aligned_alloc with a non-power-of-two",
        "pvalloc(0) gives one page",
        // Counted from tcalloc's malloc_info only.
        "threads whose first allocation is in a pthread key destructor",
    ];
    for line in stdout.lines().filter(|l| l.starts_with("FAIL")) {
        assert!(allowed.iter().any(|a| line.contains(a)), "glibc fails {line:?}:\n{stdout}");
    }
    assert!(stdout.contains("FAIL malloc resolves to libtcalloc"), "{stdout}");
}

/// Runs `invalid_free <mode>` under the library and checks that it stopped with SIGABRT and
/// `expected` on stderr.
fn assert_stops(program: &Path, mode: &str, expected: &str) {
    let out = run(program, &[mode], true);
    let stderr = text(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{mode}: {:?} {stderr}", out.status);
    assert!(stderr.contains(expected), "{mode}: expected {expected:?}, stderr was {stderr:?}");
}

#[test]
fn the_rest_of_glibcs_malloc_api_under_ld_preload() {
    let program = compile("glibc_api_test");
    let out = run(&program, &[], true);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "glibc_api_test failed:\n{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("running under tcalloc"), "{stdout}");
    assert!(stdout.contains("ok   malloc_trim gives the freed 64 MiB back"), "{stdout}");
    assert!(stdout.contains("ok   nallocx(n, 0) == malloc_usable_size"), "{stdout}");
    assert!(stdout.contains("ok   free_sized frees"), "{stdout}");
    assert!(stdout.contains("0 failure(s)") && !stdout.contains("FAIL"), "{stdout}");
    // The checks of glibc's own functions pass on glibc too: they test glibc's contract.
    let out = run(&program, &[], false);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("running under glibc"), "{stdout}");
    assert!(out.status.success(), "on glibc:\n{stdout}\n{}", text(&out.stderr));
}

#[test]
fn sized_frees_that_do_not_fit_the_block_stop_the_program() {
    let program = compile("glibc_api_test");
    for (mode, call) in [
        ("free-sized-too-big", "free_sized"),
        ("free-aligned-sized-misaligned", "free_aligned_sized"),
        ("free-aligned-sized-bad-alignment", "free_aligned_sized"),
        ("sdallocx-too-big", "sdallocx"),
    ] {
        let out = run(&program, &[mode], true);
        let stderr = text(&out.stderr);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{mode}: {:?} {stderr}", out.status);
        let expected = format!("tcalloc: {call}(): size mismatch: ");
        assert!(stderr.contains(&expected), "{mode}: stderr was {stderr:?}");
    }
}

#[test]
fn pointers_never_handed_out_stop_the_program() {
    let program = compile("invalid_free");
    for (mode, call) in [
        ("free-stack", "free"),
        ("free-static", "free"),
        ("free-interior", "free"),
        ("free-large-interior", "free"),
        ("free-wild", "free"),
        ("realloc-interior", "realloc"),
        ("usable-stack", "malloc_usable_size"),
    ] {
        assert_stops(&program, mode, &format!("tcalloc: {call}(): invalid pointer 0x"));
    }
}

#[test]
fn double_frees_stop_the_program() {
    let program = compile("invalid_free");
    let mut modes: Vec<String> = Vec::new();
    // Every kind of block: the smallest class, small and medium classes, one-object classes,
    // and a double free after other frees of the same class (the block is not on top).
    for size in [1, 8, 24, 64, 1000, 5000, 70_000, 600_000] {
        modes.push(format!("double-free-{size}"));
        modes.push(format!("double-free-{size}-3"));
    }
    modes.extend(
        ["double-free-page-run", "free-large-twice", "double-free-in-new-thread"].map(String::from),
    );
    for mode in &modes {
        assert_stops(&program, mode, "tcalloc: free(): double free 0x");
    }
    assert_stops(&program, "realloc-after-free", "tcalloc: realloc(): double free 0x");
}

#[test]
fn overwritten_free_list_links_stop_the_program() {
    let program = compile("invalid_free");
    for mode in ["write-after-free", "zero-after-free", "overrun-low-bits"] {
        assert_stops(&program, mode, "tcalloc: heap corruption: the free block at 0x");
    }
}

/// Compiles `tests/c/cxx_test.cpp` (C++17) into the temporary directory, once per process
/// (tests run in parallel, and one writing the program while another runs it fails).
fn cxx_test() -> &'static Path {
    static PROGRAM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(|| compile_cxx("cxx_test"))
}

/// Compiles `tests/c/<name>.cpp` (C++17) into the temporary directory.
fn compile_cxx(name: &str) -> PathBuf {
    compile_cxx_with(name, name, &[])
}

/// Compiles `tests/c/<name>.cpp` (C++17) into the temporary directory as `out`, with `extra`
/// arguments.
fn compile_cxx_with(name: &str, out: &str, extra: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c").join(format!("{name}.cpp"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(out);
    let status = Command::new("c++")
        .args(["-O2", "-std=c++17", "-Wno-free-nonheap-object", "-o"])
        .arg(&out)
        .arg(&src)
        .args(extra)
        .arg("-ldl")
        .status()
        .expect("run c++ (install g++)");
    assert!(status.success(), "compiling {} failed", src.display());
    out
}

#[test]
fn cxx_operators_under_ld_preload() {
    let out = run(cxx_test(), &[], true);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "cxx_test failed:\n{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("ok   all 20 operators resolve to libtcalloc"), "{stdout}");
    assert!(stdout.contains("ok   new of more than PTRDIFF_MAX throws"), "{stdout}");
    assert!(stdout.contains("0 failure(s)"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(text(&out.stderr).is_empty(), "{}", text(&out.stderr));
}

#[test]
fn cxx_delete_of_a_bad_pointer_stops_the_program() {
    let program = cxx_test();
    assert_stops(program, "bad-delete", "tcalloc: operator delete(): invalid pointer");
    assert_stops(program, "interior-delete", "tcalloc: operator delete(): invalid pointer");
    assert_stops(program, "double-delete", "tcalloc: operator delete(): double free");
}

#[test]
fn cxx_programs_that_replace_new_and_delete_keep_them() {
    // The program defines only the plain new and delete; the sized delete of its containers,
    // its nothrow and array forms must reach them, as without tcalloc.
    let program = compile_cxx("cxx_replaced");
    for preload in [false, true] {
        let out = run(&program, &[], preload);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "preload {preload}: {stdout}\n{}", text(&out.stderr));
        assert_eq!(stdout.trim(), "live 0, every block through the program's new", "{preload}");
    }
}

#[test]
fn cxx_library_opened_with_rtld_local_gets_bad_alloc() {
    // A C++ library opened with RTLD_LOCAL (as Python opens extensions): its runtime is not in
    // the global scope, and running out of memory must still throw, not abort.
    let plugin = compile_cxx_with("cxx_plugin", "libcxx_plugin.so", &["-shared", "-fPIC"]);
    let host = compile("cxx_host");
    let out = run(&host, &[plugin.to_str().unwrap()], true);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("nothrow new of too much: null"), "{stdout}");
    assert!(stdout.contains("new of too much: bad_alloc caught"), "{stdout}");
}

/// Locked pages in the heap (`tests/c/locked_memory.c`): the kernel refuses to release them,
/// and the program must still finish; it used to hang at its free, the page heap retrying the
/// refused span forever.
#[test]
fn locked_memory_does_not_hang_a_free_or_malloc_trim() {
    let program = compile("locked_memory");
    let mut child = Command::new(&program)
        .env("LD_PRELOAD", library())
        .env("TCALLOC_FREE_RESERVE_BYTES", "0")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run locked_memory");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().expect("wait for locked_memory").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("locked_memory still runs after 30 s: a release loops on locked pages");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("read locked_memory's output");
    assert!(out.status.success(), "locked_memory: {:?}", out.status);
    assert_eq!(text(&out.stdout), "done\n");
}

#[test]
fn exported_symbols() {
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(library()).output();
    let out = out.expect("run nm (install binutils)");
    let symbols: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    let has = |name: &str| symbols.iter().any(|s| s == name);
    for name in [
        "malloc",
        "free",
        "calloc",
        "realloc",
        "reallocarray",
        "posix_memalign",
        "aligned_alloc",
        "memalign",
        "valloc",
        "pvalloc",
        "malloc_usable_size",
        "malloc_trim",
        "mallinfo",
        "mallinfo2",
        "malloc_stats",
        "malloc_info",
        "mallopt",
        "free_sized",
        "free_aligned_sized",
        "nallocx",
        "sdallocx",
        "malloc_good_size",
    ] {
        assert!(has(name), "{name} is not exported");
        assert!(has(&format!("tcalloc_{name}")), "tcalloc_{name} is not exported");
    }
    for name in ["tcalloc_stats_print", "tcalloc_release_free_memory"] {
        assert!(has(name), "{name} is not exported");
    }
}

#[test]
fn the_header_declares_every_exported_tcalloc_symbol() {
    let header =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("include/tcalloc.h"))
            .unwrap();
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(library()).output().unwrap();
    for symbol in text(&out.stdout).lines().filter_map(|l| l.split_whitespace().nth(2)) {
        if symbol.starts_with("tcalloc_") || symbol.starts_with("mp_") {
            assert!(header.contains(&format!("{symbol}(")), "{symbol} is not in tcalloc.h");
        }
    }
}

#[test]
fn memory_pool_c_api() {
    let dir = library().parent().unwrap().display().to_string();
    let program = compile_with(
        "pool_test",
        &[format!("-L{dir}"), "-ltcalloc".into(), format!("-Wl,-rpath,{dir}")],
    );
    let out = run(&program, &[], false);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "pool_test failed:\n{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("0 failure(s)") && !stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("none overlapping"), "{stdout}");
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[test]
fn model_through_the_c_entry_points() {
    let program = compile("model_test");
    let classes: Vec<String> = tcalloc::stats()
        .classes
        .iter()
        .filter(|c| c.size > 0)
        .map(|c| c.size.to_string())
        .collect();
    let seed = env_or("TCALLOC_MODEL_SEED", "1");
    let seeds = env_or("TCALLOC_MODEL_SEEDS", "1");
    let ops = env_or("TCALLOC_MODEL_OPS", "20000");
    let args = [seed.as_str(), &seeds, &ops, &classes.join(",")];
    // On glibc first: the checks are the C contract, not tcalloc's own behaviour.
    for preload in [false, true] {
        let start = std::time::Instant::now();
        let out = run(&program, &args, preload);
        let stdout = text(&out.stdout);
        let on = if preload { "tcalloc" } else { "glibc" };
        eprintln!("model_test on {on}: {:.1} s\n{stdout}", start.elapsed().as_secs_f64());
        assert!(
            out.status.success() && stdout.contains("model_test ok"),
            "model_test on {on} failed ({:?}):\n{stdout}\n{}",
            out.status,
            text(&out.stderr)
        );
    }
}
