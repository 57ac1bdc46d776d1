//! `tcalloc-bench mimalloc-bench`: the programs of mimalloc-bench, the allocator benchmark
//! suite of github.com/daanx/mimalloc-bench, with each allocator preloaded.
//!
//! The suite is not part of this repository: the user points `--suite` at a checkout whose
//! programs are built (the suite's own `build-bench-env.sh bench` leaves them in
//! `SUITE/out/bench`; a plain CMake build of `SUITE/bench` anywhere works with `--build`). Each
//! program the build has runs once per allocator (glibc with no preload, `libtcalloc.so`
//! built here with the `override` feature, and Debian's jemalloc, mimalloc and tcmalloc where
//! installed; see `preload::allocators`) through `LD_PRELOAD`, interleaved as the suite's
//! runs are (for each run, for each program, for each allocator, the allocators' order rotated
//! by one every run), with the arguments the suite's `bench.sh` gives it on a machine with
//! this many CPUs. Wall time and peak RSS come from `wait4`, as in the other comparisons.
//!
//! The programs that run for a fixed time (larson, xmalloc-test, rptest, glibc-thread) are
//! scored as `bench.sh` scores them: by a "relative time" derived from the throughput they
//! print, so that lower is better for every row. The medians go to `mimalloc-bench.md` (time
//! and peak RSS per program and allocator, ratios to glibc, geometric means) and every run to
//! `mimalloc-bench.csv`.
//!
//! A run that exits with an error, is killed by a signal or the timeout, or prints no score (or
//! the wrong answer, for cfrac) is recorded as failed and the others go on; the geometric means
//! take only the programs that every allocator completed in every run.

use crate::preload::{self, Preload};
use clap::Args;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The command's options.
#[derive(Args, Debug)]
pub struct Options {
    /// The mimalloc-bench checkout: its `bench/` folder holds the programs' input files.
    #[arg(long)]
    suite: PathBuf,
    /// The folder with the built programs [default: SUITE/out/bench, where the suite's own
    /// build script puts them, else SUITE/../mb-build].
    #[arg(long)]
    build: Option<PathBuf>,
    /// Runs of each program and allocator; medians are reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// One run of each, with smaller arguments and without rptestN (which sleeps through
    /// most of its 16 s whatever its arguments): a quick look, not a measurement. The tables go
    /// to a temporary directory unless --out is given.
    #[arg(long)]
    quick: bool,
    /// Only these programs: names as the table lists them (`larsonN`), or the start of a name
    /// (`larson` for both larson programs, `cache` for the four cache programs). The tables go
    /// to a temporary directory unless --out is given.
    #[arg(long, num_args = 1.., value_delimiter = ',')]
    programs: Vec<String>,
    /// Threads of the N-thread programs, `procs` in the suite's bench.sh [default: the number
    /// of CPUs, as bench.sh takes it from nproc].
    #[arg(long)]
    procs: Option<usize>,
    /// A run still going after this many seconds is killed and counted as failed.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// A program scored by wall time whose run takes less than this many seconds is run again
    /// at once until its runs together take this long (at most 20 runs), and the mean is the
    /// run's time: a single run of 50 ms is a few ticks of the scheduler. 0: one run each.
    #[arg(long, default_value_t = 0.5, value_name = "SECONDS")]
    min_seconds: f64,
    /// Preload this `libtcalloc.so` as it is instead of building one (for a machine without
    /// cargo: build it with `--features override` and copy it there).
    #[arg(long, value_name = "FILE")]
    tcalloc: Option<PathBuf>,
    /// The folder with the peers' libraries (`libjemalloc.so.2`, `libmimalloc.so.2`,
    /// `libtcmalloc_minimal.so.4`; a peer whose library is missing is left out).
    #[arg(long, value_name = "DIR", default_value = preload::DEBIAN_LIBS)]
    peers: PathBuf,
}

/// How a program's time is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Score {
    /// Wall seconds.
    Wall,
    /// larson prints "... relative time: X s.": X.
    Larson,
    /// xmalloc-test prints "rtime: X, ...": X.
    Xmalloc,
    /// rptest prints "....N memory ops/CPU second ...": 2 000 000 / N.
    Rptest,
    /// glibc-thread prints "N iterations": 1 000 000 000 / N.
    GlibcThread,
}

/// One program of the suite as `bench.sh` runs it. In `args`, `stdin` and `expect`,
/// `{procs}` stands for the thread count, `{procs16}` for the same at most 16, and `{bench}`
/// for the suite's `bench/` folder.
struct Program {
    /// The name `bench.sh` reports it under.
    name: &'static str,
    /// The executable in the build folder.
    binary: &'static str,
    args: &'static str,
    /// Smaller arguments for `--quick` (`None`: the same).
    quick_args: Option<&'static str>,
    /// A file to read as standard input (else `/dev/null`).
    stdin: Option<&'static str>,
    score: Score,
    /// What standard output must contain, with the full and with the quick arguments.
    expect: Option<(&'static str, &'static str)>,
    /// Left out of `--quick` (unless named with `--programs`).
    slow_even_when_quick: bool,
    /// One of the N-thread twins, which `bench.sh` leaves out on a single CPU.
    threaded_twin: bool,
    what: &'static str,
}

/// A program with the usual fields; the list below sets the rest.
const fn program(name: &'static str, binary: &'static str, args: &'static str) -> Program {
    Program {
        name,
        binary,
        args,
        quick_args: None,
        stdin: None,
        score: Score::Wall,
        expect: None,
        slow_even_when_quick: false,
        threaded_twin: false,
        what: "",
    }
}

/// The programs, in report order, with the arguments of the suite's `bench.sh`.
const PROGRAMS: &[Program] = &[
    Program {
        quick_args: Some("100000000012397000006798700000842834839"),
        expect: Some((
            "= 856070387728264 * 20495027946319472471219512627",
            "= 100000000012397 * 1000000000000000000067987",
        )),
        what: "factors a large number by continued fractions: many small bignums",
        ..program("cfrac", "cfrac", "17545186520507317056371138836327483792789528")
    },
    Program {
        what: "minimises a large boolean function (espresso's largest example)",
        ..program("espresso", "espresso", "{bench}/espresso/largest.espresso")
    },
    Program {
        stdin: Some("{bench}/barnes/input"),
        what: "Barnes-Hut n-body simulation",
        ..program("barnes", "barnes", "")
    },
    Program {
        what: "random sizes allocated and freed, 1 thread",
        ..program("alloc-test1", "alloc-test", "1")
    },
    Program {
        threaded_twin: true,
        what: "random sizes allocated and freed, N threads",
        ..program("alloc-testN", "alloc-test", "{procs16}")
    },
    Program {
        quick_args: Some("1 8 1000 5000 100 4141 {procs}"),
        score: Score::Larson,
        what: "server simulation: threads replace random blocks of 8-1000 B, many freed by \
               another thread than the one that allocated them",
        ..program("larsonN", "larson", "5 8 1000 5000 100 4141 {procs}")
    },
    Program {
        quick_args: Some("1 8 1000 5000 100 4141 {procs}"),
        score: Score::Larson,
        what: "larsonN with C++ sized deallocation",
        ..program("larsonN-sized", "larson-sized", "5 8 1000 5000 100 4141 {procs}")
    },
    Program {
        quick_args: Some("-w {procs} -t 1 -s 64"),
        score: Score::Xmalloc,
        what: "some threads allocate 64 B blocks, others free them",
        ..program("xmalloc-testN", "xmalloc-test", "-w {procs} -t 5 -s 64")
    },
    Program {
        quick_args: Some("1 1000 1 200000 {procs}"),
        what: "active false sharing: each thread writes its own small blocks, 1 thread",
        ..program("cache-thrash1", "cache-thrash", "1 1000 1 2000000 {procs}")
    },
    Program {
        quick_args: Some("{procs} 1000 1 200000 {procs}"),
        threaded_twin: true,
        what: "active false sharing, N threads",
        ..program("cache-thrashN", "cache-thrash", "{procs} 1000 1 2000000 {procs}")
    },
    Program {
        quick_args: Some("1 1000 1 200000 {procs}"),
        what: "passive false sharing: threads write blocks that another thread allocated and \
               they freed, 1 thread",
        ..program("cache-scratch1", "cache-scratch", "1 1000 1 2000000 {procs}")
    },
    Program {
        quick_args: Some("{procs} 1000 1 200000 {procs}"),
        threaded_twin: true,
        what: "passive false sharing, N threads",
        ..program("cache-scratchN", "cache-scratch", "{procs} 1000 1 2000000 {procs}")
    },
    Program {
        what: "threads allocate, free and hand blocks of random sizes to each other",
        ..program("mstressN", "mstress", "{procs} 50 25")
    },
    Program {
        quick_args: Some("{procs} 0 1 2 50 1000 100 8 16000"),
        score: Score::Rptest,
        slow_even_when_quick: true,
        what: "rpmalloc's benchmark: sizes 8-16000 B, every second batch freed by another thread",
        ..program("rptestN", "rptest", "{procs} 0 1 2 500 1000 100 8 16000")
    },
    Program {
        what: "glibc's single-thread malloc benchmark (small blocks, several live-set sizes)",
        ..program("glibc-simple", "glibc-simple", "")
    },
    Program {
        score: Score::GlibcThread,
        what: "glibc's multi-thread malloc benchmark, N threads; 2 s",
        ..program("glibc-thread", "glibc-thread", "{procs}")
    },
    Program {
        what: "2 000 blocks of 5-25 MiB, up to 20 live",
        ..program("malloc-large", "malloc-large", "")
    },
];

/// What a measurement needs to know, resolved from the options.
struct Plan {
    /// The folder of the built programs.
    build: PathBuf,
    /// The suite's `bench/` folder (input files).
    inputs: PathBuf,
    procs: usize,
    quick: bool,
    runs: usize,
    timeout: Duration,
    /// Wall-time runs shorter than this are repeated (see `Options::min_seconds`).
    min_seconds: f64,
    programs: Vec<&'static Program>,
    /// Programs left out, and why.
    skipped: Vec<String>,
}

impl Plan {
    /// Resolves the folders and picks the programs: those the filter names (all without
    /// one) that the build folder has.
    fn new(options: &Options) -> Result<Plan, String> {
        // The programs run in another folder: relative paths must not follow them there.
        let suite = &std::path::absolute(&options.suite).map_err(|e| e.to_string())?;
        let inputs = suite.join("bench");
        if !inputs.is_dir() {
            return Err(format!(
                "{} is not a mimalloc-bench checkout (it has no bench/ folder)",
                suite.display()
            ));
        }
        let candidates = match &options.build {
            Some(build) => vec![std::path::absolute(build).map_err(|e| e.to_string())?],
            None => vec![suite.join("out/bench"), suite.join("../mb-build")],
        };
        let has_programs = |dir: &Path| PROGRAMS.iter().any(|p| dir.join(p.binary).is_file());
        let Some(build) = candidates.iter().find(|d| has_programs(d)).cloned() else {
            let tried: Vec<String> = candidates.iter().map(|d| d.display().to_string()).collect();
            return Err(format!(
                "no built mimalloc-bench programs in {} (build them first, or name their folder \
                 with --build)",
                tried.join(" or ")
            ));
        };
        let procs = options
            .procs
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        let mut plan = Plan::choose(
            build,
            inputs,
            procs.max(1),
            options.quick,
            if options.quick { 1 } else { options.runs.max(1) },
            Duration::from_secs(options.timeout.max(1)),
            &options.programs,
        );
        plan.min_seconds = if options.quick { 0.0 } else { options.min_seconds.max(0.0) };
        Ok(plan)
    }

    /// The plan for these folders and settings; `filter` as `--programs`.
    fn choose(
        build: PathBuf,
        inputs: PathBuf,
        procs: usize,
        quick: bool,
        runs: usize,
        timeout: Duration,
        filter: &[String],
    ) -> Plan {
        let mut programs = Vec::new();
        let mut skipped = Vec::new();
        for p in PROGRAMS {
            let named = filter.iter().any(|f| p.name.starts_with(f.as_str()));
            if !filter.is_empty() && !named {
                continue;
            }
            if !build.join(p.binary).is_file() {
                skipped.push(format!("{}: {} is not built", p.name, p.binary));
            } else if p.threaded_twin && procs == 1 {
                skipped.push(format!("{}: one CPU (bench.sh leaves it out too)", p.name));
            } else if quick && p.slow_even_when_quick && !named {
                skipped.push(format!("{}: left out of --quick (name it to run it)", p.name));
            } else {
                programs.push(p);
            }
        }
        for f in filter {
            if !PROGRAMS.iter().any(|p| p.name.starts_with(f.as_str())) {
                let names: Vec<&str> = PROGRAMS.iter().map(|p| p.name).collect();
                skipped.push(format!("{f}: no such program (known: {})", names.join(", ")));
            }
        }
        Plan { build, inputs, procs, quick, runs, timeout, min_seconds: 0.0, programs, skipped }
    }

    /// `text` with the placeholders filled in.
    fn fill(&self, text: &str) -> String {
        text.replace("{procs16}", &self.procs.min(16).to_string())
            .replace("{procs}", &self.procs.to_string())
            .replace("{bench}", &self.inputs.display().to_string())
    }

    /// The arguments `p` runs with (split before the placeholders are filled in, so that a
    /// suite path with spaces stays one argument).
    fn args(&self, p: &Program) -> Vec<String> {
        let args = if self.quick { p.quick_args.unwrap_or(p.args) } else { p.args };
        args.split_whitespace().map(|a| self.fill(a)).collect()
    }

    /// The command line `p` runs with, as the report shows it.
    fn command_line(&self, p: &Program) -> String {
        let mut line =
            std::iter::once(p.binary.to_string()).chain(self.args(p)).collect::<Vec<_>>().join(" ");
        if let Some(stdin) = p.stdin {
            let _ = write!(line, " < {}", self.fill(stdin));
        }
        line
    }
}

/// One run of one program under one allocator.
#[derive(Clone, Debug)]
struct Run {
    /// The score (wall seconds, or the relative time of a fixed-duration program); `Err`
    /// says why the run failed.
    time: Result<f64, String>,
    wall: f64,
    peak_rss_kib: u64,
    /// Runs of the program this sample took (more than 1 for a short program, see
    /// `Options::min_seconds`): `time` and `wall` are their means, `peak_rss_kib` their peak.
    repeats: usize,
}

/// How a run that did not exit with status 0 ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It could not be started, or its standard input not opened.
    NotStarted(String),
    TimedOut(Duration),
    Signal(i32),
    Exit(i32),
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::NotStarted(why) => write!(f, "{why}"),
            Ending::TimedOut(t) => write!(f, "killed after the {} s timeout", t.as_secs_f64()),
            Ending::Signal(n) => write!(f, "killed by signal {n}"),
            Ending::Exit(n) => write!(f, "exit status {n}"),
        }
    }
}

/// Runs `program args < stdin` with `preload`, in `cwd`, its output in files there; killed
/// after `timeout`. How it ended, the wall time in seconds and peak RSS in KiB (from `wait4`),
/// standard output and error.
// The child is reaped by `wait4` (which also gives its peak RSS), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
pub fn run_process(
    program: &Path,
    args: &[String],
    stdin: Option<&Path>,
    preload: &Preload,
    cwd: &Path,
    timeout: Duration,
) -> (Result<(), Ending>, f64, u64, String, String) {
    let (out_path, err_path) = (cwd.join("stdout.txt"), cwd.join("stderr.txt"));
    let file = |p: &Path| File::create(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(cwd).stdout(file(&out_path)).stderr(file(&err_path));
    cmd.stdin(match stdin {
        Some(path) => match File::open(path) {
            Ok(f) => Stdio::from(f),
            Err(e) => {
                let why = Ending::NotStarted(format!("{}: {e}", path.display()));
                return (Err(why), 0.0, 0, "".into(), "".into());
            }
        },
        None => Stdio::null(),
    });
    cmd.env_remove("LD_PRELOAD");
    if let Some(library) = &preload.library {
        cmd.env("LD_PRELOAD", library);
    }
    // Fork rather than spawn in this process's memory (posix_spawn, which std uses when it
    // can): Linux carries the high-water mark of the memory a program was exec'd from into its
    // ru_maxrss, which after a posix_spawn is this process's peak; after a fork it is only this
    // process's resident set at the fork, a few MiB (`rss_floor` measures it).
    // SAFETY: the hook does nothing, so it is safe between fork and exec.
    unsafe { cmd.pre_exec(|| Ok(())) };
    let start = Instant::now();
    let child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let why = Ending::NotStarted(format!("cannot start: {e}"));
            return (Err(why), 0.0, 0, "".into(), "".into());
        }
    };
    let pid = child.id() as libc::pid_t;

    // The watchdog kills the child at the deadline unless it has exited. The child is
    // reaped only after `exited` is set under the lock, so the pid the watchdog kills is
    // still this child (running or a zombie), never a reused one.
    let exited = Arc::new((Mutex::new(false), Condvar::new()));
    let watchdog = {
        let exited = Arc::clone(&exited);
        std::thread::spawn(move || {
            let (lock, cv) = &*exited;
            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (guard, _) = cv
                .wait_timeout_while(guard, timeout, |done| !*done)
                .unwrap_or_else(|e| e.into_inner());
            if !*guard {
                // SAFETY: `pid` is our unreaped child (see above); kill has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return true;
            }
            false
        })
    };
    // SAFETY: an all-zero siginfo is a valid value for waitid to overwrite.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our child; `info` is valid for writes. WNOWAIT leaves it unreaped.
        let r = unsafe {
            libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT)
        };
        if r == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    {
        let (lock, cv) = &*exited;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_one();
    }
    let timed_out = watchdog.join().unwrap_or(false);
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, exited and not yet reaped; the out-pointers are valid.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4 failed for {}", program.display());
    let outcome = if timed_out {
        Err(Ending::TimedOut(timeout))
    } else if libc::WIFSIGNALED(status) {
        Err(Ending::Signal(libc::WTERMSIG(status)))
    } else if libc::WEXITSTATUS(status) != 0 {
        Err(Ending::Exit(libc::WEXITSTATUS(status)))
    } else {
        Ok(())
    };
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    (outcome, wall, usage.ru_maxrss as u64, read(&out_path), read(&err_path))
}

/// The leading decimal number of `text` (digits and dots), if any.
fn leading_number(text: &str) -> Option<f64> {
    let end = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    text[..end].parse().ok()
}

/// The score a fixed-duration program's output gives, as `bench.sh` computes it (the last
/// matching line counts).
fn throughput_score(score: Score, stdout: &str) -> Option<f64> {
    let lines = stdout.lines().rev();
    let positive = |x: f64| (x > 0.0).then_some(x);
    match score {
        Score::Wall => None,
        Score::Larson => {
            lines.filter_map(|l| l.rsplit_once(" time: ")).find_map(|(_, r)| leading_number(r))
        }
        Score::Xmalloc => lines.filter_map(|l| l.strip_prefix("rtime: ")).find_map(leading_number),
        Score::Rptest => lines
            .filter_map(|l| l.split_once(" memory ops"))
            .find_map(|(before, _)| {
                let digits =
                    before.len() - before.chars().rev().take_while(char::is_ascii_digit).count();
                leading_number(&before[digits..])
            })
            .and_then(positive)
            .map(|ops| 2e6 / ops),
        Score::GlibcThread => lines
            .filter_map(|l| l.split_once(" iterations"))
            .find_map(|(n, _)| leading_number(n.trim()))
            .and_then(positive)
            .map(|iterations| 1e9 / iterations),
    }
}

/// Most runs of one sample of a short program.
const MAX_REPEATS: usize = 20;

/// One sample of `p` under `preload`: one run, or for a program scored by wall time that
/// took less than `plan.min_seconds`, as many more right after it as make up that time (at
/// most [`MAX_REPEATS`] in all), scored by their mean. A failed run fails the sample.
fn run_program(plan: &Plan, p: &Program, preload: &Preload, cwd: &Path) -> Run {
    let mut sample = run_once(plan, p, preload, cwd);
    if p.score != Score::Wall || sample.time.is_err() || sample.wall >= plan.min_seconds {
        return sample;
    }
    let mut total = sample.wall;
    while total < plan.min_seconds && sample.repeats < MAX_REPEATS {
        let next = run_once(plan, p, preload, cwd);
        sample.peak_rss_kib = sample.peak_rss_kib.max(next.peak_rss_kib);
        sample.repeats += 1;
        if let Err(why) = next.time {
            sample.time = Err(format!("run {} of the sample: {why}", sample.repeats));
            return sample;
        }
        total += next.wall;
    }
    sample.wall = total / sample.repeats as f64;
    sample.time = Ok(sample.wall);
    sample
}

/// Runs `p` once under `preload` and scores it.
fn run_once(plan: &Plan, p: &Program, preload: &Preload, cwd: &Path) -> Run {
    let stdin = p.stdin.map(|s| PathBuf::from(plan.fill(s)));
    let (outcome, wall, peak_rss_kib, stdout, stderr) = run_process(
        &plan.build.join(p.binary),
        &plan.args(p),
        stdin.as_deref(),
        preload,
        cwd,
        plan.timeout,
    );
    let time = outcome
        .map_err(|ending| ending.to_string())
        .and_then(|()| {
            // The loader goes on without the library: the run measured glibc, not `preload`.
            // Its message names the library ("ERROR: ld.so: object '…' from LD_PRELOAD cannot
            // be preloaded (reason): ignored."), so other output cannot be mistaken for it.
            let Some(library) = &preload.library else { return Ok(()) };
            let message =
                format!("object '{}' from LD_PRELOAD cannot be preloaded", library.display());
            match stderr.lines().find(|l| l.contains(&message)) {
                Some(line) => Err(format!("the library was not loaded ({})", line.trim())),
                None => Ok(()),
            }
        })
        .and_then(|()| match p.expect {
            Some((full, quick)) => {
                let want = if plan.quick && p.quick_args.is_some() { quick } else { full };
                if stdout.contains(want) {
                    Ok(())
                } else {
                    Err(format!("wrong output (no {want:?})"))
                }
            }
            None => Ok(()),
        })
        .and_then(|()| match p.score {
            Score::Wall => Ok(wall),
            s => throughput_score(s, &stdout).ok_or_else(|| "no throughput in its output".into()),
        });
    if let Err(why) = &time {
        let tail: Vec<&str> = stderr.lines().rev().take(3).collect();
        eprintln!("\n{} under {} failed: {why}", p.name, preload.name);
        for line in tail.iter().rev() {
            eprintln!("    {line}");
        }
    }
    Run { time, wall, peak_rss_kib, repeats: 1 }
}

/// Every run, by program and allocator (indices into the plan's programs and the allocators).
struct Results {
    runs: BTreeMap<(usize, usize), Vec<Run>>,
}

/// Medians of the runs that succeeded: (time, peak RSS in KiB), and how many failed.
#[derive(Clone, Copy, Debug)]
struct Median {
    time: Option<f64>,
    peak_rss_kib: Option<f64>,
    failed: usize,
    runs: usize,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn geomean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp())
}

impl Results {
    fn median(&self, program: usize, allocator: usize) -> Median {
        let runs = self.runs.get(&(program, allocator)).map_or(&[][..], Vec::as_slice);
        let ok: Vec<&Run> = runs.iter().filter(|r| r.time.is_ok()).collect();
        Median {
            time: median(ok.iter().filter_map(|r| r.time.clone().ok()).collect()),
            peak_rss_kib: median(ok.iter().map(|r| r.peak_rss_kib as f64).collect()),
            failed: runs.len() - ok.len(),
            runs: runs.len(),
        }
    }

    /// Every allocator completed every run of `program`.
    fn complete(&self, program: usize, allocators: usize) -> bool {
        (0..allocators).all(|a| {
            let m = self.median(program, a);
            m.runs > 0 && m.failed == 0
        })
    }
}

/// Runs every program of the plan under every allocator, interleaved.
fn measure(plan: &Plan, allocators: &[Preload], cwd: &Path) -> Results {
    std::fs::create_dir_all(cwd).expect("create the working directory");
    let mut results = Results { runs: BTreeMap::new() };
    for run in 0..plan.runs {
        for (i, p) in plan.programs.iter().enumerate() {
            eprint!("run {}/{} {:<15}", run + 1, plan.runs, p.name);
            for k in 0..allocators.len() {
                // Rotate the order each run so that no allocator always runs first.
                let a = (k + run) % allocators.len();
                let r = run_program(plan, p, &allocators[a], cwd);
                match &r.time {
                    Ok(t) => eprint!(" {} {t:.2}", allocators[a].name),
                    Err(_) => eprint!(" {} failed", allocators[a].name),
                }
                results.runs.entry((i, a)).or_default().push(r);
            }
            eprintln!();
        }
    }
    results
}

/// What the report says about the conditions of the measurement.
struct Context {
    suite: String,
    libraries: String,
    seconds: f64,
    load: (String, String),
    /// The processor and the number of CPUs.
    machine: String,
    /// The peak RSS (MiB) of `/bin/true` measured as the programs are.
    rss_floor: Option<f64>,
}

/// The peak RSS in MiB that `wait4` reports for `/bin/true` started as the programs are: the
/// part of every figure that is this process's resident set at the fork, not the program's.
fn rss_floor(cwd: &Path) -> Option<f64> {
    let glibc = Preload { name: "glibc", library: None };
    let (outcome, _, kib, _, _) =
        run_process(Path::new("/bin/true"), &[], None, &glibc, cwd, Duration::from_secs(10));
    outcome.ok().map(|()| kib as f64 / 1024.0)
}

/// `mimalloc-bench.md`: the time table, the peak-RSS table (each with ratios to the first
/// allocator, glibc, and geometric means), the programs with their arguments, the failures.
fn markdown(plan: &Plan, allocators: &[Preload], results: &Results, context: &Context) -> String {
    let mut out = String::new();
    let base = allocators.first().map_or("glibc", |a| a.name);
    let _ = writeln!(
        out,
        "mimalloc-bench ({}) with each allocator preloaded ({base}: none), {} of each program \
         and allocator, interleaved{}; {} threads for the N-thread programs; {:.0} s in all \
         (load average {} at the start, {} at the end) on {}. Libraries: {}.\n",
        context.suite,
        if plan.runs == 1 {
            "one run".to_string()
        } else {
            format!("median of {} runs", plan.runs)
        },
        if plan.quick { ", quick mode (smaller arguments): not a measurement" } else { "" },
        plan.procs,
        context.seconds,
        context.load.0,
        context.load.1,
        context.machine,
        context.libraries
    );
    let complete: Vec<usize> =
        (0..plan.programs.len()).filter(|&i| results.complete(i, allocators.len())).collect();
    let time = |m: Median| m.time;
    let rss = |m: Median| m.peak_rss_kib.map(|k| k / 1024.0);
    out.push_str(
        "Time in seconds (ratio to glibc); lower is better. Programs marked * run for a fixed \
         time and are scored as the suite's bench.sh scores them, by a relative time derived \
         from the throughput they print (larson: its printed relative time; xmalloc-test: its \
         rtime; rptest: 2 000 000 / memory ops per CPU second; glibc-thread: 10^9 / \
         iterations).\n\n",
    );
    table(&mut out, plan, allocators, results, &complete, time, 3);
    out.push_str("\nPeak resident memory in MiB (ratio to glibc)");
    if let Some(floor) = context.rss_floor {
        let _ = write!(
            out,
            ", as `wait4` reports it: a figure includes this benchmark's own resident set when \
             it forks the program, {floor:.1} MiB (what `/bin/true` measures the same way), which \
             weighs only on programs of a few MiB"
        );
    }
    out.push_str(":\n\n");
    table(&mut out, plan, allocators, results, &complete, rss, 1);
    let _ = writeln!(
        out,
        "\nGeometric means over the {} of {} programs that every allocator completed in every \
         run.\n\nThe programs, as run here (the suite's `bench.sh` arguments{}):\n",
        complete.len(),
        plan.programs.len(),
        if plan.quick { ", made smaller for --quick" } else { "" }
    );
    for p in &plan.programs {
        let _ = writeln!(out, "- `{}`: {} (`{}`)", p.name, p.what, plan.command_line(p));
    }
    for s in &plan.skipped {
        let _ = writeln!(out, "- not run: {s}");
    }
    let repeated: Vec<String> = plan
        .programs
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let counts = results.runs.iter().filter(|(&(j, _), _)| j == i).flat_map(|(_, r)| r);
            let (least, most) = counts
                .map(|r| r.repeats)
                .fold((usize::MAX, 0), |(lo, hi), n| (lo.min(n), hi.max(n)));
            let runs = if least == most { format!("{most}") } else { format!("{least} to {most}") };
            (most > 1).then(|| format!("{} ({runs} runs)", p.name))
        })
        .collect();
    if !repeated.is_empty() {
        let _ = writeln!(
            out,
            "\nRuns shorter than {} s were repeated at once until they took that long together (at \
             most {MAX_REPEATS} runs), and each sample is their mean time and their peak \
             memory: {}.",
            plan.min_seconds,
            repeated.join(", ")
        );
    }
    let mut failures = String::new();
    for (&(i, a), runs) in &results.runs {
        for (n, r) in runs.iter().enumerate() {
            if let Err(why) = &r.time {
                let name = plan.programs[i].name;
                let _ = writeln!(
                    failures,
                    "- {name} under {}, run {}: {why}",
                    allocators[a].name,
                    n + 1
                );
            }
        }
    }
    if !failures.is_empty() {
        out.push_str("\nFailed runs (left out of the medians):\n\n");
        out.push_str(&failures);
    }
    out
}

/// One table: a row per program with `value` of each allocator and its ratio to the first,
/// then the geometric mean of the ratios over the `complete` programs.
fn table(
    out: &mut String,
    plan: &Plan,
    allocators: &[Preload],
    results: &Results,
    complete: &[usize],
    value: impl Fn(Median) -> Option<f64>,
    decimals: usize,
) {
    out.push_str("| program |");
    for a in allocators {
        let _ = write!(out, " {} |", a.name);
    }
    out.push_str("\n| --- |");
    for _ in allocators {
        out.push_str(" ---: |");
    }
    out.push('\n');
    let mut ratios = vec![Vec::new(); allocators.len()];
    for (i, p) in plan.programs.iter().enumerate() {
        let fixed = if p.score == Score::Wall { "" } else { " *" };
        let _ = write!(out, "| {}{fixed} |", p.name);
        let base = value(results.median(i, 0));
        for (a, ratios) in ratios.iter_mut().enumerate() {
            let m = results.median(i, a);
            let mut cell = match (value(m), base) {
                (Some(v), _) if a == 0 => format!("{v:.decimals$}"),
                (Some(v), Some(b)) if b > 0.0 => {
                    if complete.contains(&i) {
                        ratios.push(v / b);
                    }
                    format!("{v:.decimals$} ({:.2})", v / b)
                }
                (Some(v), _) => format!("{v:.decimals$}"),
                (None, _) => "failed".into(),
            };
            if m.failed > 0 && m.failed < m.runs {
                let _ = write!(cell, " ({} of {} runs failed)", m.failed, m.runs);
            }
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out.push_str("| geometric mean of ratios |");
    for (a, r) in ratios.iter().enumerate() {
        let cell = match geomean(r) {
            _ if a == 0 => "1.00".to_string(),
            Some(g) => format!("{g:.2}"),
            None => "-".into(),
        };
        let _ = write!(out, " {cell} |");
    }
    out.push('\n');
}

/// `mimalloc-bench.csv`: one row per run.
fn csv(plan: &Plan, allocators: &[Preload], results: &Results) -> String {
    let mut out =
        String::from("program,allocator,run,status,time_s,wall_s,peak_rss_kib,runs_in_sample\n");
    for (&(i, a), runs) in &results.runs {
        for (n, r) in runs.iter().enumerate() {
            let (status, time) = match &r.time {
                Ok(t) => ("ok".to_string(), format!("{t:.4}")),
                Err(why) => (format!("\"failed: {}\"", why.replace('"', "'")), String::new()),
            };
            let _ = writeln!(
                out,
                "{},{},{},{status},{time},{:.4},{},{}",
                plan.programs[i].name,
                allocators[a].name,
                n + 1,
                r.wall,
                r.peak_rss_kib,
                r.repeats
            );
        }
    }
    out
}

/// The one-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// Where the tables go: `out` if given; else a temporary directory for a `--quick` run or a
/// run of some programs only (a partial table must not replace the full one); else
/// `default_out`.
fn out_dir(out: Option<&Path>, quick: bool, partial: bool, default_out: &Path) -> PathBuf {
    match out {
        Some(out) => out.to_path_buf(),
        None if quick => std::env::temp_dir().join("tcalloc-mimalloc-bench-quick"),
        None if partial => std::env::temp_dir().join("tcalloc-mimalloc-bench-partial"),
        None => default_out.to_path_buf(),
    }
}

/// The command: builds `libtcalloc.so`, runs the plan, writes `mimalloc-bench.md` and
/// `.csv` into `out` (with `--quick` and no `--out`, into a temporary directory instead of
/// `default_out`).
pub fn run(options: &Options, out: Option<&Path>, default_out: &Path) {
    let plan = Plan::new(options).unwrap_or_else(|e| {
        eprintln!("{e}");
        eprintln!(
            "mimalloc-bench is not part of this repository; README.md (Performance) says how to \
             fetch and build it"
        );
        std::process::exit(2);
    });
    let out = out_dir(out, plan.quick, !options.programs.is_empty(), default_out);
    std::fs::create_dir_all(&out).expect("create the output directory");
    for s in &plan.skipped {
        eprintln!("not run: {s}");
    }
    if plan.programs.is_empty() {
        eprintln!("no programs to run");
        std::process::exit(2);
    }
    let workspace = crate::workspace();
    let allocators =
        preload::allocators_for(options.tcalloc.as_deref(), &options.peers, &workspace);
    let libraries = preload::library_names(&allocators);
    let suite = std::fs::canonicalize(&options.suite).unwrap_or_else(|_| options.suite.clone());
    // Only the suite's own repository: in a plain folder, `git -C` finds any repository
    // above it (this one, where the suite was copied into it).
    let commit = Command::new("git")
        .arg("-C")
        .arg(&suite)
        .args(["rev-parse", "--show-toplevel", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let (top, commit) = text.trim().split_once('\n')?;
            (std::fs::canonicalize(top).ok()? == suite).then(|| commit.trim().to_string())
        });
    let suite = match commit {
        Some(c) => format!("checkout at commit {c}"),
        None => "github.com/daanx/mimalloc-bench".to_string(),
    };
    eprintln!(
        "{} programs x {} allocators x {} runs, {} threads for the N-thread programs",
        plan.programs.len(),
        allocators.len(),
        plan.runs,
        plan.procs
    );
    let started = Instant::now();
    let load_start = load_average();
    // The programs run in the build's target folder, or in a temporary one where this binary
    // was copied to a machine without the repository.
    let cwd = if workspace.join("Cargo.toml").is_file() {
        workspace.join("target/mimalloc-bench")
    } else {
        std::env::temp_dir().join("tcalloc-mimalloc-bench")
    };
    let results = measure(&plan, &allocators, &cwd);
    let context = Context {
        rss_floor: rss_floor(&cwd),
        suite,
        libraries,
        seconds: started.elapsed().as_secs_f64(),
        load: (load_start, load_average()),
        machine: format!(
            "{}, {} CPUs",
            crate::cpu_model(),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
    };
    let text = markdown(&plan, &allocators, &results, &context);
    println!("{text}");
    std::fs::write(out.join("mimalloc-bench.md"), &text).expect("write mimalloc-bench.md");
    std::fs::write(out.join("mimalloc-bench.csv"), csv(&plan, &allocators, &results))
        .expect("write mimalloc-bench.csv");
    eprintln!("wrote {}/mimalloc-bench.{{md,csv}} in {:.0} s", out.display(), context.seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_and_quick_runs_keep_the_results_folder() {
        let results = Path::new("bench/results");
        let given = Path::new("/somewhere");
        assert_eq!(out_dir(None, false, false, results), results);
        assert_eq!(out_dir(Some(given), true, true, results), given);
        assert!(out_dir(None, false, true, results).starts_with(std::env::temp_dir()));
        assert!(out_dir(None, true, false, results).starts_with(std::env::temp_dir()));
    }
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn scores_of_fixed_duration_programs() {
        let larson = "Throughput = 23437768 operations per second, relative time: 42.666s.\n\
                      Done sleeping...\n";
        assert_eq!(throughput_score(Score::Larson, larson), Some(42.666));
        let xmalloc = "rtime: 4.621, free/sec: 21.640 M\n";
        assert_eq!(throughput_score(Score::Xmalloc, xmalloc), Some(4.621));
        let rptest = "crt          2 threads random linear size [8,16000] 500 loops 1000 allocs \
                      100 ops: ........4000000 memory ops/CPU second (52MiB peak)\n";
        assert_eq!(throughput_score(Score::Rptest, rptest), Some(0.5));
        assert_eq!(throughput_score(Score::GlibcThread, "250000000 iterations\n"), Some(4.0));
        assert_eq!(throughput_score(Score::GlibcThread, "0 iterations\n"), None);
        assert_eq!(throughput_score(Score::Larson, "crashed\n"), None);
        assert_eq!(throughput_score(Score::Wall, larson), None);
    }

    fn plan(procs: usize, quick: bool, filter: &[&str]) -> Plan {
        // The build folder of this test binary has none of the suite's programs; point the
        // plan at a folder where every binary "exists" by naming one that has them all.
        let dir = std::env::temp_dir().join(format!("tcalloc-mb-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for p in PROGRAMS {
            std::fs::write(dir.join(p.binary), "").unwrap();
        }
        let filter: Vec<String> = filter.iter().map(|s| s.to_string()).collect();
        let plan = Plan::choose(
            dir.clone(),
            "/suite/bench".into(),
            procs,
            quick,
            3,
            Duration::from_secs(1),
            &filter,
        );
        std::fs::remove_dir_all(&dir).unwrap();
        plan
    }

    fn names(plan: &Plan) -> Vec<&'static str> {
        plan.programs.iter().map(|p| p.name).collect()
    }

    #[test]
    fn plans_pick_programs_and_fill_in_arguments() {
        let all = plan(2, false, &[]);
        assert_eq!(all.programs.len(), PROGRAMS.len());
        let larson = all.programs.iter().find(|p| p.name == "larsonN").unwrap();
        assert_eq!(all.command_line(larson), "larson 5 8 1000 5000 100 4141 2");
        let barnes = all.programs.iter().find(|p| p.name == "barnes").unwrap();
        assert_eq!(all.command_line(barnes), "barnes < /suite/bench/barnes/input");
        let mut spaced = plan(2, false, &["espresso"]);
        spaced.inputs = "/my suite/bench".into();
        assert_eq!(spaced.args(spaced.programs[0]), ["/my suite/bench/espresso/largest.espresso"]);

        let many = plan(20, false, &["alloc-test"]);
        assert_eq!(names(&many), ["alloc-test1", "alloc-testN"]);
        assert_eq!(many.command_line(many.programs[1]), "alloc-test 16");

        assert_eq!(names(&plan(2, false, &["larson"])), ["larsonN", "larsonN-sized"]);
        let one_cpu = plan(1, false, &["cache"]);
        assert_eq!(names(&one_cpu), ["cache-thrash1", "cache-scratch1"]);
        assert!(one_cpu.skipped.iter().any(|s| s.starts_with("cache-thrashN: one CPU")));

        let quick = plan(2, true, &[]);
        assert!(!names(&quick).contains(&"rptestN"));
        assert!(quick.skipped.iter().any(|s| s.starts_with("rptestN: left out of --quick")));
        let cfrac = quick.programs[0];
        assert_eq!(quick.command_line(cfrac), "cfrac 100000000012397000006798700000842834839");
        assert_eq!(names(&plan(2, true, &["rptest"])), ["rptestN"]);

        let unknown = plan(2, false, &["nonesuch"]);
        assert!(unknown.programs.is_empty());
        assert!(unknown.skipped[0].starts_with("nonesuch: no such program"));
    }

    /// A stand-in for one of the suite's programs.
    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The conditions a report of the fake suite names.
    fn fake_context(rss_floor: Option<f64>) -> Context {
        Context {
            suite: "a fake suite".into(),
            libraries: "none".into(),
            seconds: 1.0,
            load: ("0.1".into(), "0.2".into()),
            machine: "a test CPU, 2 CPUs".into(),
            rss_floor,
        }
    }

    /// A program scored by wall time that runs shorter than `min_seconds` is run again until
    /// its runs take that long (its time is their mean); a fixed-duration one is run once;
    /// a failed repeat fails the sample; the report and the CSV say how many runs a sample
    /// took.
    #[test]
    fn short_programs_are_repeated_and_scored_by_their_mean() {
        let root = std::env::temp_dir().join(format!("tcalloc-mb-short-{}", std::process::id()));
        let (build, inputs, cwd) = (root.join("build"), root.join("bench"), root.join("cwd"));
        std::fs::create_dir_all(&build).unwrap();
        std::fs::create_dir_all(&inputs).unwrap();
        let counted = |name: &str| {
            std::fs::read_to_string(root.join(name)).map_or(0, |text| text.lines().count())
        };
        let r = root.display();
        script(&build, "mstress", &format!("echo run >> {r}/mstress; sleep 0.02"));
        script(
            &build,
            "cache-scratch",
            &format!("echo run >> {r}/scratch; [ $(wc -l < {r}/scratch) -lt 3 ]"),
        );
        script(
            &build,
            "larson",
            &format!("echo run >> {r}/larson; echo 'Throughput = 1, relative time: 2.5s.'"),
        );
        let filter = ["mstressN".to_string(), "larsonN".to_string(), "cache-scratchN".to_string()];
        let mut plan = Plan::choose(build, inputs, 2, false, 1, Duration::from_secs(10), &filter);
        // Long enough that even a loaded machine runs the 20 ms stand-in more than once.
        plan.min_seconds = 1.0;
        let allocators = [Preload { name: "glibc", library: None }];
        let results = measure(&plan, &allocators, &cwd);
        let index = |name: &str| plan.programs.iter().position(|p| p.name == name).unwrap();
        let sample = |name: &str| &results.runs[&(index(name), 0)][0];

        let mstress = sample("mstressN");
        assert!((2..=MAX_REPEATS).contains(&mstress.repeats), "{mstress:?}");
        assert_eq!(counted("mstress"), mstress.repeats);
        let time = *mstress.time.as_ref().unwrap();
        assert!((0.02..1.0).contains(&time), "the mean of its runs: {mstress:?}");
        assert_eq!(mstress.wall, time);

        let larson = sample("larsonN");
        assert_eq!((larson.repeats, counted("larson")), (1, 1), "fixed duration: once");
        assert_eq!(larson.time, Ok(2.5));

        let scratch = sample("cache-scratchN");
        assert_eq!(scratch.time, Err("run 3 of the sample: exit status 1".into()));

        let context = fake_context(None);
        let text = markdown(&plan, &allocators, &results, &context);
        let note = format!("mstressN ({} runs)", mstress.repeats);
        assert!(text.contains("Runs shorter than 1 s were repeated") && text.contains(&note));
        assert!(!text.contains("larsonN ("), "{text}");
        let csv = csv(&plan, &allocators, &results);
        assert!(csv
            .lines()
            .any(|l| l.starts_with("mstressN,") && l.ends_with(&format!(",{}", mstress.repeats))));
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// The runner against a fake suite: shell scripts that check their arguments and print
    /// what the real programs print, one that fails, one that hangs, one not built.
    #[test]
    fn runs_a_fake_suite_and_reports_it() {
        let root = std::env::temp_dir().join(format!("tcalloc-mb-fake-{}", std::process::id()));
        let (build, inputs, cwd) = (root.join("build"), root.join("bench"), root.join("cwd"));
        std::fs::create_dir_all(inputs.join("barnes")).unwrap();
        std::fs::create_dir_all(inputs.join("espresso")).unwrap();
        std::fs::create_dir_all(&build).unwrap();
        std::fs::write(inputs.join("barnes/input"), "bodies\n").unwrap();
        std::fs::write(inputs.join("espresso/largest.espresso"), "").unwrap();
        script(
            &build,
            "cfrac",
            "[ \"$1\" = 17545186520507317056371138836327483792789528 ] || exit 9\n\
             echo \"$1 = 856070387728264 * 20495027946319472471219512627\"",
        );
        script(&build, "espresso", "[ -f \"$1\" ] || exit 9");
        script(&build, "barnes", "read line; [ \"$line\" = bodies ] || exit 9");
        script(
            &build,
            "larson",
            "[ \"$*\" = '5 8 1000 5000 100 4141 2' ] || exit 9\n\
             echo 'Throughput = 1000 operations per second, relative time: 2.5s.'",
        );
        script(&build, "larson-sized", "echo 'no throughput here'");
        script(&build, "xmalloc-test", "echo 'rtime: 1.5, free/sec: 1 M'");
        script(&build, "rptest", "echo 'crt 2 threads: ........4000000 memory ops/CPU second'");
        script(&build, "glibc-thread", "[ \"$1\" = 2 ] || exit 9\necho '500000000 iterations'");
        script(&build, "mstress", "echo 'out of memory' >&2; exit 1");
        script(&build, "malloc-large", "exec sleep 30");

        let plan = Plan::choose(build, inputs, 2, false, 2, Duration::from_millis(300), &[]);
        assert!(plan.skipped.iter().any(|s| s == "alloc-test1: alloc-test is not built"));
        let allocators =
            [Preload { name: "glibc", library: None }, Preload { name: "other", library: None }];
        let results = measure(&plan, &allocators, &cwd);
        let index = |name: &str| plan.programs.iter().position(|p| p.name == name).unwrap();
        let time = |name: &str, a: usize| results.median(index(name), a).time;
        assert_eq!(time("larsonN", 1), Some(2.5));
        assert_eq!(time("xmalloc-testN", 0), Some(1.5));
        assert_eq!(time("rptestN", 0), Some(0.5));
        assert_eq!(time("glibc-thread", 1), Some(2.0));
        assert!(time("cfrac", 0).unwrap() > 0.0);
        assert!(time("barnes", 0).is_some() && time("espresso", 1).is_some());
        for failed in ["larsonN-sized", "mstressN", "malloc-large"] {
            let m = results.median(index(failed), 0);
            assert_eq!((m.time, m.failed, m.runs), (None, 2, 2), "{failed}");
        }
        let malloc_large = &results.runs[&(index("malloc-large"), 1)][0];
        assert_eq!(malloc_large.time, Err("killed after the 0.3 s timeout".into()));
        assert!(malloc_large.wall < 5.0);

        let context = fake_context(rss_floor(&cwd));
        let text = markdown(&plan, &allocators, &results, &context);
        assert!(text.contains("| larsonN * | 2.500 | 2.500 (1.00) |"), "{text}");
        assert!(text.contains("| mstressN | failed | failed |"), "{text}");
        assert!(text.contains("- mstressN under glibc, run 1: exit status 1"), "{text}");
        assert!(text.contains("- larsonN-sized under other, run 2: no throughput in its output"));
        assert!(text.contains("- not run: alloc-testN: alloc-test is not built"), "{text}");
        assert!(text.contains("over the 7 of 10 programs"), "{text}");
        assert!(text.contains("| geometric mean of ratios | 1.00 | "), "{text}");
        assert!(text.contains("`larsonN`: server simulation"), "{text}");
        assert!(text.contains("MiB (what `/bin/true` measures the same way)"), "{text}");

        let csv = csv(&plan, &allocators, &results);
        assert_eq!(csv.lines().count(), 1 + 10 * 2 * 2);
        assert!(csv.contains("\nlarsonN,other,2,ok,2.5000,"), "{csv}");
        assert!(csv.contains("\nmstressN,glibc,1,\"failed: exit status 1\",,"), "{csv}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
