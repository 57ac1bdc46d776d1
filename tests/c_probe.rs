//! Probes of C `free`'s validation (`tests/c/probe_free.c` under `LD_PRELOAD`): every
//! offset in and around an object of every class malloc reaches, wild values, an object slot
//! never handed out, and a double free that is a fresh thread's first call.

mod common;

use common::{library, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn compile() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("probe_free");
    let status = Command::new("cc")
        .args(["-O2", "-pthread", "-Wno-use-after-free", "-o"])
        .arg(&out)
        .arg(root.join("tests/c/probe_free.c"))
        .arg("-ldl")
        .status()
        .expect("run cc");
    assert!(status.success());
    out
}

fn run(mode: &str) -> Output {
    Command::new(compile()).arg(mode).env("LD_PRELOAD", library()).output().expect("run")
}

fn stopped_with(out: &Output, expected: &str) -> bool {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal() == Some(libc::SIGABRT) && text(&out.stderr).contains(expected)
}

/// Holds: every interior offset, the bytes around the object on its pages, high bits, kernel
/// and non-canonical addresses, small integers, TLS and static addresses stop the program.
#[test]
fn every_offset_that_is_not_an_object_start_stops_the_program() {
    let out = run("sweep");
    let stdout = text(&out.stdout);
    assert!(out.status.success() && stdout.contains("accepted 0"), "{stdout}{}", text(&out.stderr));
}

/// An object slot of a span that no malloc handed out yet: on a page not carved yet, its
/// page has no tag (`invalid pointer`); on a page carved with the slot put on the span's own
/// list, the block is free already (`double free`, found by the span search). Either way it is
/// never handed out twice (it was, before pages were tagged as they are carved).
#[test]
fn free_of_a_slot_never_handed_out_stops_the_program() {
    for mode in ["uncarved-2048-1", "uncarved-2048-3", "uncarved-20480-1"] {
        let out = run(mode);
        assert!(
            stopped_with(&out, "tcalloc: free(): invalid pointer 0x")
                || stopped_with(&out, "tcalloc: free(): double free 0x"),
            "{mode}: {:?}\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

/// A thread whose first allocator call is `free(p); free(p)`: the free that sets its cache up
/// keeps the block in the cache (it went straight to the central lists before, where the
/// second free did not look, and the block was handed out twice).
#[test]
fn double_free_as_a_fresh_threads_first_call_stops_the_program() {
    let out = run("fresh-thread");
    assert!(
        stopped_with(&out, "tcalloc: free(): double free 0x"),
        "{:?}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}
