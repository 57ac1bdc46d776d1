//! `tcalloc-bench checks`: what tcalloc's heap-misuse checks cost, measured side by side with a
//! build of tcalloc that leaves them out and with glibc.
//!
//! Where the checks are: in the C library (`override`) by default, and in Rust programs with
//! the `hardened` feature; a plain `#[global_allocator]` build has none. So the two sides are
//! compared differently:
//!
//! - **Rust**: `worker_tcalloc` built with `hardened` (checks) against the ordinary
//!   `worker_tcalloc` beside this binary (no checks). The hardened one is built by this
//!   command in `target/hardened` (the bench's `hardened` feature).
//! - **C**: the `libtcalloc.so` that `preload` builds (checks) against one compiled with
//!   `--cfg tcalloc_unchecked` added to `RUSTFLAGS` (`CHECKS` in `src/free_list.rs`: free-list
//!   links neither encoded nor checked, no double-free test in C `free`), for measurement
//!   only, built by this command in `target/preload-unchecked`.
//!
//! Three parts, written together to `checks.md`, and every run to `checks.csv`:
//!
//! 1. **Instructions** per 64-byte alloc+free pair under callgrind, counted as `instructions`
//!    counts them ([`instructions::per_pair`]): through Rust's `GlobalAlloc` (`worker_tcalloc
//!    fastpath` of both builds, `worker_glibc fastpath`) and through C `malloc(64)` + `free`
//!    (`worker_glibc fastpath-c` under `LD_PRELOAD` of either library, of none, and of
//!    Debian's jemalloc, mimalloc and tcmalloc where they are installed).
//! 2. **Rust workloads**: the whole-program workloads of the default comparison
//!    (`tcalloc_bench::programs`) under `worker_tcalloc` of both builds and `worker_glibc`.
//! 3. **Preload programs**: the real programs of `preload` (python3, sqlite3, gcc, git, perl,
//!    sort) with either `libtcalloc.so` preloaded and without (glibc).
//!
//! Parts 2 and 3 run each program once per allocator per round, the order rotating round by
//! round so that drift on the machine hits all three alike, and report the medians of wall
//! time, of CPU time (user plus system, which other load on a shared machine disturbs less
//! than the wall time) and of peak RSS, all three from `wait4`, their ratios, and geometric
//! means of the ratios.

use crate::instructions;
use crate::preload::{self, Preload};
use crate::report::{geomean, kind_name, median_f64};
use crate::Sample;
use clap::Args;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tcalloc_bench::programs::PROGRAMS;

#[derive(Args)]
pub struct ChecksArgs {
    /// One round, the Rust workloads at 1/20 of their work: a check that everything runs, not
    /// a measurement. The tables go to a temporary directory unless --out is given.
    #[arg(long)]
    quick: bool,
    /// Rounds of the Rust workloads and the preload programs, of which the medians are
    /// reported [default: 3; overrides --quick].
    #[arg(long)]
    reps: Option<usize>,
}

/// The configuration flag that compiles the checks out.
const UNCHECKED_CFG: &str = "--cfg tcalloc_unchecked";

/// The allocators of parts 2 and 3, in table order: (table label, CSV name).
const VARIANTS: [(&str, &str); 3] =
    [("checks", "tcalloc-checks"), ("no checks", "tcalloc-unchecked"), ("glibc", "glibc")];
/// Indices into [`VARIANTS`].
const CHECKED: usize = 0;
const UNCHECKED: usize = 1;
const GLIBC: usize = 2;

/// Builds what is missing, runs the three parts and writes `checks.md` and `checks.csv` into
/// `--out`, or `default_out` (a temporary directory with `--quick` or `--smoke`). `--reps`
/// may stand before the subcommand too, as for `preload`.
pub fn run(dir: &Path, args: &ChecksArgs, top: &crate::Args, default_out: &Path) {
    let quick = args.quick || top.smoke;
    let given_reps = args.reps.or(top.reps);
    let reps = given_reps.unwrap_or(if quick { 1 } else { 3 }).max(1);
    let divisor = if quick && given_reps.is_none() { crate::SMOKE_DIVISOR } else { 1 };
    let out = match top.out.as_deref() {
        Some(out) => out.to_path_buf(),
        None if quick => std::env::temp_dir().join("tcalloc-checks-quick"),
        None => default_out.to_path_buf(),
    };
    std::fs::create_dir_all(&out).expect("create the output directory");
    let inherited = std::env::var("RUSTFLAGS").unwrap_or_default();
    if inherited.contains("tcalloc_unchecked") {
        eprintln!("RUSTFLAGS already holds `{UNCHECKED_CFG}`: the checked build would not be");
        std::process::exit(2);
    }

    let workspace = crate::workspace();
    crate::build_workers(dir);
    let checked_library = preload::build_tcalloc(&workspace);
    let hardened_worker = build_hardened_worker(dir, &workspace);
    let unchecked_library = build_unchecked_library(&workspace);
    let workers =
        [hardened_worker, crate::worker_path(dir, "tcalloc"), crate::worker_path(dir, "glibc")];
    let libraries = [
        Preload { name: "tcalloc, checks", library: Some(checked_library) },
        Preload { name: "tcalloc, no checks", library: Some(unchecked_library) },
        Preload { name: "glibc", library: None },
    ];

    let load = crate::load_average();
    let started = Instant::now();
    let counts = count_instructions(&workers, &libraries);
    eprintln!("Rust workloads, {reps} round{}", plural(reps));
    let names: Vec<(&str, &str)> = PROGRAMS.iter().map(|p| (p.name, kind_name(p.kind))).collect();
    let rust = interleave(&names, reps, |row, v| {
        crate::run_worker(&workers[v], PROGRAMS[row].name, divisor)
    });
    eprintln!("preload programs, {reps} round{}", plural(reps));
    let jobs_dir = workspace.join("target/preload-jobs");
    let jobs = preload::jobs(&jobs_dir, &workspace);
    let names: Vec<(&str, &str)> = jobs.iter().map(|j| (j.name, "")).collect();
    let programs =
        interleave(&names, reps, |row, v| preload::run(&jobs[row], &libraries[v], &jobs_dir));
    let seconds = started.elapsed().as_secs_f64();

    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    let mut text = header(&command, reps, divisor, seconds, &load);
    text.push_str(&instructions_markdown(counts.as_deref()));
    text.push_str("\n## Rust workloads\n\n");
    text.push_str(&format!(
        "The whole-program workloads of the default comparison (`tcalloc_bench::programs`), \
         `worker_tcalloc` with the checks (`hardened`) and without (the default) and \
         `worker_glibc`. Medians of \
         {reps} run{} each.\n\n",
        plural(reps)
    ));
    text.push_str(&rust.markdown(Unit::Milliseconds));
    text.push_str("\n## Preload programs\n\n");
    text.push_str(&format!(
        "The real programs of `preload` with `libtcalloc.so` (with and without the checks) \
         preloaded, and without (glibc). Medians of {reps} run{} each.\n\n",
        plural(reps)
    ));
    text.push_str(&programs.markdown(Unit::Seconds));
    println!("{text}");
    std::fs::write(out.join("checks.md"), &text).expect("write checks.md");
    let mut csv = String::from(
        "part,name,allocator,run,seconds,cpu_seconds,peak_rss_kib,instructions_per_pair,\
         instructions_with_loop\n",
    );
    if let Some(rows) = &counts {
        instructions_csv(rows, &mut csv);
    }
    rust.csv("rust-workload", &mut csv);
    programs.csv("preload", &mut csv);
    std::fs::write(out.join("checks.csv"), csv).expect("write checks.csv");
    eprintln!("wrote {}/{{checks.md,checks.csv}} in {seconds:.0} s", out.display());
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Builds `worker_tcalloc` with the profile of the binary in `dir` and tcalloc's `hardened`
/// feature, in its own target directory; returns its path.
fn build_hardened_worker(dir: &Path, workspace: &Path) -> PathBuf {
    let profile_dir = dir.file_name().and_then(|n| n.to_str()).unwrap_or("release");
    let profile = if profile_dir == "debug" { "dev" } else { profile_dir };
    let target = workspace.join("target/hardened");
    eprintln!("building worker_tcalloc with the checks (tcalloc's `hardened` feature)");
    let args = ["build", "-p", "tcalloc-bench", "--profile", profile, "--bin", "worker_tcalloc"];
    cargo_build(workspace, &args, &["--features", "hardened"], &target, None);
    crate::worker_path(&target.join(profile_dir), "tcalloc")
}

/// Builds `libtcalloc.so` as `preload::build_tcalloc` does but with the checks compiled out,
/// in its own target directory; returns its path.
fn build_unchecked_library(workspace: &Path) -> PathBuf {
    let target = workspace.join("target/preload-unchecked");
    eprintln!("building libtcalloc.so without the checks ({UNCHECKED_CFG})");
    let args = ["build", "--release", "--lib", "-p", "tcalloc", "--features", "override"];
    cargo_build(workspace, &args, &[], &target, Some(UNCHECKED_CFG));
    target.join("release/libtcalloc.so")
}

/// Runs cargo with `args`, `more` and `--target-dir target`, with `cfg` added to the
/// `RUSTFLAGS` this program was given (`CARGO_ENCODED_RUSTFLAGS` would override them, so it
/// is removed then); exits when the build fails.
fn cargo_build(workspace: &Path, args: &[&str], more: &[&str], target: &Path, cfg: Option<&str>) {
    let mut cargo = crate::cargo();
    cargo.current_dir(workspace).args(args).args(more).arg("--target-dir").arg(target);
    if let Some(cfg) = cfg {
        let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
        if !flags.is_empty() {
            flags.push(' ');
        }
        flags.push_str(cfg);
        cargo.env("RUSTFLAGS", flags).env_remove("CARGO_ENCODED_RUSTFLAGS");
    }
    let built = cargo.status().map(|s| s.success()).unwrap_or(false);
    if !built {
        eprintln!("building into {} failed (see cargo's messages above)", target.display());
        std::process::exit(2);
    }
}

/// Instructions per pair and with the loop, of one way of calling one allocator.
type Count = (f64, f64);

/// One row of the instruction table.
struct InstructionRow {
    allocator: String,
    rust: Option<Count>,
    c: Option<Count>,
}

/// Part 1: the rows for tcalloc with and without the checks and for glibc (Rust and C), then
/// Debian's allocators (C only). `None` when valgrind is not installed.
fn count_instructions(
    workers: &[PathBuf; 3],
    libraries: &[Preload; 3],
) -> Option<Vec<InstructionRow>> {
    if Command::new("valgrind").arg("--version").output().is_err() {
        eprintln!("valgrind is not installed (apt-get install valgrind): no instruction counts");
        return None;
    }
    let c_worker = &workers[GLIBC];
    let count_c = |p: &Preload| {
        instructions::per_pair(|allocate, n| {
            let mode = if allocate { "fastpath-c" } else { "fastpath-c-empty" };
            instructions::callgrind(c_worker, Some(p), mode, n)
        })
    };
    let mut rows = Vec::new();
    for v in [CHECKED, UNCHECKED, GLIBC] {
        let rust = instructions::per_pair(|allocate, n| {
            let mode = if allocate { "fastpath" } else { "fastpath-empty" };
            instructions::callgrind(&workers[v], None, mode, n)
        });
        let c = count_c(&libraries[v]);
        let allocator = match v {
            GLIBC => "glibc".to_string(),
            _ => format!("tcalloc, {}", VARIANTS[v].0),
        };
        eprintln!("{allocator:<20} Rust {:5.1} C {:5.1} instructions per pair", rust.0, c.0);
        rows.push(InstructionRow { allocator, rust: Some(rust), c: Some(c) });
    }
    // Debian's packaged allocators: the C pair only (their Rust crates are other builds).
    for p in preload::allocators(PathBuf::new(), Path::new(preload::DEBIAN_LIBS)) {
        if p.library.is_none() || p.name == "tcalloc" {
            continue;
        }
        let c = count_c(&p);
        eprintln!("{:<20} C {:5.1} instructions per pair", p.name, c.0);
        let file = library_file(&p);
        rows.push(InstructionRow {
            allocator: format!("{} (`{file}`)", p.name),
            rust: None,
            c: Some(c),
        });
    }
    Some(rows)
}

/// The name of the file a preloaded library resolves to (it names the version).
fn library_file(p: &Preload) -> String {
    let Some(path) = &p.library else { return String::new() };
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
    real.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The instruction table, with the difference the checks make below the two tcalloc rows.
fn instructions_markdown(rows: Option<&[InstructionRow]>) -> String {
    let mut out = String::from("## Instructions per 64-byte pair\n\n");
    let Some(rows) = rows else {
        out.push_str("Not counted: valgrind is not installed.\n");
        return out;
    };
    out.push_str(
        "Counted by callgrind as `tcalloc-bench instructions` counts them: (2M pairs - 1M \
         pairs) minus the same loop without the calls, per pair; \"with the loop\" without that \
         subtraction. Rust: `GlobalAlloc::alloc` + `dealloc` of a 64-byte layout in the \
         worker with that allocator as `#[global_allocator]`; C: `malloc(64)` + `free` in \
         `worker_glibc fastpath-c` with the library in `LD_PRELOAD` (glibc: none).\n\n\
         | allocator | Rust pair | with the loop | C pair | with the loop |\n\
         | --- | ---: | ---: | ---: | ---: |\n",
    );
    let cells = |c: Option<Count>| match c {
        Some((pair, with_loop)) => format!("{pair:.1} | {with_loop:.1}"),
        None => "- | -".into(),
    };
    for (i, r) in rows.iter().enumerate() {
        let _ = writeln!(out, "| {} | {} | {} |", r.allocator, cells(r.rust), cells(r.c));
        if i == UNCHECKED {
            let diff = |a: Option<Count>, b: Option<Count>| match (a, b) {
                (Some(a), Some(b)) => format!("{:+.1} | {:+.1}", a.0 - b.0, a.1 - b.1),
                _ => "- | -".into(),
            };
            let (checked, unchecked) = (&rows[CHECKED], &rows[UNCHECKED]);
            let _ = writeln!(
                out,
                "| *what the checks cost* | {} | {} |",
                diff(checked.rust, unchecked.rust),
                diff(checked.c, unchecked.c)
            );
        }
    }
    out
}

/// Part 1's rows of `checks.csv` (run 1: the counts are exact).
fn instructions_csv(rows: &[InstructionRow], csv: &mut String) {
    for r in rows {
        let name = r.allocator.split(" (").next().unwrap_or(&r.allocator);
        let name = name.replace(", checks", "-checks").replace(", no checks", "-unchecked");
        for (pair, count) in [("rust-pair", r.rust), ("c-pair", r.c)] {
            if let Some((per_pair, with_loop)) = count {
                let _ =
                    writeln!(csv, "instructions,{pair},{name},1,,,,{per_pair:.1},{with_loop:.1}");
            }
        }
    }
}

/// Every run of part 2 or 3: `samples[row][variant]`.
struct Runs<'a> {
    /// (name, group) of each row; the group names a geometric-mean row ("" for none).
    rows: &'a [(&'a str, &'a str)],
    samples: Vec<[Vec<Sample>; 3]>,
}

/// Runs `measure(row, variant)` for every row, `reps` rounds, the variants in an order that
/// rotates round by round.
fn interleave<'a>(
    rows: &'a [(&'a str, &'a str)],
    reps: usize,
    mut measure: impl FnMut(usize, usize) -> Sample,
) -> Runs<'a> {
    let mut runs = Runs { rows, samples: vec![Default::default(); rows.len()] };
    for (row, (name, _)) in rows.iter().enumerate() {
        eprint!("[{}/{}] {name:<18}", row + 1, rows.len());
        for rep in 0..reps {
            for k in 0..VARIANTS.len() {
                let v = (k + rep) % VARIANTS.len();
                let sample = measure(row, v);
                runs.samples[row][v].push(sample);
            }
            eprint!(".");
        }
        let ratio = |m| runs.median(m, row, CHECKED) / runs.median(m, row, UNCHECKED);
        let (wall, cpu) = (ratio(Measure::Wall(Unit::Seconds)), ratio(Measure::Cpu(Unit::Seconds)));
        eprintln!(" checks / no checks: wall time {wall:.3}, CPU time {cpu:.3}");
    }
    runs
}

/// How part 2 or 3 prints times.
#[derive(Clone, Copy)]
enum Unit {
    Milliseconds,
    Seconds,
}

/// What a table of part 2 or 3 shows: the median of one measure of a run.
#[derive(Clone, Copy)]
enum Measure {
    /// Wall time, in `unit`.
    Wall(Unit),
    /// User plus system CPU time, in `unit`.
    Cpu(Unit),
    /// Peak RSS, in MiB.
    Rss,
}

impl Measure {
    /// The table's heading and decimal places.
    fn heading(self) -> (String, usize) {
        let unit = |u| match u {
            Unit::Milliseconds => ("ms", 1),
            Unit::Seconds => ("s", 2),
        };
        match self {
            Measure::Wall(u) => (format!("wall time ({})", unit(u).0), unit(u).1),
            Measure::Cpu(u) => (format!("CPU time ({})", unit(u).0), unit(u).1),
            Measure::Rss => ("peak RSS (MiB)".into(), 1),
        }
    }

    /// The measure of one run.
    fn of(self, s: &Sample) -> f64 {
        let scale = |u| match u {
            Unit::Milliseconds => 1e3,
            Unit::Seconds => 1.0,
        };
        match self {
            Measure::Wall(u) => s.seconds * scale(u),
            Measure::Cpu(u) => s.cpu_seconds * scale(u),
            Measure::Rss => s.peak_rss_kib as f64 / 1024.0,
        }
    }
}

impl Runs<'_> {
    /// Median of `measure` over the runs of one row and variant.
    fn median(&self, measure: Measure, row: usize, v: usize) -> f64 {
        median_f64(self.samples[row][v].iter().map(|s| measure.of(s)).collect())
    }

    /// The wall-time, CPU-time and peak-RSS tables.
    fn markdown(&self, unit: Unit) -> String {
        let tables = [Measure::Wall(unit), Measure::Cpu(unit), Measure::Rss].map(|m| self.table(m));
        tables.join("\n")
    }

    /// One table: a row per program with the three medians of `measure` and their ratios, then
    /// the geometric means of the ratios over each group and over all programs.
    fn table(&self, measure: Measure) -> String {
        let (what, decimals) = measure.heading();
        let mut out = format!(
            "| program, {what} | checks | no checks | glibc | checks / no checks | checks / glibc \
             | no checks / glibc |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
        );
        let pairs = [(CHECKED, UNCHECKED), (CHECKED, GLIBC), (UNCHECKED, GLIBC)];
        let ratios =
            |row| pairs.map(|(a, b)| self.median(measure, row, a) / self.median(measure, row, b));
        for (row, (name, _)) in self.rows.iter().enumerate() {
            let [c, u, g] = [CHECKED, UNCHECKED, GLIBC].map(|v| self.median(measure, row, v));
            let [r0, r1, r2] = ratios(row);
            let d = decimals;
            let _ = writeln!(
                out,
                "| {name} | {c:.d$} | {u:.d$} | {g:.d$} | {r0:.3} | {r1:.3} | {r2:.3} |"
            );
        }
        let mut groups: Vec<&str> = Vec::new();
        for (_, group) in self.rows {
            if !group.is_empty() && !groups.contains(group) {
                groups.push(group);
            }
        }
        for group in groups.iter().copied().map(Some).chain([None]) {
            let members: Vec<usize> = (0..self.rows.len())
                .filter(|&r| group.is_none_or(|g| self.rows[r].1 == g))
                .collect();
            let all: Vec<[f64; 3]> = members.iter().map(|&r| ratios(r)).collect();
            let means = [0, 1, 2].map(|i| geomean(&all.iter().map(|r| r[i]).collect::<Vec<_>>()));
            let _ = writeln!(
                out,
                "| *geometric mean, {} ({})* | | | | {:.3} | {:.3} | {:.3} |",
                group.unwrap_or("all"),
                members.len(),
                means[0],
                means[1],
                means[2]
            );
        }
        out
    }

    /// Every run as a row of `checks.csv`.
    fn csv(&self, part: &str, csv: &mut String) {
        for (row, (name, _)) in self.rows.iter().enumerate() {
            for (v, (_, allocator)) in VARIANTS.iter().enumerate() {
                for (i, s) in self.samples[row][v].iter().enumerate() {
                    let _ = writeln!(
                        csv,
                        "{part},{name},{allocator},{},{:.4},{:.4},{},,",
                        i + 1,
                        s.seconds,
                        s.cpu_seconds,
                        s.peak_rss_kib
                    );
                }
            }
        }
    }
}

/// The title and what was run, where and when.
fn header(command: &str, reps: usize, divisor: usize, seconds: f64, load: &str) -> String {
    let date = crate::date_utc();
    let mut out = String::from("# What the heap-misuse checks cost\n\n");
    if divisor > 1 {
        let _ = writeln!(
            out,
            "Quick run: one round, the Rust workloads at 1/{divisor} of their work; not a \
             measurement.\n"
        );
    }
    let _ = writeln!(
        out,
        "`tcalloc-bench {command}` on {} CPUs ({}), {date}, load average {load} at the start; \
         {reps} round{} of the timed parts, the three allocators taking turns; {seconds:.0} s \
         in all. \"checks\": in Rust, tcalloc with its `hardened` feature, in C, \
         `libtcalloc.so` as built by default; \"no checks\": in Rust, tcalloc as built by \
         default, in C, built with `RUSTFLAGS=\"{UNCHECKED_CFG}\"` (measurement only). Wall and CPU time (user plus \
         system, the process and the children it waited for) and peak RSS from `wait4`; ratios \
         below 1: the first is faster or smaller.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        crate::cpu_model(),
        plural(reps)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_show_medians_ratios_and_geometric_means() {
        let rows = [("a", "small"), ("b", "large")];
        // Wall time of row a: checks 2 s (median of 1, 2, 9), no checks 1 s, glibc 4 s; row b:
        // 8, 4, 2. CPU time: half the wall time. Peak RSS: 1, 2 and 3 MiB in every row.
        let times =
            [[vec![1.0, 9.0, 2.0], vec![1.0], vec![4.0]], [vec![8.0], vec![4.0], vec![2.0]]];
        let mut runs = Runs { rows: &rows, samples: vec![Default::default(); 2] };
        for (row, per_variant) in times.iter().enumerate() {
            for (v, secs) in per_variant.iter().enumerate() {
                let sample = |seconds: f64| Sample {
                    seconds,
                    cpu_seconds: seconds / 2.0,
                    peak_rss_kib: 1024 * (v as u64 + 1),
                };
                runs.samples[row][v] = secs.iter().map(|&s| sample(s)).collect();
            }
        }
        let text = runs.markdown(Unit::Milliseconds);
        // Each table ends its last line; the split takes that newline away.
        let tables: Vec<String> = text.split("\n\n").map(|t| format!("{t}\n")).collect();
        assert_eq!(tables.len(), 3, "{text}");
        let expect = |table: &str, line: &str| assert!(table.contains(line), "{line}\n{table}");
        expect(&tables[0], "| program, wall time (ms) | checks |");
        expect(&tables[0], "| a | 2000.0 | 1000.0 | 4000.0 | 2.000 | 0.500 | 0.250 |\n");
        expect(&tables[0], "| b | 8000.0 | 4000.0 | 2000.0 | 2.000 | 4.000 | 2.000 |\n");
        // Ratios checks / glibc: 0.5 and 4, geometric mean sqrt(2).
        expect(&tables[0], "| *geometric mean, small (1)* | | | | 2.000 | 0.500 | 0.250 |\n");
        expect(&tables[0], "| *geometric mean, all (2)* | | | | 2.000 | 1.414 | 0.707 |\n");
        expect(&tables[1], "| program, CPU time (ms) | checks |");
        expect(&tables[1], "| a | 1000.0 | 500.0 | 2000.0 | 2.000 | 0.500 | 0.250 |\n");
        expect(&tables[2], "| program, peak RSS (MiB) | checks |");
        expect(&tables[2], "| a | 1.0 | 2.0 | 3.0 | 0.500 | 0.333 | 0.667 |\n");
        expect(&tables[2], "| *geometric mean, all (2)* | | | | 0.500 | 0.333 | 0.667 |\n");
        assert!(Measure::Wall(Unit::Seconds).heading() == ("wall time (s)".into(), 2));
        let mut csv = String::new();
        runs.csv("rust-workload", &mut csv);
        assert_eq!(csv.lines().count(), 3 + 1 + 1 + 3);
        assert!(csv.contains("rust-workload,a,tcalloc-checks,2,9.0000,4.5000,1024,,\n"), "{csv}");
        assert!(csv.contains("rust-workload,b,glibc,1,2.0000,1.0000,3072,,\n"), "{csv}");
    }

    #[test]
    fn the_instruction_table_shows_what_the_checks_cost() {
        let row =
            |allocator: &str, rust, c| InstructionRow { allocator: allocator.into(), rust, c };
        let rows = [
            row("tcalloc, checks", Some((29.0, 36.0)), Some((60.0, 66.0))),
            row("tcalloc, no checks", Some((25.0, 32.0)), Some((48.0, 54.0))),
            row("glibc", Some((140.0, 147.0)), Some((132.0, 138.0))),
            row("jemalloc (`libjemalloc.so.2`)", None, Some((70.5, 76.5))),
        ];
        let text = instructions_markdown(Some(&rows));
        assert!(text.contains("| tcalloc, checks | 29.0 | 36.0 | 60.0 | 66.0 |\n"), "{text}");
        assert!(
            text.contains("| tcalloc, no checks | 25.0 | 32.0 | 48.0 | 54.0 |\n| *what the checks cost* | +4.0 | +4.0 | +12.0 | +12.0 |\n"),
            "{text}"
        );
        assert!(
            text.contains("| jemalloc (`libjemalloc.so.2`) | - | - | 70.5 | 76.5 |\n"),
            "{text}"
        );
        assert!(instructions_markdown(None).contains("valgrind is not installed"));
        let mut csv = String::new();
        instructions_csv(&rows, &mut csv);
        assert!(csv.contains("instructions,c-pair,tcalloc-unchecked,1,,,,48.0,54.0\n"), "{csv}");
        assert!(csv.contains("instructions,c-pair,jemalloc,1,,,,70.5,76.5\n"), "{csv}");
        assert!(!csv.contains("rust-pair,jemalloc"), "{csv}");
    }
}
