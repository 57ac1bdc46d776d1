//! Probes of C `free`'s validation (`tests/c/probe_free.c` under `LD_PRELOAD`): every
//! offset in and around an object of every class malloc reaches, wild values, an object slot
//! never handed out, and a double free that is a fresh thread's first call.

mod common;

use common::{library, text};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The probe program, compiled once per test process (tests run in parallel: compiling it
/// again while another test runs it fails with "text file busy").
fn compile() -> PathBuf {
    static PROGRAM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PROGRAM.get_or_init(compile_now).clone()
}

fn compile_now() -> PathBuf {
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

/// [`run`] with the address space limited to 200 MiB, too little for the page heap's arena
/// (which takes at most a quarter of the limit, and at least 64 MiB): every `free` then
/// validates through the page's tag.
fn run_without_arena(mode: &str) -> Output {
    run_limited(mode, 200 << 20)
}

/// [`run`] with the address space limited to `bytes`.
fn run_limited(mode: &str, bytes: u64) -> Output {
    run_limited_filled(mode, bytes, 0)
}

/// [`run_limited`] after `fill_mib` MiB of 64-byte blocks (`PROBE_FILL_MB`).
fn run_limited_filled(mode: &str, bytes: u64, fill_mib: usize) -> Output {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(compile());
    command.arg(mode).env("LD_PRELOAD", library());
    if fill_mib > 0 {
        command.env("PROBE_FILL_MB", fill_mib.to_string());
    }
    // SAFETY: `setrlimit` is async-signal-safe and touches no state of the parent.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    command.output().expect("run")
}

/// The report's `arena reserved` line, trimmed.
fn arena_line(out: &Output) -> String {
    report_line(out, "arena reserved")
}

/// The line of the statistics report (on stderr) that starts with `start`.
fn report_line(out: &Output, start: &str) -> String {
    let stderr = text(&out.stderr);
    let line = stderr.lines().find(|l| l.starts_with(start));
    line.unwrap_or_else(|| panic!("no {start:?} line in {stderr}")).to_string()
}

fn stopped_with(out: &Output, expected: &str) -> bool {
    use std::os::unix::process::ExitStatusExt;
    out.status.signal() == Some(libc::SIGABRT) && text(&out.stderr).contains(expected)
}

/// Asserts that the run of `what` stopped with one of the `expected` messages.
fn assert_stopped(out: &Output, expected: &[&str], what: &str) {
    assert!(
        expected.iter().any(|e| stopped_with(out, e)),
        "{what}: {:?}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

const INVALID: &str = "tcalloc: free(): invalid pointer 0x";
const DOUBLE: &str = "tcalloc: free(): double free 0x";

/// Holds: every interior offset, the bytes around the object on its pages, high bits, kernel
/// and non-canonical addresses, small integers, TLS and static addresses stop the program.
#[test]
fn every_offset_that_is_not_an_object_start_stops_the_program() {
    let out = run("sweep");
    let stdout = text(&out.stdout);
    assert!(out.status.success() && stdout.contains("accepted 0"), "{stdout}{}", text(&out.stderr));
}

/// An object slot of a span that no malloc handed out yet: on an OS page not carved yet, it
/// has no tag (`invalid pointer`); on an OS page carved with the slot put on the span's own
/// list, the block is free already (`double free`, found by the span search). Either way it is
/// never handed out twice (it was, before pages were tagged as they are carved).
#[test]
fn free_of_a_slot_never_handed_out_stops_the_program() {
    for mode in ["uncarved-2048-1", "uncarved-2048-3", "uncarved-20480-1"] {
        assert_stopped(&run(mode), &[INVALID, DOUBLE], mode);
    }
}

/// The first block of a class's span, freed by address, carves the rest of its OS page onto
/// the span's list (writing a link into each slot), not the rest of its page: the page's
/// second OS page stays untouched until the class hands out objects there. Before, it carved
/// the whole page, and a class with a few objects in use cost the program both OS pages
/// (mimalloc-bench's glibc-thread and espresso peaked 200 and 310 KiB higher).
#[test]
fn a_free_carves_the_os_page_of_its_block_not_the_whole_page() {
    let out = run("half-page");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("class 1152 offset 0 resident 1 0"), "{stdout}");
}

/// Below the heap's first chunk lies a guard: 4 MiB of the arena's reservation that are never
/// opened, so that a write a little below one of the first blocks faults. The kernel puts the
/// mappings made after the reservation (the page map's leaves, metadata) right below it, and
/// mimalloc-bench's `one_mbyte_underflow` (a write 1 MiB below a block) went silently into the
/// page map in 21 of 60 runs; none with the guard.
#[test]
fn an_inaccessible_guard_lies_below_the_first_blocks() {
    let out = run("below");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let kib = stdout.strip_prefix("below ---p ").and_then(|rest| rest.trim().parse::<u64>().ok());
    assert!(kib.is_some_and(|kib| kib >= 4096), "{stdout}");
}

/// A thread whose first allocator call is `free(p); free(p)`: the free that sets its cache up
/// keeps the block in the cache (it went straight to the central lists before, where the
/// second free did not look, and the block was handed out twice).
#[test]
fn double_free_as_a_fresh_threads_first_call_stops_the_program() {
    assert_stopped(&run("fresh-thread"), &[DOUBLE], "fresh-thread");
}

/// A thread whose first allocator call frees a block that is back on its span's free list:
/// the free that sets the thread's cache up searches the span (an `Uninit` cache's mask sends
/// every block to the search, whatever its first word holds).
#[test]
fn a_fresh_threads_first_free_of_a_block_back_in_its_span_stops_the_program() {
    assert_stopped(&run("fresh-thread-span"), &[DOUBLE], "fresh-thread-span");
}

/// A block freed, its first two bytes overwritten (the low bytes of its link: a reference
/// count's 16-bit store, say), and freed again: `free` tests only the link's top bytes, which
/// the write left alone (the whole-word test missed it unless the key's low three bits
/// matched the written ones).
#[test]
fn a_double_free_after_a_write_over_the_first_bytes_stops_the_program() {
    assert_stopped(&run("written"), &[DOUBLE], "written");
}

/// A double free among blocks of every small size stops the program (with the arena, and
/// through the tags without it).
#[test]
fn double_free_stops_the_program_with_and_without_the_arena() {
    assert_stopped(&run("twice"), &[DOUBLE], "twice");
    assert_stopped(&run_without_arena("twice"), &[DOUBLE], "twice, without the arena");
}

/// Where the arena cannot be reserved, the heap maps its chunks elsewhere and C `free`
/// validates through the tags: the same probes stop the program (and the report says that
/// there is no arena, so the probes did not pass through it).
#[test]
fn without_the_arena_free_validates_through_the_tags() {
    let with = run("stats");
    assert!(with.status.success());
    assert!(arena_line(&with).contains("GiB"), "{}", arena_line(&with));
    let without = run_without_arena("stats");
    assert!(without.status.success(), "{:?} {}", without.status, text(&without.stderr));
    assert!(arena_line(&without).ends_with(" 0   B"), "{}", arena_line(&without));
    // Under a limit of 2 GiB, the arena takes a quarter of it.
    let limited = run_limited("stats", 2 << 30);
    assert!(arena_line(&limited).ends_with(" 512.00 MiB"), "{}", arena_line(&limited));

    let out = run_without_arena("sweep");
    let stdout = text(&out.stdout);
    assert!(out.status.success() && stdout.contains("accepted 0"), "{stdout}{}", text(&out.stderr));
    for mode in ["uncarved-2048-1", "uncarved-20480-1", "fresh-thread"] {
        assert_stopped(&run_without_arena(mode), &[INVALID, DOUBLE], mode);
    }
}

/// A heap that outgrows its arena (256 MiB under a 1 GiB limit, filled with 300 MiB of
/// blocks) maps its further chunks elsewhere: blocks on both sides are validated, so the
/// probes stop the program as everywhere.
#[test]
fn beyond_a_used_up_arena_free_validates_as_inside() {
    const LIMIT: u64 = 1 << 30;
    let out = run_limited_filled("stats", LIMIT, 300);
    assert!(out.status.success(), "{:?} {}", out.status, text(&out.stderr));
    assert!(arena_line(&out).ends_with(" 256.00 MiB"), "{}", arena_line(&out));
    // Used up: all of it but the guard below the heap's first chunk (4 MiB).
    let used = report_line(&out, "arena used");
    assert!(used.ends_with(" 252.00 MiB"), "the arena is used up: {used}");

    let out = run_limited_filled("sweep", LIMIT, 300);
    let stdout = text(&out.stdout);
    assert!(out.status.success() && stdout.contains("accepted 0"), "{stdout}{}", text(&out.stderr));
    assert_stopped(&run_limited_filled("twice", LIMIT, 300), &[DOUBLE], "twice, beyond the arena");
    for mode in ["uncarved-2048-1", "uncarved-20480-1"] {
        assert_stopped(&run_limited_filled(mode, LIMIT, 300), &[INVALID, DOUBLE], mode);
    }
}

/// `TCALLOC_ARENA_BYTES` sizes the arena (at most 32 GiB), and 0 turns it off.
#[test]
fn the_arena_follows_its_setting() {
    for (value, expected) in [("0", " 0   B"), ("128m", " 128.00 MiB"), ("64g", " 32.00 GiB")] {
        let out = Command::new(compile())
            .arg("stats")
            .env("LD_PRELOAD", library())
            .env("TCALLOC_ARENA_BYTES", value)
            .output()
            .expect("run");
        assert!(out.status.success(), "{value}: {:?} {}", out.status, text(&out.stderr));
        assert!(arena_line(&out).ends_with(expected), "{value}: {}", arena_line(&out));
    }
}
