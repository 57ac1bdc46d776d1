//! `tcalloc-bench`: the whole-program comparison of tcalloc, glibc malloc, mimalloc and
//! jemalloc.
//!
//! Every workload of `tcalloc_bench::programs` runs in its own process, once per allocator
//! (the worker binaries next to this one, each with a different `#[global_allocator]`),
//! interleaved run by run so that noise hits every allocator alike, and repeated; the median
//! wall time and peak resident memory (`wait4`'s `ru_maxrss`) are reported with ratios to
//! glibc and to mimalloc, as a table on stdout, `summary.md`, `results.csv` and `chart.png` in
//! the output directory.
//!
//! The worker binaries are built by this program itself (`cargo build` of the `worker_*`
//! binaries, which does nothing when they are current), because `cargo run` builds only the
//! binary it runs: the commands below work as written on a fresh clone.
//!
//! `tcalloc-bench instructions` counts instructions per 64-byte alloc+free pair under
//! valgrind's callgrind instead, through `GlobalAlloc` and through C `malloc`/`free` with each
//! allocator preloaded; `tcalloc-bench memory` records resident memory over time and
//! the fragmentation case; `preload` times real programs with each allocator preloaded, and
//! `mimalloc-bench` the programs of that suite (a checkout the user provides);
//! `criterion` runs the criterion benches and writes their tables; `build-time` measures what
//! tcalloc adds to a user's clean build; `scaling` runs the multi-threaded workloads at 1, 2,
//! 4, … threads (see `scaling.rs`); `checks` measures what the heap-misuse checks cost
//! against a build without them (see `checks.rs`); `security` runs mimalloc-bench's security
//! tests, programs that misuse the heap, under each allocator (see `security.rs`). Each writes
//! the results file the README quotes.
//!
//! ```text
//! cargo run --release -p tcalloc-bench                  # quick: 3 runs each, about two minutes
//! cargo run --release -p tcalloc-bench -- --smoke       # every program once, small sizes
//! cargo run --release -p tcalloc-bench -- --full        # 7 runs each
//! cargo run --release -p tcalloc-bench -- --only pairs  # programs whose name contains "pairs"
//! cargo run --release -p tcalloc-bench -- instructions
//! cargo run --release -p tcalloc-bench -- memory
//! cargo run --release -p tcalloc-bench -- preload
//! cargo run --release -p tcalloc-bench -- mimalloc-bench --suite ~/mimalloc-bench [--quick]
//! cargo run --release -p tcalloc-bench -- criterion
//! cargo run --release -p tcalloc-bench -- build-time
//! cargo run --release -p tcalloc-bench -- scaling --threads 1,2,4,8,16 [--quick]
//! cargo run --release -p tcalloc-bench -- checks [--quick] [--reps 5]
//! cargo run --release -p tcalloc-bench -- security --suite ~/mimalloc-bench
//! ```

mod build_time;
mod chart;
mod checks;
mod criterion_tables;
mod instructions;
mod mimalloc_bench;
mod preload;
mod report;
mod scaling;
mod security;

use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use tcalloc_bench::programs::PROGRAMS;
use tcalloc_bench::ALLOCATORS;

#[derive(Parser)]
#[command(about = "tcalloc side by side with glibc malloc, mimalloc and jemalloc")]
struct Args {
    /// Seven runs of each program and allocator instead of three.
    #[arg(long)]
    full: bool,
    /// A check that everything runs: every program once per allocator, at 1/20 of its work
    /// (the comparison only; its tables go to a temporary directory unless --out is given).
    #[arg(long, conflicts_with = "full")]
    smoke: bool,
    /// Runs of each program and allocator (overrides --full).
    #[arg(long)]
    reps: Option<usize>,
    /// Only the programs whose name contains one of these strings (comma-separated, or the
    /// option repeated).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Where to write the results files [default: bench/results, or a temporary directory
    /// with --smoke].
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Instructions per 64-byte alloc+free pair, counted by valgrind's callgrind: through
    /// Rust's GlobalAlloc and through C malloc/free under LD_PRELOAD (instructions.md).
    Instructions,
    /// Resident memory over time through phases of growth and shrinkage (memory.png), and the
    /// fragmentation case (memory.md).
    Memory,
    /// Real programs (python3, sqlite3, gcc, git, perl, sort) with each allocator preloaded
    /// (preload.md).
    Preload,
    /// The programs of mimalloc-bench (a built checkout of github.com/daanx/mimalloc-bench)
    /// with each allocator preloaded (mimalloc-bench.md, mimalloc-bench.csv).
    MimallocBench(mimalloc_bench::Options),
    /// Runs the criterion benches (`benches/alloc.rs`, `benches/pool.rs`) and writes their
    /// medians as criterion.md and pool.md.
    Criterion {
        /// Only read the estimates criterion already left in the target directory.
        #[arg(long)]
        collect_only: bool,
    },
    /// Clean release builds of a hello-world with and without tcalloc as its global
    /// allocator: what the crate adds to a user's build (build-time.md).
    BuildTime {
        /// Builds of each program; the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Throughput of the multi-threaded workloads at each thread count under each allocator,
    /// and tcalloc's lock contention (scaling.md, scaling.png).
    Scaling(scaling::ScalingArgs),
    /// What the heap-misuse checks cost: tcalloc with them, tcalloc built without them
    /// (`--cfg tcalloc_unchecked`, built here) and glibc, in instructions per pair, the Rust
    /// workloads and the preload programs (checks.md, checks.csv).
    Checks(checks::ChecksArgs),
    /// mimalloc-bench's security tests (its built `security/` programs, each misusing the heap
    /// once) with each allocator preloaded: what each misuse came to (security.md).
    Security(security::SecurityArgs),
}

/// Work divisor of `--smoke` runs.
const SMOKE_DIVISOR: usize = 20;

/// One measured run.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Wall time.
    pub seconds: f64,
    /// User plus system CPU time of the process and the children it waited for, which other
    /// load on the machine changes less than the wall time.
    pub cpu_seconds: f64,
    pub peak_rss_kib: u64,
}

impl Sample {
    /// A run that took `seconds` of wall time, with `usage` as `wait4` reported it.
    fn new(seconds: f64, usage: &libc::rusage) -> Sample {
        let time = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        Sample {
            seconds,
            cpu_seconds: time(usage.ru_utime) + time(usage.ru_stime),
            peak_rss_kib: usage.ru_maxrss as u64,
        }
    }
}

fn main() {
    let args = Args::parse();
    if !args.only.is_empty() && !PROGRAMS.iter().any(|p| selected(&args, p.name)) {
        let names: Vec<&str> = PROGRAMS.iter().map(|p| p.name).collect();
        eprintln!(
            "tcalloc-bench: --only {} matches no program; the programs: {}",
            args.only.join(","),
            names.join(" ")
        );
        std::process::exit(2);
    }
    let dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .expect("the benchmark's own directory");
    let out = match &args.out {
        Some(out) => out.clone(),
        None if args.smoke => std::env::temp_dir().join("tcalloc-bench-smoke"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("results"),
    };
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("tcalloc-bench: cannot write results to {}: {e}", out.display());
        std::process::exit(2);
    }
    match &args.command {
        Some(Cmd::Instructions) => {
            build_workers(&dir);
            instructions::run(&dir, &out)
        }
        Some(Cmd::Memory) => {
            build_workers(&dir);
            memory(&dir, &out)
        }
        Some(Cmd::Preload) => preload_comparison(&args, &out),
        Some(Cmd::MimallocBench(options)) => {
            mimalloc_bench::run(options, args.out.as_deref(), &out)
        }
        Some(Cmd::Criterion { collect_only }) => {
            criterion_tables::run(&workspace(), &dir, *collect_only, &out)
        }
        Some(Cmd::BuildTime { runs }) => build_time::run(&workspace(), *runs, &out),
        Some(Cmd::Scaling(scaling_args)) => scaling::run(&dir, scaling_args, &out),
        Some(Cmd::Checks(checks_args)) => checks::run(&dir, checks_args, &args, &out),
        Some(Cmd::Security(security_args)) => security::run(security_args, &out),
        None => {
            build_workers(&dir);
            compare(&dir, &args, &out)
        }
    }
}

/// The workspace this benchmark was built from.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The one-minute load average (other work on the machine slows a measurement down).
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

/// The date and time now, in UTC (`date -u`), as the results files give it.
fn date_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown date".into())
}

/// The CPU's model name, from `/proc/cpuinfo`.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The cargo that runs this program (`cargo run` says which), or the one on `PATH`.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Builds the worker binaries into `dir`, the directory of this binary, with the profile this
/// binary was built with. `cargo run` builds only the binary it runs, so without this step a
/// fresh clone would have no workers; when they are current, cargo does nothing.
fn build_workers(dir: &Path) {
    let manifest = workspace().join("Cargo.toml");
    let profile = match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(name) => name,
        None => "release",
    };
    if manifest.exists() {
        eprintln!("building the worker binaries (one per allocator)");
        let mut cmd = cargo();
        cmd.args(["build", "-p", "tcalloc-bench", "--profile", profile]);
        for a in ALLOCATORS {
            cmd.arg("--bin").arg(format!("worker_{a}"));
        }
        if cfg!(feature = "per-cpu") {
            cmd.args(["--features", "per-cpu"]);
        }
        cmd.arg("--manifest-path").arg(&manifest);
        if let Some(target) = dir.parent() {
            cmd.arg("--target-dir").arg(target);
        }
        let built = cmd.status().map(|s| s.success()).unwrap_or(false);
        if !built {
            eprintln!("building the worker binaries failed (see cargo's messages above)");
            std::process::exit(2);
        }
    }
    for a in ALLOCATORS {
        let worker = worker_path(dir, a);
        if !worker.exists() {
            eprintln!(
                "missing {}: the workers must sit beside {} (build them with \
                 `cargo build --release -p tcalloc-bench --bins` from the same checkout, with the \
                 same --target-dir)",
                worker.display(),
                dir.join("tcalloc-bench").display()
            );
            std::process::exit(2);
        }
    }
}

/// Whether `--only` selects the program `name` (every program without it).
fn selected(args: &Args, name: &str) -> bool {
    args.only.is_empty() || args.only.iter().any(|o| name.contains(o.as_str()))
}

fn worker_path(dir: &Path, allocator: &str) -> PathBuf {
    dir.join(format!("worker_{allocator}"))
}

fn compare(dir: &Path, args: &Args, out: &Path) {
    let reps = args.reps.unwrap_or(if args.full { 7 } else { 3 }).max(1);
    let reps = if args.smoke { 1 } else { reps };
    let divisor = if args.smoke { SMOKE_DIVISOR } else { 1 };
    let programs: Vec<_> = PROGRAMS.iter().filter(|p| selected(args, p.name)).collect();
    let started = Instant::now();
    let mut results = report::Results::new(&programs);
    for (i, program) in programs.iter().enumerate() {
        eprint!("[{}/{}] {:<18}", i + 1, programs.len(), program.name);
        for rep in 0..reps {
            // Rotate the order each repetition so that no allocator always runs first.
            for k in 0..ALLOCATORS.len() {
                let a = ALLOCATORS[(k + rep) % ALLOCATORS.len()];
                let sample = run_worker(&worker_path(dir, a), program.name, divisor);
                results.add(program.name, a, sample);
            }
            eprint!(".");
        }
        eprintln!();
    }
    let table = results.table();
    println!("{table}");
    let seconds = started.elapsed().as_secs_f64();
    let mut summary = results.markdown(reps, seconds);
    if args.smoke {
        summary.insert_str(
            0,
            "Smoke run (`--smoke`): 1/20 of each program's work; not a measurement.\n\n",
        );
    }
    std::fs::write(out.join("summary.md"), &summary).expect("write summary.md");
    std::fs::write(out.join("results.csv"), results.csv()).expect("write results.csv");
    match chart::draw(&results, &out.join("chart.png")) {
        Ok(()) => eprintln!("wrote {}/{{summary.md,results.csv,chart.png}}", out.display()),
        Err(e) => eprintln!("chart not drawn: {e}"),
    }
    eprintln!(
        "{} programs x {} allocators x {reps} runs in {seconds:.1} s",
        programs.len(),
        ALLOCATORS.len()
    );
}

/// Runs a worker to completion; its wall and CPU time and peak RSS.
// The child is reaped by `wait4` (which also gives its peak RSS), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
fn run_worker(worker: &Path, program: &str, divisor: usize) -> Sample {
    let start = Instant::now();
    let child = Command::new(worker)
        .args([program, &divisor.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", worker.display()));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child; the out-pointers are valid.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(waited, pid, "wait4 failed for {}", worker.display());
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    assert!(ok, "{} {program} failed (status {status:#x})", worker.display());
    Sample::new(seconds, &usage)
}

/// Runs a worker with arguments and returns its standard output.
fn worker_output(worker: &Path, args: &[&str]) -> String {
    let out = Command::new(worker).args(args).output().expect("run a worker");
    assert!(out.status.success(), "{} {args:?} failed", worker.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The memory comparison: timelines of `memory-phases` and the fragmentation case.
fn memory(dir: &Path, out: &Path) {
    let mut timelines = Vec::new();
    for a in ALLOCATORS {
        eprintln!("memory-phases under {a}");
        let text = worker_output(&worker_path(dir, a), &["memory-phases"]);
        let samples: Vec<(f64, f64, usize)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split(',');
                let t = f.next()?.parse::<f64>().ok()?;
                let rss = f.next()?.parse::<f64>().ok()?;
                let phase = f.next()?.parse::<usize>().ok()?;
                Some((t / 1000.0, rss / 1024.0, phase))
            })
            .collect();
        timelines.push((a, samples));
    }
    let mut fragmentation = Vec::new();
    for size in [48usize, 128] {
        for a in ALLOCATORS {
            eprintln!("fragmentation {size} under {a}");
            let text = worker_output(&worker_path(dir, a), &["fragmentation", &size.to_string()]);
            let steps: Vec<(String, f64)> = text
                .lines()
                .filter_map(|l| {
                    let mut f = l.strip_prefix("result,")?.rsplitn(2, ',');
                    let rss = f.next()?.parse::<f64>().ok()? / 1024.0;
                    Some((f.next()?.to_string(), rss))
                })
                .collect();
            fragmentation.push((size, a, steps));
        }
    }
    let text = report::memory_markdown(&timelines, &fragmentation);
    println!("{text}");
    std::fs::write(out.join("memory.md"), text).expect("write memory.md");
    match chart::draw_timelines(&timelines, &out.join("memory.png")) {
        Ok(()) => eprintln!("wrote {}/{{memory.md,memory.png}}", out.display()),
        Err(e) => eprintln!("chart not drawn: {e}"),
    }
}

/// The preload comparison of real programs.
fn preload_comparison(args: &Args, out_dir: &Path) {
    let workspace = workspace();
    let tcalloc = preload::build_tcalloc(&workspace);
    let allocators = preload::allocators(tcalloc, Path::new(preload::DEBIAN_LIBS));
    let dir = workspace.join("target/preload-jobs");
    let jobs = preload::jobs(&dir, &workspace);
    let reps = args.reps.unwrap_or(if args.full { 5 } else { 3 }).max(1);
    let mut samples: Vec<Vec<Vec<(f64, u64)>>> =
        vec![vec![Vec::new(); allocators.len()]; jobs.len()];
    for (j, job) in jobs.iter().enumerate() {
        eprint!("{:<8}", job.name);
        for rep in 0..reps {
            for k in 0..allocators.len() {
                let a = (k + rep) % allocators.len();
                let sample = preload::run(job, &allocators[a], &dir);
                samples[j][a].push((sample.seconds, sample.peak_rss_kib));
            }
            eprint!(".");
        }
        eprintln!();
    }
    let median = |v: &[(f64, u64)]| -> (f64, u64) {
        let mut t: Vec<f64> = v.iter().map(|s| s.0).collect();
        let mut m: Vec<u64> = v.iter().map(|s| s.1).collect();
        t.sort_by(f64::total_cmp);
        m.sort_unstable();
        (t[t.len() / 2], m[m.len() / 2])
    };
    let mut out = format!(
        "Real programs with each allocator preloaded (glibc: none), median of {reps} runs, \
         interleaved. Time in seconds (ratio to glibc), peak RSS in MiB (ratio to glibc).\n\n| program |"
    );
    for a in &allocators {
        out.push_str(&format!(" {} time | {} RSS |", a.name, a.name));
    }
    out.push_str("\n| --- |");
    for _ in &allocators {
        out.push_str(" ---: | ---: |");
    }
    out.push('\n');
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); allocators.len()];
    for (j, job) in jobs.iter().enumerate() {
        let (base_t, base_m) = median(&samples[j][0]);
        out.push_str(&format!("| {} |", job.name));
        for (a, _) in allocators.iter().enumerate() {
            let (t, m) = median(&samples[j][a]);
            ratios[a].push(t / base_t);
            out.push_str(&format!(
                " {t:.2} ({:.2}) | {:.0} ({:.2}) |",
                t / base_t,
                m as f64 / 1024.0,
                m as f64 / base_m as f64
            ));
        }
        out.push('\n');
    }
    out.push_str("| geometric mean of time ratios |");
    for r in &ratios {
        let g = (r.iter().map(|x| x.ln()).sum::<f64>() / r.len() as f64).exp();
        out.push_str(&format!(" {g:.2} | |"));
    }
    out.push_str("\n\nThe programs:\n\n");
    for job in &jobs {
        out.push_str(&format!("- `{}`: {}\n", job.name, job.what));
    }
    println!("{out}");
    std::fs::write(out_dir.join("preload.md"), out).expect("write preload.md");
}
