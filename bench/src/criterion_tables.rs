//! The criterion tables: runs `benches/alloc.rs` and `benches/pool.rs` through `cargo bench`,
//! then turns the medians criterion leaves in `<target>/criterion/<group>/<bench>/new/
//! estimates.json` into `criterion.md` (the four allocators side by side, with ratios) and
//! `pool.md` (where a request loop's memory comes from).
//! `cargo run --release -p tcalloc-bench -- criterion` (about 12 minutes; `--collect-only`
//! rewrites the tables from the estimates of the last run).

use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use tcalloc_bench::ALLOCATORS;

/// The rows of `benches/alloc.rs`, in its order: criterion group and parameter.
const ALLOC_ROWS: &[(&str, &str)] = &[
    ("pairs", "16"),
    ("pairs", "64"),
    ("pairs", "256"),
    ("pairs", "1024"),
    ("pairs", "4096"),
    ("pairs", "32768"),
    ("pairs", "262144"),
    ("pairs", "1048576"),
    ("pairs", "8388608"),
    ("batch-10k", "lifo"),
    ("batch-10k", "fifo"),
    ("batch-10k", "random"),
    ("threads", "larson-1t"),
    ("threads", "larson-2t"),
    ("threads", "producer-consumer"),
    ("threads", "churn-1t"),
    ("threads", "churn-2t"),
    ("threads", "churn-4t"),
    ("realloc-16B-to-1MiB", "doubling"),
    ("realloc-16B-to-1MiB", "1KiB-steps"),
];

/// The group of `benches/pool.rs` and its benches, with what each measures.
const POOL_GROUP: &str = "request-loop-100";
const POOL_ROWS: &[(&str, &str)] = &[
    ("tcalloc-pool", "`tcalloc::Pool`, reset after each request"),
    ("tcalloc-per-object", "one allocation per object, tcalloc"),
    ("glibc-per-object", "one allocation per object, glibc"),
    ("bumpalo", "`bumpalo::Bump`, reset after each request"),
];

/// Runs the benches (unless `collect_only`) and writes both tables into `out`.
pub fn run(workspace: &Path, exe_dir: &Path, collect_only: bool, out: &Path) {
    let target = exe_dir.parent().unwrap_or(exe_dir);
    let home = target.join("criterion");
    let load_file = home.join("load-average.txt");
    if !collect_only {
        std::fs::create_dir_all(&home).expect("create criterion's directory");
        std::fs::write(&load_file, crate::load_average()).expect("write load-average.txt");
        let status = crate::cargo()
            .args(["bench", "-p", "tcalloc-bench", "--bench", "alloc", "--bench", "pool"])
            .arg("--manifest-path")
            .arg(workspace.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target)
            .env("CRITERION_HOME", &home)
            .status()
            .expect("run cargo bench");
        if !status.success() {
            eprintln!("cargo bench failed");
            std::process::exit(2);
        }
    }
    let load = std::fs::read_to_string(&load_file).unwrap_or_else(|_| "unknown".into());
    let note = format!(
        "\nMachine: {} cores, load average {} when the run started.\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        load.trim()
    );
    let alloc = alloc_table(&home) + &note;
    let pool = pool_table(&home) + &note;
    println!("{alloc}\n{pool}");
    std::fs::write(out.join("criterion.md"), alloc).expect("write criterion.md");
    std::fs::write(out.join("pool.md"), pool).expect("write pool.md");
    eprintln!("wrote {}/{{criterion.md,pool.md}}", out.display());
}

/// The median time in nanoseconds that criterion recorded for `bench` (a path under its home).
fn median_ns(home: &Path, bench: &str) -> Option<f64> {
    let path = home.join(bench).join("new/estimates.json");
    let text = std::fs::read_to_string(&path).ok()?;
    let value: Value = serde_json::from_str(&text).ok()?;
    value["median"]["point_estimate"].as_f64()
}

/// A time with a unit that keeps three significant digits or so.
fn time(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn alloc_table(home: &Path) -> String {
    let mut out = String::from(
        "Criterion (`cargo run --release -p tcalloc-bench -- criterion`, which runs \
         `cargo bench -p tcalloc-bench --bench alloc`), median time per iteration, the four \
         allocators called through `GlobalAlloc` in one process; pairs: 1 000 pairs (100 for \
         256 KiB and above), batch: 10 000 blocks, threads: 200 000 operations per thread, \
         realloc: one growth from 16 B to 1 MiB.\n\n| benchmark |",
    );
    for a in ALLOCATORS {
        write!(out, " {a} |").unwrap();
    }
    for a in &ALLOCATORS[1..] {
        write!(out, " tcalloc/{a} |").unwrap();
    }
    out.push_str("\n| --- |");
    for _ in 0..ALLOCATORS.len() * 2 - 1 {
        out.push_str(" ---: |");
    }
    out.push('\n');
    for (group, param) in ALLOC_ROWS {
        let times: Vec<Option<f64>> =
            ALLOCATORS.iter().map(|a| median_ns(home, &format!("{group}/{a}/{param}"))).collect();
        write!(out, "| {group} {param} |").unwrap();
        for t in &times {
            match t {
                Some(ns) => write!(out, " {} |", time(*ns)).unwrap(),
                None => out.push_str(" — |"),
            }
        }
        for t in &times[1..] {
            match (times[0], t) {
                (Some(ours), Some(theirs)) => write!(out, " {:.2} |", ours / theirs).unwrap(),
                _ => out.push_str(" — |"),
            }
        }
        out.push('\n');
        if times.iter().any(Option::is_none) {
            eprintln!("no criterion estimate for some allocators of {group}/{param}");
        }
    }
    out
}

fn pool_table(home: &Path) -> String {
    let mut out = String::from(
        "The request loop of `examples/pool_server.rs` (`benches/pool.rs`: parsing 100 \
         requests' lines and headers and building responses, all memory per request), median \
         time per 100 requests, from `cargo run --release -p tcalloc-bench -- criterion`.\n\n\
         | memory per request from | time for 100 requests |\n| --- | ---: |\n",
    );
    for (bench, what) in POOL_ROWS {
        match median_ns(home, &format!("{POOL_GROUP}/{bench}")) {
            Some(ns) => writeln!(out, "| {what} | {} |", time(ns)).unwrap(),
            None => {
                eprintln!("no criterion estimate for {POOL_GROUP}/{bench}");
                writeln!(out, "| {what} | — |").unwrap();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_well() {
        assert_eq!(time(512.0), "512 ns");
        assert_eq!(time(5_100.0), "5.1 µs");
        assert_eq!(time(1_020_000.0), "1.02 ms");
        assert_eq!(time(2.5e9), "2.50 s");
    }

    #[test]
    fn medians_come_from_criterion_estimates() {
        let home = std::env::temp_dir().join(format!("tcalloc-criterion-{}", std::process::id()));
        let dir = home.join("pairs/tcalloc/64/new");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("estimates.json"),
            r#"{"mean":{"point_estimate":6000.0},"median":{"point_estimate":5100.0}}"#,
        )
        .unwrap();
        assert_eq!(median_ns(&home, "pairs/tcalloc/64"), Some(5100.0));
        assert_eq!(median_ns(&home, "pairs/glibc/64"), None);
        let table = alloc_table(&home);
        assert!(table.contains("| pairs 64 | 5.1 µs | — |"), "{table}");
        std::fs::remove_dir_all(&home).unwrap();
    }
}
