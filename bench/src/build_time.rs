//! What tcalloc adds to a user's build: two throwaway hello-world crates in a temporary
//! directory, one plain and one with tcalloc (a path dependency on this checkout) as its
//! `#[global_allocator]`, each built from clean with `cargo build --release` a few times,
//! interleaved; the medians and the crates each build compiled go to `build-time.md`.
//! `cargo run --release -p tcalloc-bench -- build-time`.
//!
//! The builds run offline from the local registry cache when it holds the crates (it does
//! once this workspace has been built), so that downloads are not timed; otherwise the
//! dependencies are fetched once before timing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The program both crates build; the tcalloc one adds the allocator lines.
const HELLO: &str = r#"fn main() {
    let words: Vec<String> = (1..=10).map(|i| format!("word{i}")).collect();
    println!("hello, {}", words.join(" "));
}
"#;

const ALLOCATOR: &str = "#[global_allocator]
static GLOBAL: tcalloc::TcAlloc = tcalloc::TcAlloc;

";

/// Runs the measurement and writes `build-time.md` into `out`.
pub fn run(workspace: &Path, runs: usize, out: &Path) {
    let workspace = std::fs::canonicalize(workspace).expect("the workspace directory");
    let root = std::env::temp_dir().join(format!("tcalloc-build-time-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let plain = make_crate(&root, "hello-plain", None);
    let with = make_crate(&root, "hello-tcalloc", Some(&workspace));
    let offline = [&plain, &with].iter().all(|dir| prepare(dir));
    let load = crate::load_average();
    let crates = [&plain, &with];
    let mut seconds = [Vec::new(), Vec::new()];
    let mut compiled = [Vec::new(), Vec::new()];
    for run in 0..runs.max(1) {
        for (i, dir) in crates.iter().enumerate() {
            let _ = std::fs::remove_dir_all(dir.join("target"));
            let (s, names) = build(dir, offline);
            eprintln!(
                "run {}: {:<14} {s:5.2} s, {} crates compiled",
                run + 1,
                dir.file_name().unwrap().to_string_lossy(),
                names.len()
            );
            seconds[i].push(s);
            compiled[i] = names;
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    let text = markdown(runs.max(1), &seconds, &compiled, &load);
    println!("{text}");
    std::fs::write(out.join("build-time.md"), text).expect("write build-time.md");
    eprintln!("wrote {}/build-time.md", out.display());
}

/// Writes a binary crate `name` under `root`; with `tcalloc`, it depends on that checkout and
/// installs it as the global allocator.
fn make_crate(root: &Path, name: &str, tcalloc: Option<&Path>) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("src")).expect("create a crate directory");
    let mut manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         # Not part of any workspace around the temporary directory.\n[workspace]\n\n\
         [dependencies]\n"
    );
    let mut main = String::new();
    if let Some(path) = tcalloc {
        writeln!(manifest, "tcalloc = {{ path = '{}' }}", path.display()).unwrap();
        main.push_str(ALLOCATOR);
    }
    main.push_str(HELLO);
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("write Cargo.toml");
    std::fs::write(dir.join("src/main.rs"), main).expect("write main.rs");
    dir
}

/// The cargo to use, without the settings of the build that runs this program.
fn cargo(dir: &Path) -> Command {
    let mut cmd = crate::cargo();
    cmd.current_dir(dir).env_remove("CARGO_TARGET_DIR").env_remove("CARGO_BUILD_TARGET_DIR");
    cmd
}

/// Resolves the crate's dependencies: offline if the local cache has them (true), otherwise
/// online, downloading them now so that the timed builds need no network (false).
fn prepare(dir: &Path) -> bool {
    let offline = cargo(dir).args(["fetch", "--offline", "-q"]).status();
    if offline.map(|s| s.success()).unwrap_or(false) {
        return true;
    }
    let online = cargo(dir).args(["fetch", "-q"]).status().expect("run cargo fetch");
    assert!(online.success(), "cargo fetch failed in {}", dir.display());
    false
}

/// One clean release build: its wall time and the crates it compiled.
fn build(dir: &Path, offline: bool) -> (f64, Vec<String>) {
    let mut cmd = cargo(dir);
    cmd.args(["build", "--release", "--color", "never"]);
    if offline {
        cmd.arg("--offline");
    }
    let start = Instant::now();
    let output = cmd.output().expect("run cargo build");
    let seconds = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "building {} failed:\n{stderr}", dir.display());
    let names = stderr
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("Compiling "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect();
    (seconds, names)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn markdown(
    runs: usize,
    seconds: &[Vec<f64>; 2],
    compiled: &[Vec<String>; 2],
    load: &str,
) -> String {
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (plain, with) = (median(&seconds[0]), median(&seconds[1]));
    let mut out = format!(
        "A clean `cargo build --release` (the default release profile) of a hello-world, \
         without and with tcalloc as its `#[global_allocator]`; median of {runs} builds each, \
         interleaved; {rustc}, {cores} cores, load average {load} before the builds. \
         `cargo run --release -p tcalloc-bench -- build-time`.\n\n\
         | program | crates compiled | clean release build |\n| --- | --- | ---: |\n"
    );
    let names = |v: &Vec<String>| v.join(", ");
    writeln!(out, "| hello-world | {} | {plain:.2} s |", names(&compiled[0])).unwrap();
    writeln!(out, "| hello-world with tcalloc | {} | {with:.2} s |", names(&compiled[1])).unwrap();
    writeln!(out, "| what tcalloc adds | | {:.2} s |", with - plain).unwrap();
    out
}
