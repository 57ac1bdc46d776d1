//! The benchmark's command line: bad input gets a message and exit status 2, not a panic.

use std::process::Command;

/// `--out` naming a file that is not a directory: a one-line message naming the path.
#[test]
fn an_output_path_that_is_a_file_is_refused_with_a_message() {
    let file = std::env::temp_dir().join(format!("tcalloc-bench-out-{}", std::process::id()));
    std::fs::write(&file, b"not a directory").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tcalloc-bench"))
        .arg("--out")
        .arg(&file)
        .arg("instructions")
        .output()
        .expect("run tcalloc-bench");
    std::fs::remove_file(&file).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("tcalloc-bench: cannot write results to"), "{stderr}");
    assert!(stderr.contains(&*file.to_string_lossy()), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `--only` that names no program: a message listing the programs, before any work.
#[test]
fn an_only_that_matches_nothing_is_refused_with_the_list_of_programs() {
    let out = Command::new(env!("CARGO_BIN_EXE_tcalloc-bench"))
        .args(["--only", "no-such-program", "--out"])
        .arg(std::env::temp_dir())
        .output()
        .expect("run tcalloc-bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--only no-such-program matches no program"), "{stderr}");
    assert!(stderr.contains("std-collections"), "{stderr}");
}
