//! Settings from the environment: each case re-runs this test binary as a child process with
//! some `TCALLOC_*` variables set and checks what the child prints. The child runs the
//! `child_allocates` test, which only allocates a little. That test is `#[ignore]`d, so that
//! `cargo test` reports it as ignored instead of a pass; the children run it with `--ignored`.

use std::process::Command;

#[global_allocator]
static GLOBAL: tcalloc::TcAlloc = tcalloc::TcAlloc;

const CHILD: &str = "TCALLOC_ENVIRONMENT_TEST_CHILD";

#[test]
#[ignore = "run by the other tests of this file, in a child process with TCALLOC_* settings"]
fn child_allocates() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let v: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
    assert_eq!(v.len(), 10_000);
}

fn run_child(vars: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_allocates", "--ignored", "--test-threads=1", "--nocapture"]);
    cmd.env(CHILD, "1");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn show_stats_prints_the_report_at_exit() {
    let (ok, stderr) = run_child(&[("TCALLOC_SHOW_STATS", "1")]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("in use by the program"), "no report in:\n{stderr}");
    assert!(stderr.contains("released to the OS"), "{stderr}");
}

#[test]
fn the_transfer_cache_cap_is_set_from_the_environment() {
    let (ok, stderr) =
        run_child(&[("TCALLOC_SHOW_STATS", "1"), ("TCALLOC_MAX_TRANSFER_CACHE_BYTES", "3m")]);
    assert!(ok, "{stderr}");
    let line = stderr.lines().find(|l| l.contains("transfer cache cap")).unwrap_or("");
    assert!(line.ends_with("3.00 MiB"), "no 3 MiB cap in:\n{stderr}");
}

#[test]
fn without_settings_nothing_is_printed() {
    let (ok, stderr) = run_child(&[]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("tcalloc"), "{stderr}");
}

#[test]
fn malformed_values_warn_once_and_are_ignored() {
    let (ok, stderr) = run_child(&[
        ("TCALLOC_RELEASE_RATE", "fast"),
        ("TCALLOC_MAX_TOTAL_THREAD_CACHE_BYTES", "12q"),
        ("TCALLOC_DECAY_MS", "-5"),
    ]);
    assert!(ok, "{stderr}");
    let warnings: Vec<&str> =
        stderr.lines().filter(|l| l.starts_with("tcalloc: ignoring")).collect();
    assert_eq!(warnings.len(), 3, "{stderr}");
    assert!(warnings[0].contains("TCALLOC_RELEASE_RATE=\"fast\""), "{stderr}");
}

#[test]
fn valid_values_are_accepted_silently() {
    let (ok, stderr) = run_child(&[
        ("TCALLOC_RELEASE_RATE", "0"),
        ("TCALLOC_FREE_RESERVE_BYTES", "64m"),
        ("TCALLOC_DECAY_MS", "250"),
        ("TCALLOC_MAX_TOTAL_THREAD_CACHE_BYTES", "8M"),
    ]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("tcalloc"), "{stderr}");
}
