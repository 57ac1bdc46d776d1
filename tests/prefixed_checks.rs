//! The prefixed C API (`tcalloc_free`, `tcalloc_realloc`) with the heap-misuse checks: the
//! README's "Heap misuse" table says `realloc` of a freed block stops the program with
//! `tcalloc: realloc(): double free`, and a double free still in the thread's cache with
//! `tcalloc: free(): double free`. Each misuse runs in a child process (this binary again,
//! with `TCALLOC_PREFIXED_CASE` set), which must stop with SIGABRT and the message.
//!
//! The checks are built in with `override` (the C library) or `hardened`; a plain build's
//! prefixed functions validate pointers but do not detect double frees (README, Heap misuse),
//! so this file runs in CI's `--features override,hardened` pass.
#![cfg(any(feature = "override", feature = "hardened"))]

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

extern "C" {
    fn tcalloc_malloc(size: usize) -> *mut u8;
    fn tcalloc_free(ptr: *mut u8);
    fn tcalloc_realloc(ptr: *mut u8, size: usize) -> *mut u8;
}

fn run_case(case: &str) {
    // Puts the tcalloc rlib, which defines the prefixed functions, on the link line.
    let _ = std::hint::black_box(tcalloc::TcAlloc);
    // SAFETY (both): the misuse is the point; the process must abort.
    unsafe {
        let p = tcalloc_malloc(64);
        p.write_bytes(1, 64);
        tcalloc_free(p);
        let q = match case {
            "realloc_after_free" => tcalloc_realloc(std::hint::black_box(p), 200),
            "free_twice" => {
                tcalloc_free(std::hint::black_box(p));
                std::ptr::null_mut()
            }
            _ => unreachable!(),
        };
        let (a, b) = (tcalloc_malloc(64), tcalloc_malloc(64));
        println!("survived: {q:?} {a:?} {b:?}{}", if a == b { " (handed out twice)" } else { "" });
    }
}

fn assert_stops(case: &str, expected: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([case, "--exact", "--nocapture", "--test-threads=1"])
        .env("TCALLOC_PREFIXED_CASE", case)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{case}: {:?}\nstdout: {}\nstderr: {stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains(expected), "{case}: {stderr}");
}

#[test]
fn realloc_after_free() {
    if let Ok(case) = std::env::var("TCALLOC_PREFIXED_CASE") {
        return run_case(&case);
    }
    assert_stops("realloc_after_free", "tcalloc: realloc(): double free 0x");
}

#[test]
fn free_twice() {
    if let Ok(case) = std::env::var("TCALLOC_PREFIXED_CASE") {
        return run_case(&case);
    }
    assert_stops("free_twice", "tcalloc: free(): double free 0x");
}
