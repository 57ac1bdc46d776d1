//! The preload comparison: real programs (python3, sqlite3, gcc, git, perl, sort) run with each
//! allocator preloaded — tcalloc's `libtcalloc.so` and Debian's `libjemalloc2`,
//! `libmimalloc2.0` and `libtcmalloc-minimal4` — and without (glibc), interleaved, timed and
//! their peak RSS taken from `wait4`. `cargo run --release -p tcalloc-bench -- preload`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// An allocator to preload (`None`: glibc's own malloc).
pub struct Preload {
    pub name: &'static str,
    pub library: Option<PathBuf>,
}

/// Where Debian's packages put the peers' libraries.
pub const DEBIAN_LIBS: &str = "/usr/lib/x86_64-linux-gnu";

/// The allocators available here: glibc, `tcalloc` (a `libtcalloc.so`), and the peers whose
/// libraries `peers` holds (`DEBIAN_LIBS` for the installed packages).
pub fn allocators(tcalloc: PathBuf, peers: &Path) -> Vec<Preload> {
    let mut v = vec![
        Preload { name: "glibc", library: None },
        Preload { name: "tcalloc", library: Some(tcalloc) },
    ];
    for (name, file) in [
        ("jemalloc", "libjemalloc.so.2"),
        ("mimalloc", "libmimalloc.so.2"),
        ("tcmalloc", "libtcmalloc_minimal.so.4"),
    ] {
        let path = peers.join(file);
        if path.exists() {
            v.push(Preload { name, library: Some(path) });
        } else {
            eprintln!("{name}: {} not installed, skipped", path.display());
        }
    }
    v
}

/// Builds the preloadable library (the `override` feature) in its own target directory.
pub fn build_tcalloc(workspace: &Path) -> PathBuf {
    let target = workspace.join("target/preload");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace)
        .args(["build", "--release", "--lib", "-p", "tcalloc", "--features", "override"])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building libtcalloc.so failed");
    target.join("release/libtcalloc.so")
}

/// The allocators for the commands that preload the suite's programs: `tcalloc` the library
/// the user named (`--tcalloc`; exits if it is missing) or one built here, the peers from
/// `peers`. Paths are absolute: the programs run in another folder.
pub fn allocators_for(tcalloc: Option<&Path>, peers: &Path, workspace: &Path) -> Vec<Preload> {
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let tcalloc = match tcalloc {
        Some(file) if file.is_file() => absolute(file),
        Some(file) => {
            eprintln!("--tcalloc {}: no such file", file.display());
            std::process::exit(2);
        }
        None => build_tcalloc(workspace),
    };
    allocators(tcalloc, &absolute(peers))
}

/// The preloaded libraries, by the file each resolves to (it names the version):
/// "tcalloc `libtcalloc.so`, jemalloc `libjemalloc.so.2`, …".
pub fn library_names(allocators: &[Preload]) -> String {
    allocators
        .iter()
        .filter_map(|a| {
            let path = a.library.as_ref()?;
            let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            Some(format!("{} `{}`", a.name, real.file_name()?.to_string_lossy()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One real-program workload: a shell command run in `dir`.
pub struct Job {
    pub name: &'static str,
    pub what: &'static str,
    pub command: String,
}

const PYTHON: &str = r#"
import json, re, collections
words = [f"w{i * 7919 % 20011}-{i % 13}" for i in range(400000)]
counts = collections.Counter(words)
index = {w.upper(): [len(w), n] for w, n in counts.items()}
text = json.dumps(index)
back = json.loads(text)
found = sum(1 for w in words if re.match(r"w1\d*-3", w))
objs = [{"id": i, "tags": [str(i), str(i * 2)], "nested": {"v": i / 3}} for i in range(150000)]
objs.sort(key=lambda o: (o["nested"]["v"] % 7, o["id"]))
print(len(counts), len(back), found, objs[0]["id"], len(json.dumps(objs[:1000])))
"#;

const SQL: &str = "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, value REAL); \
    WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400000) \
    INSERT INTO t SELECT x, printf('name-%08d', x * 7919 % 400000), x % 97, x * 0.5 FROM c; \
    CREATE INDEX t_grp ON t(grp, value); CREATE INDEX t_name ON t(name); \
    SELECT count(*), sum(value) FROM t; \
    SELECT grp, count(*), avg(value) FROM t GROUP BY grp ORDER BY 3 DESC LIMIT 3; \
    UPDATE t SET name = upper(name) WHERE id % 3 = 0; DELETE FROM t WHERE id % 5 = 0; \
    SELECT count(*) FROM t WHERE name LIKE 'NAME-00%';";

const PERL: &str = r#"my %h; my @a; for my $i (1 .. 400000) { $h{"key$i"} = "v" x ($i % 40); push @a, [$i, "x$i"]; } my $s = 0; $s += length($h{$_}) for keys %h; my @b = sort { $b->[0] <=> $a->[0] } @a; print "$s $b[0][1]\n";"#;

/// The jobs, with their fixtures prepared in `dir`.
pub fn jobs(dir: &Path, workspace: &Path) -> Vec<Job> {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("script.py"), PYTHON).unwrap();
    std::fs::write(dir.join("script.pl"), PERL).unwrap();
    let lines: String = (0..1_000_000u64)
        .map(|i| format!("{:x} line {}\n", i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40, i))
        .collect();
    std::fs::write(dir.join("lines.txt"), lines).unwrap();
    let repo = dir.join("repo");
    if !repo.exists() {
        for i in 0..3000 {
            let sub = repo.join(format!("d{}", i % 30));
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("f{i}.txt")), "some text\n".repeat(i % 60 + 1))
                .unwrap();
        }
    }
    let c_source = workspace.join("tests/c/malloc_test.c");
    let git = "rm -rf .git && git init -q -b main . && git add . && \
        git -c user.name=t -c user.email=t@e commit -q -m x && git gc -q && git log --oneline | wc -l";
    vec![
        Job {
            name: "python3",
            what: "Counter, dicts, json, re, sorting dicts",
            command: "python3 ../script.py".into(),
        },
        Job {
            name: "sqlite3",
            what: "400 000 rows, two indexes, aggregates, update, delete",
            command: format!("rm -f db.sqlite && sqlite3 db.sqlite \"{SQL}\""),
        },
        Job {
            name: "gcc",
            what: "gcc -O2 compiling tests/c/malloc_test.c",
            command: format!("cc -O2 -c -o /dev/null {}", c_source.display()),
        },
        Job { name: "git", what: "init, add and commit 3 000 files, gc, log", command: git.into() },
        Job {
            name: "perl",
            what: "a hash of 400 000 keys, sorting",
            command: "perl ../script.pl".into(),
        },
        Job {
            name: "sort",
            what: "sort 1 000 000 lines",
            command: "sort -S 64M ../lines.txt | tail -1".into(),
        },
    ]
}

/// Runs `job` with `preload`; its wall and CPU time and peak RSS.
// The child is reaped by `wait4` (which also gives its peak RSS), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
pub fn run(job: &Job, preload: &Preload, dir: &Path) -> crate::Sample {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(&job.command).current_dir(dir.join("repo"));
    cmd.stdout(Stdio::null());
    if let Some(lib) = &preload.library {
        cmd.env("LD_PRELOAD", lib);
    }
    let start = Instant::now();
    let child = cmd.spawn().expect("start a job");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child; the out-pointers are valid. The CPU time and peak RSS
    // reported cover the shell and the programs it waited for.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(waited, pid);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    assert!(ok, "{} under {} failed", job.name, preload.name);
    crate::Sample::new(seconds, &usage)
}
