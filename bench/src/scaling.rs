//! `tcalloc-bench scaling`: throughput of the multi-threaded workloads at several thread
//! counts, for each allocator, and tcalloc's lock contention at each point.
//!
//! Every point (workload, thread count, allocator) runs in its own worker process, as in the
//! whole-program comparison (`worker_<allocator> scaling <workload> <threads>`, see
//! `tcalloc_bench::scaling_workloads`); the allocators take turns run by run, and the median
//! of the runs is reported. Each thread does a fixed amount of work, so throughput (alloc+free
//! pairs per second, all threads together) grows with the thread count while there are cores
//! for the threads, and stays flat beyond. The tcalloc worker also prints tcalloc's lock
//! counters (`tcalloc::stats().locks`), which go into a second table.
//!
//! Writes `scaling.md` (the two tables) and `scaling.png` (throughput against threads, one
//! panel per workload, one line per allocator).
//!
//! Without `--no-build` (or `TCALLOC_BENCH_NO_BUILD=1`) the worker binaries are built first,
//! as for the other subcommands; with it, no cargo is run and the four `worker_*` binaries
//! must sit beside this one (`target/release/` after `cargo build --release -p
//! tcalloc-bench --bins`).

use crate::chart::{load_font, COLORS};
use clap::Args;
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use tcalloc_bench::scaling_workloads::{ScalingWorkload, SCALING_WORKLOADS};
use tcalloc_bench::ALLOCATORS;

#[derive(Args)]
pub struct ScalingArgs {
    /// Thread counts to run each workload at.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4, 8, 16])]
    threads: Vec<usize>,
    /// One run per point instead of three.
    #[arg(long)]
    quick: bool,
    /// Runs per point, of which the median is reported (overrides --quick).
    #[arg(long)]
    reps: Option<usize>,
    /// Only the workloads whose name contains one of these strings.
    #[arg(long)]
    only: Vec<String>,
    /// Divides each thread's work: a check that everything runs, not a measurement.
    #[arg(long, default_value_t = 1)]
    divisor: usize,
    /// Runs the worker binaries beside this one as they are, without cargo (the same as
    /// setting TCALLOC_BENCH_NO_BUILD=1).
    #[arg(long)]
    no_build: bool,
}

/// Lock counters of one family: acquisitions, contended, slept.
type LockCounts = [u64; 3];

/// One run of one point.
struct Run {
    pairs: usize,
    seconds: f64,
    /// CPU time of the whole worker process over its wall time: how many cores it kept busy
    /// on average (start-up and exit included).
    cores: f64,
    /// tcalloc's lock counters by family (tcalloc runs only), in the order the worker printed.
    locks: Vec<(String, LockCounts)>,
}

/// Every run, by (workload, threads, allocator).
type Runs = BTreeMap<(&'static str, usize, &'static str), Vec<Run>>;

pub fn run(dir: &Path, args: &ScalingArgs, out: &Path) {
    let no_build = args.no_build || std::env::var_os("TCALLOC_BENCH_NO_BUILD").is_some();
    if no_build {
        check_workers(dir);
    } else {
        crate::build_workers(dir);
    }
    let reps = args.reps.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let mut threads = args.threads.clone();
    threads.retain(|&t| t > 0);
    threads.sort_unstable();
    threads.dedup();
    let workloads: Vec<&ScalingWorkload> = SCALING_WORKLOADS
        .iter()
        .filter(|w| args.only.is_empty() || args.only.iter().any(|o| w.name.contains(o.as_str())))
        .collect();
    let load = crate::load_average();
    let started = Instant::now();
    let mut runs = Runs::new();
    for w in &workloads {
        for &t in &threads {
            eprint!("{:<8} {t:>3} thread{} ", w.name, if t == 1 { " " } else { "s" });
            for rep in 0..reps {
                // Rotate the order each repetition so that no allocator always runs first.
                for k in 0..ALLOCATORS.len() {
                    let a = ALLOCATORS[(k + rep) % ALLOCATORS.len()];
                    let r = run_worker(dir, a, w.name, t, args.divisor);
                    runs.entry((w.name, t, a)).or_default().push(r);
                }
                eprint!(".");
            }
            let line: Vec<String> = ALLOCATORS
                .iter()
                .filter_map(|a| Some(format!("{a} {:.1}", throughput(&runs, w.name, t, a)?)))
                .collect();
            eprintln!(" M pairs/s: {}", line.join(", "));
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let mut text = header(&command, &workloads, reps, seconds, &load, args.divisor);
    text.push_str(&throughput_table(&runs, &workloads, &threads));
    text.push_str(&contention_table(&runs, &workloads, &threads));
    println!("{text}");
    std::fs::write(out.join("scaling.md"), &text).expect("write scaling.md");
    match draw(&runs, &workloads, &threads, &out.join("scaling.png")) {
        Ok(()) => eprintln!("wrote {}/{{scaling.md,scaling.png}}", out.display()),
        Err(e) => eprintln!("wrote {}/scaling.md; chart not drawn: {e}", out.display()),
    }
    eprintln!(
        "{} workloads x {} thread counts x {} allocators x {reps} runs in {seconds:.1} s",
        workloads.len(),
        threads.len(),
        ALLOCATORS.len()
    );
}

/// Without cargo, the workers must already be there.
fn check_workers(dir: &Path) {
    for a in ALLOCATORS {
        let worker = crate::worker_path(dir, a);
        if !worker.exists() {
            eprintln!(
                "missing {}: with --no-build the four worker binaries must sit beside this one \
                 (build them with `cargo build --release -p tcalloc-bench --bins`)",
                worker.display()
            );
            std::process::exit(2);
        }
    }
}

fn run_worker(dir: &Path, allocator: &str, workload: &str, threads: usize, divisor: usize) -> Run {
    let worker = crate::worker_path(dir, allocator);
    let mut cmd = Command::new(&worker);
    cmd.args(["scaling", workload, &threads.to_string(), &divisor.to_string()]);
    if allocator == "tcalloc" {
        cmd.env("TCALLOC_BENCH_LOCK_STATS", "1");
    }
    // One child at a time: the growth of the children's CPU time is this worker's.
    let cpu_before = children_cpu_seconds();
    let started = Instant::now();
    let output = cmd.output().unwrap_or_else(|e| panic!("cannot start {}: {e}", worker.display()));
    let cores = (children_cpu_seconds() - cpu_before) / started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} scaling {workload} {threads} failed ({}):\n{}",
        worker.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let mut result = None;
    let mut locks = Vec::new();
    for line in stdout.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        match fields.as_slice() {
            ["result", pairs, seconds, _] => {
                result = Some((pairs.parse().ok(), seconds.parse().ok()));
            }
            ["lock", family, acquisitions, contended, slept] => {
                let n = |s: &str| s.parse::<u64>().unwrap_or(0);
                locks.push((family.to_string(), [n(acquisitions), n(contended), n(slept)]));
            }
            _ => {}
        }
    }
    match result {
        Some((Some(pairs), Some(seconds))) => Run { pairs, seconds, cores, locks },
        _ => panic!("no result line from {} scaling {workload}:\n{stdout}", worker.display()),
    }
}

/// User and system CPU seconds of this process's children that have been waited for.
fn children_cpu_seconds() -> f64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out-pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Median throughput of a point, in million pairs per second.
fn throughput(runs: &Runs, workload: &str, threads: usize, allocator: &str) -> Option<f64> {
    let v = runs.iter().find(|(k, _)| **k == (workload, threads, allocator))?.1;
    Some(median(v.iter().map(|r| r.pairs as f64 / r.seconds / 1e6).collect()))
}

/// Median cores a point's worker kept busy.
fn cores(runs: &Runs, workload: &str, threads: usize, allocator: &str) -> Option<f64> {
    let v = runs.iter().find(|(k, _)| **k == (workload, threads, allocator))?.1;
    Some(median(v.iter().map(|r| r.cores).collect()))
}

/// tcalloc's lock counters of a point: each family's median over the runs.
fn median_locks(runs: &Runs, workload: &str, threads: usize) -> Vec<(String, LockCounts)> {
    let Some(v) = runs.iter().find(|(k, _)| **k == (workload, threads, "tcalloc")).map(|e| e.1)
    else {
        return Vec::new();
    };
    let Some(first) = v.first() else { return Vec::new() };
    first
        .locks
        .iter()
        .enumerate()
        .map(|(i, (family, _))| {
            let mut counts = [0u64; 3];
            for (c, count) in counts.iter_mut().enumerate() {
                let values = v.iter().filter_map(|r| r.locks.get(i)).map(|l| l.1[c] as f64);
                *count = median(values.collect()).round() as u64;
            }
            (family.clone(), counts)
        })
        .collect()
}

fn header(
    command: &str,
    workloads: &[&ScalingWorkload],
    reps: usize,
    seconds: f64,
    load: &str,
    divisor: usize,
) -> String {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let model = crate::cpu_model();
    let mut out = String::new();
    let _ = writeln!(out, "# Scaling with threads\n");
    if divisor > 1 {
        let _ = writeln!(out, "Check run (`--divisor {divisor}`): not a measurement.\n");
    }
    let _ = writeln!(
        out,
        "`tcalloc-bench {command}` on {cpus} CPUs ({model}), load average {load} at the start; \
         median of {reps} run{} per point, each in its own process, the allocators taking \
         turns; {seconds:.0} s in all.\n",
        if reps == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        out,
        "Throughput is million alloc+free pairs per second, all threads together (higher is \
         better). Each thread does the same fixed work at every thread count (weak scaling), so \
         an allocator that scales perfectly doubles its throughput when the threads double, as \
         long as there is a core for each thread, and holds it level beyond that. \
         \"/ glibc\": the throughput divided by glibc's at the same point; \"vs 1 thread\": \
         tcalloc's throughput divided by its own on one thread; \"cores busy\": CPU time over \
         wall time of each allocator's worker process (tcalloc / glibc / mimalloc / jemalloc), \
         which shows how many cores the run actually had (other load on the machine takes \
         them away).\n"
    );
    for w in workloads {
        let per_thread = w.pairs_per_thread / divisor.max(1);
        let _ = writeln!(
            out,
            "- `{}`: {}; {} million pairs per thread.",
            w.name,
            w.what,
            per_thread as f64 / 1e6
        );
    }
    out.push('\n');
    out
}

fn throughput_table(runs: &Runs, workloads: &[&ScalingWorkload], threads: &[usize]) -> String {
    let mut out = String::new();
    let _ = write!(out, "| workload | threads |");
    for a in ALLOCATORS {
        let _ = write!(out, " {a} |");
    }
    for a in ALLOCATORS.iter().filter(|a| **a != "glibc") {
        let _ = write!(out, " {a} / glibc |");
    }
    let _ = writeln!(out, " tcalloc vs 1 thread | cores busy |");
    let _ = writeln!(
        out,
        "|{}",
        " --- | ---: |".to_string() + &" ---: |".repeat(2 * ALLOCATORS.len() + 1)
    );
    let cell = |v: Option<f64>, digits: usize| match v {
        Some(v) => format!("{v:.digits$}"),
        None => "-".into(),
    };
    for w in workloads {
        let one = throughput(runs, w.name, 1, "tcalloc");
        for &t in threads {
            let _ = write!(out, "| {} | {t} |", w.name);
            let glibc = throughput(runs, w.name, t, "glibc");
            for a in ALLOCATORS {
                let _ = write!(out, " {} |", cell(throughput(runs, w.name, t, a), 1));
            }
            for a in ALLOCATORS.iter().filter(|a| **a != "glibc") {
                let ratio = throughput(runs, w.name, t, a).zip(glibc).map(|(x, g)| x / g);
                let _ = write!(out, " {} |", cell(ratio, 2));
            }
            let tc = throughput(runs, w.name, t, "tcalloc");
            let busy = ALLOCATORS.iter().map(|a| cell(cores(runs, w.name, t, a), 1));
            let _ = writeln!(
                out,
                " {} | {} |",
                cell(tc.zip(one).map(|(x, o)| x / o), 2),
                busy.collect::<Vec<_>>().join(" / ")
            );
        }
    }
    out
}

fn contention_table(runs: &Runs, workloads: &[&ScalingWorkload], threads: &[usize]) -> String {
    let mut out = String::new();
    let families: Vec<String> = workloads
        .iter()
        .flat_map(|w| threads.iter().map(move |&t| median_locks(runs, w.name, t)))
        .find(|l| !l.is_empty())
        .map(|l| l.into_iter().map(|f| f.0).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "\n## tcalloc's lock contention\n\n\
         From `tcalloc::stats().locks` at the end of each tcalloc run (median over the runs; \
         the whole process, start-up and thread exits included). *Acquisitions*: every lock \
         taken; *per 1000 pairs*: acquisitions per thousand alloc+free pairs (the fast path \
         takes no lock); *contended*: acquisitions that found the lock held and had to wait; \
         *slept*: contended acquisitions that went to sleep in `FUTEX_WAIT`. The family \
         columns are contended acquisitions.\n"
    );
    let _ = write!(
        out,
        "| workload | threads | acquisitions | per 1000 pairs | contended | contended % | slept |"
    );
    for f in &families {
        let _ = write!(out, " {f} |");
    }
    let _ = writeln!(
        out,
        "\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |{}",
        " ---: |".repeat(families.len())
    );
    for w in workloads {
        for &t in threads {
            let locks = median_locks(runs, w.name, t);
            if locks.is_empty() {
                continue;
            }
            let total =
                locks.iter().fold([0u64; 3], |s, l| [s[0] + l.1[0], s[1] + l.1[1], s[2] + l.1[2]]);
            let pairs = (w.pairs_per_thread * t) as f64;
            let pairs = runs
                .iter()
                .find(|(k, _)| **k == (w.name, t, "tcalloc"))
                .and_then(|(_, v)| v.first())
                .map_or(pairs, |r| r.pairs as f64);
            let _ = write!(
                out,
                "| {} | {t} | {} | {:.2} | {} | {:.2} | {} |",
                w.name,
                total[0],
                total[0] as f64 * 1000.0 / pairs,
                total[1],
                100.0 * total[1] as f64 / total[0].max(1) as f64,
                total[2]
            );
            for (_, counts) in &locks {
                let _ = write!(out, " {} |", counts[1]);
            }
            out.push('\n');
        }
    }
    out
}

/// `scaling.png`: one panel per workload, throughput against threads, one line per allocator.
fn draw(
    runs: &Runs,
    workloads: &[&ScalingWorkload],
    threads: &[usize],
    path: &Path,
) -> Result<(), String> {
    load_font()?;
    let n = workloads.len().max(1);
    let root = BitMapBackend::new(path, (460 * n as u32, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (title, body) = root.split_vertically(70);
    let title = title
        .titled(
            "throughput against threads (million alloc+free pairs per second, higher is better)",
            ("sans-serif", 20),
        )
        .map_err(|e| e.to_string())?;
    // One legend for every panel, in a row under the title.
    let (width, _) = title.dim_in_pixel();
    let x0 = width as i32 / 2 - 60 * ALLOCATORS.len() as i32;
    for (k, a) in ALLOCATORS.iter().enumerate() {
        let x = x0 + 120 * k as i32;
        title
            .draw(&PathElement::new(vec![(x, 12), (x + 22, 12)], COLORS[k].stroke_width(3)))
            .map_err(|e| e.to_string())?;
        title.draw(&Text::new(*a, (x + 28, 3), ("sans-serif", 16))).map_err(|e| e.to_string())?;
    }
    let panels = body.split_evenly((1, n));
    // Thread counts are evenly spaced on the x axis (they usually double).
    let x_max = threads.len().saturating_sub(1) as f64;
    for (p, (w, panel)) in workloads.iter().zip(panels.iter()).enumerate() {
        let y_max = ALLOCATORS
            .iter()
            .flat_map(|a| threads.iter().filter_map(move |&t| throughput(runs, w.name, t, a)))
            .fold(0.0f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(panel)
            .caption(w.name, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(62)
            .build_cartesian_2d(-0.3..x_max + 0.3, 0.0..y_max.max(1e-3))
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(threads.len())
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    threads.get(i as usize).map(|t| t.to_string()).unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .x_desc("threads")
            .y_desc(if p == 0 { "M pairs / s" } else { "" })
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| e.to_string())?;
        for (k, a) in ALLOCATORS.iter().enumerate() {
            let color = COLORS[k];
            let points: Vec<(f64, f64)> = threads
                .iter()
                .enumerate()
                .filter_map(|(i, &t)| Some((i as f64, throughput(runs, w.name, t, a)?)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(points.iter().map(|&xy| Circle::new(xy, 4, color.filled())))
                .map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())
}
