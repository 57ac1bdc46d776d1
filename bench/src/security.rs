//! `tcalloc-bench security`: the security tests of mimalloc-bench with each allocator
//! preloaded, and what became of each misuse.
//!
//! The suite's `bench/security` folder holds small C and C++ programs that each misuse the heap
//! once (a double free, a free of a stack address, a write after free, an overrun, a property
//! such as "a freed block is not handed out again at once"), which its CMake build compiles for
//! blocks of 8 B (`_small`), 4 KiB (`_medium`) and 256 KiB (`_large`) into `BUILD/security`.
//! A test prints `NOT_CAUGHT` when the misuse went by unnoticed. Each test runs once per
//! allocator (the same allocators as `mimalloc-bench`; see `preload::allocators`), and its
//! ending is classified ([`Verdict`]); the table goes to `security.md`.
//!
//! The suite's own README warns that such tests are simplistic: a crash is counted as caught,
//! whether the allocator meant it (a guard page) or not (an overrun that ran off a mapping), and
//! an allocator may prefer making misuse hard to exploit to detecting it. The table says which
//! misuse each allocator stops with a message, which crashes, and which goes by.

use crate::mimalloc_bench::{run_process, Ending};
use crate::preload::{self, Preload};
use clap::Args;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The command's options.
#[derive(Args, Debug)]
pub struct SecurityArgs {
    /// The mimalloc-bench checkout (only to find its build: SUITE/out/bench, else
    /// SUITE/../mb-build).
    #[arg(long, required_unless_present = "build")]
    suite: Option<PathBuf>,
    /// The folder of the built suite, with the tests in its `security/` folder.
    #[arg(long)]
    build: Option<PathBuf>,
    /// A test still running after this many seconds is killed (and counts as missed).
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Preload this `libtcalloc.so` as it is instead of building one.
    #[arg(long, value_name = "FILE")]
    tcalloc: Option<PathBuf>,
    /// The folder with the peers' libraries (a peer whose library is missing is left out).
    #[arg(long, value_name = "DIR", default_value = preload::DEBIAN_LIBS)]
    peers: PathBuf,
}

/// What became of one test's misuse under one allocator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Killed by `SIGABRT` before it printed `NOT_CAUGHT`: the allocator stopped it (with a
    /// message, for tcalloc and glibc).
    Stopped,
    /// Killed by another signal (a segmentation fault) before it printed `NOT_CAUGHT`.
    Crashed,
    /// Exited without printing `NOT_CAUGHT`, with status 0 or 1 (the tests that need a block
    /// of 0 bytes return 1 when `malloc(0)` gives null): the property the test checks held
    /// (`malloc(-2)` failed, a freed block was not handed out again at once).
    Held,
    /// Printed `NOT_CAUGHT`, then was stopped or crashed: the misuse was found later (tcalloc
    /// finds a write over a freed block's link when it walks the list holding the block: at
    /// the next `malloc` of its size, or when the thread's cache is handed back at exit).
    Late,
    /// Printed `NOT_CAUGHT` and exited normally, or ran until the timeout.
    Missed,
    /// The test could not be run, the library was not loaded, or it exited with another
    /// status without printing `NOT_CAUGHT` (a loader error, say): no verdict.
    Failed,
}

impl Verdict {
    /// The one-character mark of the tables.
    fn mark(self) -> &'static str {
        match self {
            Verdict::Stopped => "S",
            Verdict::Crashed => "C",
            Verdict::Held => "H",
            Verdict::Late => "L",
            Verdict::Missed => "-",
            Verdict::Failed => "?",
        }
    }

    /// Whether the misuse did not go by: the program stopped before it said it went by, or
    /// the property held.
    fn caught(self) -> bool {
        matches!(self, Verdict::Stopped | Verdict::Crashed | Verdict::Held)
    }
}

/// The verdict on a run that ended so (`Ok`: exit status 0) and printed `stdout`.
pub fn classify(ending: &Result<(), Ending>, stdout: &str) -> Verdict {
    let printed = stdout.contains("NOT_CAUGHT");
    match ending {
        Err(Ending::NotStarted(_)) => Verdict::Failed,
        Err(Ending::TimedOut(_)) => Verdict::Missed,
        Err(Ending::Signal(_)) if printed => Verdict::Late,
        Err(Ending::Signal(signal)) if *signal == libc::SIGABRT => Verdict::Stopped,
        Err(Ending::Signal(_)) => Verdict::Crashed,
        Ok(()) | Err(Ending::Exit(_)) if printed => Verdict::Missed,
        Ok(()) | Err(Ending::Exit(1)) => Verdict::Held,
        Err(Ending::Exit(_)) => Verdict::Failed,
    }
}

/// The sizes the suite builds each C test for, in table order.
const SIZES: [&str; 3] = ["small", "medium", "large"];

/// A test's family and size: `double_free_small` is (`double_free`, `Some(0)`); the C++ tests
/// are built once, with no size.
fn family(name: &str) -> (&str, Option<usize>) {
    for (i, size) in SIZES.iter().enumerate() {
        if let Some(family) = name.strip_suffix(size).and_then(|f| f.strip_suffix('_')) {
            return (family, Some(i));
        }
    }
    (name, None)
}

/// The tests in `dir`: its executable files (not the build system's), by family and size.
fn tests(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    e.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                })
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort_by(|a, b| family(a).cmp(&family(b)));
    names
}

/// The verdicts, by test (in [`tests`] order) and allocator.
struct Verdicts {
    tests: Vec<String>,
    verdicts: Vec<Vec<Verdict>>,
    /// Runs without a verdict, and why.
    failures: Vec<String>,
}

/// Runs every test under every allocator, in `cwd`.
fn measure(dir: &Path, allocators: &[Preload], cwd: &Path, timeout: Duration) -> Verdicts {
    std::fs::create_dir_all(cwd).expect("create the working folder");
    let tests = tests(dir);
    let mut verdicts = Vec::new();
    let mut failures = Vec::new();
    for test in &tests {
        let mut row = Vec::new();
        for a in allocators {
            let (ending, _, _, stdout, stderr) =
                run_process(&dir.join(test), &[], None, a, cwd, timeout);
            let not_loaded = a.library.as_ref().is_some_and(|l| {
                stderr.contains(&format!("object '{}' from LD_PRELOAD cannot", l.display()))
            });
            let verdict = if not_loaded { Verdict::Failed } else { classify(&ending, &stdout) };
            if verdict == Verdict::Failed {
                let why = match &ending {
                    _ if not_loaded => "the library was not loaded".to_string(),
                    Err(e) => e.to_string(),
                    Ok(()) => "no verdict".to_string(),
                };
                failures.push(format!("{test} under {}: {why}", a.name));
            }
            row.push(verdict);
        }
        eprint!(".");
        verdicts.push(row);
    }
    eprintln!();
    Verdicts { tests, verdicts, failures }
}

/// The report: a summary per allocator and the verdicts per test.
fn markdown(results: &Verdicts, allocators: &[Preload], context: &str) -> String {
    let mut out = String::from("# Heap misuse: mimalloc-bench's security tests\n\n");
    let _ = writeln!(out, "{context}\n");
    out.push_str(
        "Each test misuses the heap once and prints `NOT_CAUGHT` if that went by unnoticed. \
         **S** stopped: killed by `SIGABRT` first (the allocator aborted, with a message for \
         tcalloc and glibc); **C** crashed: killed by another signal first (a segmentation \
         fault, meant or not); **H** held: exited without printing it, the property the test \
         checks held (`malloc(-2)` failed, a freed block was not handed out again at once); \
         **L** late: printed it, then was stopped or crashed (tcalloc finds a write over a \
         freed block when it walks the list holding it: at the next `malloc` of its size, or \
         when the thread's cache is handed back at exit); **-** missed; **?** no verdict (see \
         the list at the end); **·** not built. Caught: S, C or H.\n\n",
    );
    let n = results.tests.len();
    out.push_str(
        "| allocator | caught | S stopped | C crashed | H held | L late | - missed | ? no verdict |\n",
    );
    out.push_str("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (a, allocator) in allocators.iter().enumerate() {
        let count = |v: Verdict| results.verdicts.iter().filter(|row| row[a] == v).count();
        let caught = results.verdicts.iter().filter(|row| row[a].caught()).count();
        let _ = writeln!(
            out,
            "| {} | {caught} of {n} | {} | {} | {} | {} | {} | {} |",
            allocator.name,
            count(Verdict::Stopped),
            count(Verdict::Crashed),
            count(Verdict::Held),
            count(Verdict::Late),
            count(Verdict::Missed),
            count(Verdict::Failed),
        );
    }
    out.push_str(
        "\nBy test: the marks of the 8 B, 4 KiB and 256 KiB builds, in that order (one mark for \
         the C++ tests, built once).\n\n| test |",
    );
    for a in allocators {
        let _ = write!(out, " {} |", a.name);
    }
    out.push_str("\n| --- |");
    out.push_str(&" :---: |".repeat(allocators.len()));
    out.push('\n');
    let mut i = 0;
    while i < n {
        let name = family(&results.tests[i]).0;
        let end = (i..n).find(|&j| family(&results.tests[j]).0 != name).unwrap_or(n);
        let _ = write!(out, "| {name} |");
        for a in 0..allocators.len() {
            let mark = |t: usize| results.verdicts[t][a].mark();
            let marks: Vec<&str> = if family(&results.tests[i]).1.is_none() {
                (i..end).map(mark).collect()
            } else {
                // One mark per size, in order, whichever sizes were built.
                (0..SIZES.len())
                    .map(|size| {
                        (i..end)
                            .find(|&t| family(&results.tests[t]).1 == Some(size))
                            .map_or("·", mark)
                    })
                    .collect()
            };
            let _ = write!(out, " {} |", marks.join(" "));
        }
        out.push('\n');
        i = end;
    }
    if !results.failures.is_empty() {
        out.push_str("\nNo verdict:\n\n");
        for f in &results.failures {
            let _ = writeln!(out, "- {f}");
        }
    }
    out
}

/// The folder of the built tests, from the options.
fn tests_dir(args: &SecurityArgs) -> Result<PathBuf, String> {
    let candidates = match (&args.build, &args.suite) {
        (Some(build), _) => vec![build.clone()],
        (None, Some(suite)) => vec![suite.join("out/bench"), suite.join("../mb-build")],
        (None, None) => vec![],
    };
    candidates
        .iter()
        .map(|d| d.join("security"))
        .find(|d| !tests(d).is_empty())
        .map(|d| std::path::absolute(&d).unwrap_or(d))
        .ok_or_else(|| {
            let tried: Vec<String> =
                candidates.iter().map(|d| d.join("security").display().to_string()).collect();
            format!(
                "no built security tests in {} (build mimalloc-bench first, or name its build \
                 folder with --build)",
                tried.join(" or ")
            )
        })
}

pub fn run(args: &SecurityArgs, out: &Path) {
    let dir = tests_dir(args).unwrap_or_else(|e| {
        eprintln!("{e}");
        eprintln!(
            "mimalloc-bench is not part of this repository; README.md (Performance) says how to \
             fetch and build it"
        );
        std::process::exit(2);
    });
    let workspace = crate::workspace();
    let allocators = preload::allocators_for(args.tcalloc.as_deref(), &args.peers, &workspace);
    let cwd = if workspace.join("Cargo.toml").is_file() {
        workspace.join("target/security")
    } else {
        std::env::temp_dir().join("tcalloc-security")
    };
    let started = Instant::now();
    let results = measure(&dir, &allocators, &cwd, Duration::from_secs(args.timeout.max(1)));
    let date = crate::date_utc();
    let context = format!(
        "`tcalloc-bench security`: the {} test programs of `bench/security` in \
         github.com/daanx/mimalloc-bench, built by its CMake, each run once per allocator with \
         the library preloaded (glibc: none), {date}, {:.0} s. Libraries: {}.",
        results.tests.len(),
        started.elapsed().as_secs_f64(),
        preload::library_names(&allocators)
    );
    let text = markdown(&results, &allocators, &context);
    println!("{text}");
    std::fs::write(out.join("security.md"), &text).expect("write security.md");
    eprintln!("wrote {}/security.md", out.display());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn endings_are_classified() {
        let caught = "";
        let missed = "NOT_CAUGHT\n";
        let abort = Err(Ending::Signal(libc::SIGABRT));
        let segv = Err(Ending::Signal(libc::SIGSEGV));
        assert_eq!(classify(&abort, caught), Verdict::Stopped);
        assert_eq!(classify(&segv, caught), Verdict::Crashed);
        assert_eq!(classify(&Ok(()), caught), Verdict::Held);
        assert_eq!(classify(&Err(Ending::Exit(1)), caught), Verdict::Held);
        assert_eq!(classify(&Err(Ending::Exit(127)), caught), Verdict::Failed);
        assert_eq!(classify(&abort, missed), Verdict::Late);
        assert_eq!(classify(&segv, missed), Verdict::Late);
        assert_eq!(classify(&Ok(()), missed), Verdict::Missed);
        assert_eq!(classify(&Err(Ending::Exit(3)), missed), Verdict::Missed);
        assert_eq!(classify(&Err(Ending::TimedOut(Duration::from_secs(1))), ""), Verdict::Missed);
        assert_eq!(classify(&Err(Ending::NotStarted("gone".into())), ""), Verdict::Failed);
        assert!(Verdict::Held.caught() && !Verdict::Late.caught() && !Verdict::Missed.caught());
    }

    #[test]
    fn names_split_into_family_and_size() {
        assert_eq!(family("double_free_small"), ("double_free", Some(0)));
        assert_eq!(family("one_byte_overflow_large"), ("one_byte_overflow", Some(2)));
        assert_eq!(
            family("invalid_free_unaligned_multiple_medium"),
            ("invalid_free_unaligned_multiple", Some(1))
        );
        assert_eq!(family("delete_type_size_mismatch"), ("delete_type_size_mismatch", None));
    }

    /// A fake build: shell scripts that end as the suite's tests do, under two allocators
    /// (both glibc, one of them told apart by an environment-free script body).
    #[test]
    fn runs_fake_tests_and_reports_them() {
        let root = std::env::temp_dir().join(format!("tcalloc-security-{}", std::process::id()));
        let dir = root.join("security");
        std::fs::create_dir_all(&dir).unwrap();
        let script = |name: &str, body: &str| {
            let path = dir.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        script("double_free_small", "kill -ABRT $$");
        script("double_free_large", "echo NOT_CAUGHT");
        script("double_free_medium", "kill -SEGV $$");
        script("write_after_free_small", "echo NOT_CAUGHT; kill -ABRT $$");
        script("impossibly_large_malloc_small", "exit 0");
        script("read_zero_size_large", "exit 127");
        script("hangs", "exec sleep 30");
        std::fs::write(dir.join("Makefile"), "not a test").unwrap();
        let allocators = [Preload { name: "glibc", library: None }];
        let results = measure(&dir, &allocators, &root.join("cwd"), Duration::from_millis(500));
        assert_eq!(
            results.tests,
            [
                "double_free_small",
                "double_free_medium",
                "double_free_large",
                "hangs",
                "impossibly_large_malloc_small",
                "read_zero_size_large",
                "write_after_free_small"
            ]
        );
        let text = markdown(&results, &allocators, "a fake build");
        assert!(text.contains("| glibc | 3 of 7 | 1 | 1 | 1 | 1 | 2 | 1 |"), "{text}");
        assert!(text.contains("| double_free | S C - |"), "{text}");
        assert!(text.contains("| hangs | - |"), "{text}");
        assert!(text.contains("| read_zero_size | · · ? |"), "{text}");
        assert!(text.contains("| write_after_free | L · · |"), "{text}");
        assert!(text.contains("- read_zero_size_large under glibc: exit status 127"), "{text}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
