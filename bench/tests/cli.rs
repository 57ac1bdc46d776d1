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

/// `mimalloc-bench --tcalloc FILE --peers DIR` runs without cargo (for a machine the binary
/// was copied to): it preloads that file as tcalloc, takes the peers from DIR (leaving out
/// the missing ones), and refuses a `--tcalloc` that does not exist. Relative paths work (the
/// programs run in another folder), and a library the loader could not load fails the run
/// instead of measuring glibc under its name. A suite that is not a repository of its own has no
/// commit in the report.
#[test]
fn mimalloc_bench_takes_a_built_library_and_a_folder_of_peers() {
    use std::os::unix::fs::PermissionsExt as _;
    let root = std::env::temp_dir().join(format!("tcalloc-bench-cli-mb-{}", std::process::id()));
    let (suite, build, peers, out) =
        (root.join("suite"), root.join("build"), root.join("peers"), root.join("out"));
    for dir in [suite.join("bench"), build.clone(), peers.clone()] {
        std::fs::create_dir_all(dir).unwrap();
    }
    // A stand-in for mstress that records the library it was given, and prints the loader's
    // complaint about another library (a child's, say), which must not fail the run.
    let mstress = build.join("mstress");
    let other = "echo \"ERROR: ld.so: object 'x.so' from LD_PRELOAD cannot be preloaded\" >&2";
    let body = format!("#!/bin/sh\necho \"$LD_PRELOAD\" >> {}/seen\n{other}\n", root.display());
    std::fs::write(&mstress, body).unwrap();
    std::fs::set_permissions(&mstress, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A library that loads anywhere: this process's own libc, under tcalloc's name.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let libc =
        maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| p.contains("/libc.so"));
    std::os::unix::fs::symlink(libc.expect("libc in /proc/self/maps"), root.join("libtcalloc.so"))
        .unwrap();
    // The suite inside another repository (as when it is copied into this one): the report
    // must not give that repository's commit as the suite's.
    let git = |args: &[&str]| {
        let status = Command::new("git").arg("-C").arg(&root).args(args).status().unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "t"]);
    // Not a library: the loader says so and runs the program without it.
    std::fs::write(root.join("empty.so"), b"").unwrap();
    let bench = |tcalloc: &str| {
        Command::new(env!("CARGO_BIN_EXE_tcalloc-bench"))
            .arg("--out")
            .arg(&out)
            .args(["mimalloc-bench", "--runs", "1", "--programs", "mstressN"])
            .args([
                "--suite",
                "suite",
                "--build",
                "build",
                "--peers",
                "peers",
                "--tcalloc",
                tcalloc,
            ])
            .current_dir(&root)
            .env_remove("CARGO")
            .output()
            .expect("run tcalloc-bench")
    };

    let run = bench("libtcalloc.so");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let jemalloc = peers.join("libjemalloc.so.2");
    assert!(
        stderr.contains(&format!("jemalloc: {} not installed", jemalloc.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("Compiling"), "built something: {stderr}");
    assert!(!stderr.contains("failed"), "{stderr}");
    let seen = std::fs::read_to_string(root.join("seen")).unwrap();
    let mut seen: Vec<&str> = seen.lines().collect();
    seen.sort_unstable();
    seen.dedup(); // the stand-in is short, so each sample runs it several times
    assert_eq!(seen, ["", root.join("libtcalloc.so").to_str().unwrap()]);
    let report = std::fs::read_to_string(out.join("mimalloc-bench.md")).unwrap();
    assert!(report.contains("| program | glibc | tcalloc |"), "{report}");
    assert!(report.contains("the 1 of 1 programs"), "{report}");
    assert!(report.starts_with("mimalloc-bench (github.com/daanx/mimalloc-bench)"), "{report}");

    let unloadable = bench("empty.so");
    let stderr = String::from_utf8_lossy(&unloadable.stderr);
    assert!(
        stderr.contains("mstressN under tcalloc failed: the library was not loaded"),
        "{stderr}"
    );
    let report = std::fs::read_to_string(out.join("mimalloc-bench.md")).unwrap();
    assert!(report.contains("| mstressN | "), "{report}");
    assert!(report.contains("the 0 of 1 programs"), "{report}");

    let missing = bench("no-such-library.so");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no-such-library.so: no such file"), "{stderr}");
    std::fs::remove_dir_all(&root).unwrap();
}
