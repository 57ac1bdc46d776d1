//! The `hardened` feature: Rust's `dealloc` checks for double frees and mismatched layouts as
//! C `free` does. Each misuse runs in a child process (this test binary, run again with
//! `TCALLOC_HARDENED_CASE` set), which must stop with SIGABRT and the message.
//!
//! Without the feature this file has no tests: CI runs the suite with
//! `--features override,hardened`, where they run.
#![cfg(feature = "hardened")]

use std::alloc::{GlobalAlloc, Layout};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use tcalloc::TcAlloc;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).unwrap()
}

/// The misuses, run in the child.
fn run_case(case: &str) {
    // SAFETY (every block below): the misuse is the point; the process must abort.
    unsafe {
        match case {
            "double-free" => {
                let p = TcAlloc.alloc(layout(64));
                TcAlloc.dealloc(p, layout(64));
                TcAlloc.dealloc(p, layout(64));
            }
            "double-free-after-others" => {
                let p = TcAlloc.alloc(layout(24));
                let q = TcAlloc.alloc(layout(24));
                TcAlloc.dealloc(p, layout(24));
                TcAlloc.dealloc(q, layout(24));
                TcAlloc.dealloc(p, layout(24));
            }
            "double-free-borrowed" => {
                // A phase of 112-byte blocks, 90% freed: 104-byte requests then borrow them.
                let n = (32 << 20) / 112;
                let blocks: Vec<_> = (0..n).map(|_| TcAlloc.alloc(layout(112))).collect();
                let mut kept = Vec::new();
                for (i, p) in blocks.into_iter().enumerate() {
                    if i % 10 == 0 {
                        kept.push(p);
                    } else {
                        TcAlloc.dealloc(p, layout(112));
                    }
                }
                let mut borrowed = None;
                for _ in 0..100_000 {
                    let p = TcAlloc.alloc(layout(104));
                    if tcalloc_usable_size(p) == 112 {
                        borrowed = Some(p);
                        break;
                    }
                }
                let p = borrowed.expect("no 104-byte block came from a 112-byte span");
                TcAlloc.dealloc(p, layout(104));
                TcAlloc.dealloc(p, layout(104));
            }
            "layout-mismatch" => {
                let p = TcAlloc.alloc(layout(64));
                TcAlloc.dealloc(p, layout(512));
            }
            _ => panic!("unknown case {case}"),
        }
    }
    println!("the allocator accepted the misuse ({case})");
}

extern "C" {
    fn tcalloc_malloc_usable_size(p: *mut u8) -> usize;
}

fn tcalloc_usable_size(p: *mut u8) -> usize {
    // SAFETY: `p` is a live block of tcalloc.
    unsafe { tcalloc_malloc_usable_size(p) }
}

fn assert_aborts(case: &str, message: &str) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--ignored", "--nocapture", "--test-threads=1"])
        .env("TCALLOC_HARDENED_CASE", case)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{case}: {:?} {stderr}", out.status);
    assert!(stderr.contains(message), "{case}: expected {message:?}, stderr was {stderr}");
}

/// The child process's entry point: runs the case [`assert_aborts`] names.
#[test]
#[ignore = "run in a child process by the other tests"]
fn child() {
    let case = std::env::var("TCALLOC_HARDENED_CASE").expect("started by assert_aborts");
    run_case(&case);
}

#[test]
fn double_frees_abort() {
    for case in ["double-free", "double-free-after-others", "double-free-borrowed"] {
        assert_aborts(case, "tcalloc: dealloc(): double free 0x");
    }
}

#[test]
fn a_layout_of_another_class_aborts() {
    assert_aborts("layout-mismatch", "tcalloc: dealloc(): the layout (size 512, align 8)");
}
