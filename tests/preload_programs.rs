//! Real programs under `LD_PRELOAD=libtcalloc.so` produce the same output and exit status as
//! without it: Python running part of its own regression suite, sqlite3 on 300 000 rows, git
//! on a repository of 3 000 files, perl, gcc compiling and running a program, a C++ program that
//! throws, and sort; and the library brings no other library into the process.
//!
//! A program that is not installed fails the test under CI (`CI` set: `.ci/run` installs them
//! all). Elsewhere the test is skipped with a `SKIPPED <test>: <reason>` line on the terminal:
//! it passes, so that `cargo test` works on a machine without sqlite3, but says it tested
//! nothing.

mod common;

use common::{library, text};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Whether this is a CI run (`CI` set to anything but empty, `0` or `false`).
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Called by a test that cannot run here because `missing` is missing: under CI the test
/// fails; elsewhere it prints a `SKIPPED` line that the user sees (written with one `write`
/// to the process's standard error, which the test harness does not capture, so it shows in
/// a normal `cargo test` run as a whole line) and the test returns.
fn skip(missing: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_string();
    assert!(!under_ci(), "{test}: {missing} is missing, and CI must run every test");
    let line = format!("SKIPPED {test}: {missing} is missing (.ci/run installs it)\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Whether `program` is on `PATH`; if not, the test is skipped (or fails under CI).
fn available(program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        skip(program);
    }
    found
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("preload").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `build()` twice, with and without the library preloaded.
fn both(build: impl Fn() -> Command) -> (Output, Output) {
    let plain = build().output().expect("run the program");
    let preloaded = build().env("LD_PRELOAD", library()).output().expect("run the program");
    (plain, preloaded)
}

/// Asserts the two runs agree on status and standard output.
fn assert_same(what: &str, plain: &Output, preloaded: &Output) {
    assert_eq!(
        plain.status.code(),
        preloaded.status.code(),
        "{what}: exit status differs\nstderr with tcalloc:\n{}",
        text(&preloaded.stderr)
    );
    assert_eq!(text(&plain.stdout), text(&preloaded.stdout), "{what}: output differs");
    assert!(!text(&preloaded.stderr).contains("tcalloc:"), "{}", text(&preloaded.stderr));
}

#[test]
fn python_regression_tests() {
    // A Python whose regression suite is installed (pyenv's, or Debian's with the
    // libpython3-testsuite package).
    let candidates = ["python3", "/usr/bin/python3", "/usr/local/bin/python3"];
    let python = candidates.iter().find(|p| {
        Command::new(p)
            .args(["-c", "import test.test_dict, test.libregrtest"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    let Some(python) = python else {
        skip("a python3 with its regression test suite (Debian: libpython3.11-testsuite)");
        return;
    };
    let tests = [
        "test_dict",
        "test_list",
        "test_set",
        "test_json",
        "test_re",
        "test_unicode",
        "test_collections",
        "test_heapq",
        "test_bisect",
        "test_string",
        "test_bytes",
        "test_itertools",
        "test_functools",
        "test_weakref",
        "test_gc",
        "test_pickle",
        "test_deque",
        "test_array",
        "test_queue",
        "test_memoryview",
    ];
    let (plain, preloaded) = both(|| {
        let mut c = Command::new(python);
        c.args(["-m", "test", "-j2"]).args(tests);
        c
    });
    let summary = |o: &Output| -> Vec<String> {
        text(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("Total tests:") || l.starts_with("Result:"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(plain.status.code(), preloaded.status.code(), "{}", text(&preloaded.stdout));
    assert_eq!(summary(&plain), summary(&preloaded), "{}", text(&preloaded.stdout));
    assert!(!summary(&preloaded).is_empty(), "no summary in {}", text(&preloaded.stdout));
    assert!(text(&preloaded.stdout).contains("Result: SUCCESS"), "{}", text(&preloaded.stdout));
}

#[test]
fn sqlite_on_300k_rows() {
    if !available("sqlite3") {
        return;
    }
    let dir = scratch("sqlite");
    let script = "
        CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, value REAL);
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000)
            INSERT INTO t SELECT x, printf('name-%08d-%s', x, hex(x * 7919)),
                x % 97, x * 0.5 FROM c;
        CREATE INDEX t_grp ON t(grp, value);
        CREATE INDEX t_name ON t(name);
        SELECT count(*), sum(value), max(length(name)) FROM t;
        SELECT grp, count(*), round(avg(value), 2) FROM t GROUP BY grp ORDER BY grp LIMIT 10;
        SELECT name FROM t WHERE name > 'name-00150000' ORDER BY name LIMIT 3;
        UPDATE t SET name = upper(name) WHERE id % 3 = 0;
        DELETE FROM t WHERE id % 5 = 0;
        SELECT count(*), count(DISTINCT grp) FROM t;
        SELECT group_concat(id, ',') FROM (SELECT id FROM t ORDER BY value DESC LIMIT 20);
    ";
    let (plain, preloaded) = both(|| {
        let db = dir.join(format!("db-{}.sqlite", std::time::Instant::now().elapsed().as_nanos()));
        let _ = std::fs::remove_file(&db);
        let mut c = Command::new("sqlite3");
        c.arg(&db).arg(script);
        c
    });
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    assert!(text(&plain.stdout).contains("300000|"), "{}", text(&plain.stdout));
    assert_same("sqlite3", &plain, &preloaded);
}

#[test]
fn git_on_3000_files() {
    if !available("git") {
        return;
    }
    let run_git = |preload: bool| -> String {
        let dir = scratch(if preload { "git-tcalloc" } else { "git-glibc" });
        for i in 0..3000 {
            let sub = dir.join(format!("d{}", i % 30));
            std::fs::create_dir_all(&sub).unwrap();
            let body = format!("file {i}\n{}\n", "some text ".repeat(i % 50));
            std::fs::write(sub.join(format!("f{i}.txt")), body).unwrap();
        }
        let script = "set -e
            git init -q -b main .
            git add .
            git commit -q -m 'first'
            for i in $(seq 0 7 2999); do echo changed >> d$((i % 30))/f$i.txt; done
            git diff --stat | tail -1
            git commit -qam 'second'
            git log --format='%H %s'
            git gc -q
            git count-objects -v | grep -v size
            git ls-files | wc -l
            git grep -c 'changed' | wc -l";
        let mut c = Command::new("sh");
        c.current_dir(&dir).args(["-c", script]);
        for (k, v) in [
            ("GIT_AUTHOR_NAME", "t"),
            ("GIT_AUTHOR_EMAIL", "t@example.com"),
            ("GIT_COMMITTER_NAME", "t"),
            ("GIT_COMMITTER_EMAIL", "t@example.com"),
            ("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z"),
            ("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z"),
            ("GIT_CONFIG_GLOBAL", "/dev/null"),
            ("GIT_CONFIG_NOSYSTEM", "1"),
        ] {
            c.env(k, v);
        }
        if preload {
            c.env("LD_PRELOAD", library());
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "git failed: {}", text(&out.stderr));
        assert!(!text(&out.stderr).contains("tcalloc:"), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let plain = run_git(false);
    assert!(plain.contains("3000"), "{plain}");
    assert_eq!(plain, run_git(true));
}

#[test]
fn perl_hashes_and_strings() {
    if !available("perl") {
        return;
    }
    let script = r#"
        my %h; my @a;
        for my $i (1 .. 200000) { $h{"key$i"} = "v" x ($i % 40); push @a, [$i, "x$i"]; }
        my $sum = 0; $sum += length($h{$_}) for keys %h;
        my @sorted = sort { $b->[0] <=> $a->[0] } @a;
        my $s = join(",", map { $_->[1] } @sorted[0 .. 9]);
        $s =~ s/x(\d+)/<$1>/g;
        print "$sum ", scalar(keys %h), " $s\n";
    "#;
    let (plain, preloaded) = both(|| {
        let mut c = Command::new("perl");
        c.args(["-e", script]);
        c
    });
    assert!(plain.status.success());
    assert_same("perl", &plain, &preloaded);
}

#[test]
fn gcc_compiles_and_the_program_runs() {
    if !available("cc") {
        return;
    }
    let dir = scratch("gcc");
    let src = dir.join("prog.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n\
         static int cmp(const void *a, const void *b) { return strcmp(*(char **)a, *(char **)b); }\n\
         int main(void) { enum { N = 100000 }; char **v = malloc(N * sizeof *v);\n\
         for (int i = 0; i < N; i++) { v[i] = malloc(16); snprintf(v[i], 16, \"%d\", i * 7919 % N); }\n\
         qsort(v, N, sizeof *v, cmp); printf(\"%s %s %s\\n\", v[0], v[N / 2], v[N - 1]);\n\
         for (int i = 0; i < N; i++) free(v[i]); free(v); return 0; }\n",
    )
    .unwrap();
    let (plain, preloaded) = both(|| {
        let mut c = Command::new("sh");
        c.current_dir(&dir).args(["-c", "cc -O2 -o prog prog.c && ./prog"]);
        c
    });
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    assert_same("gcc and its program", &plain, &preloaded);
}

#[test]
fn cpp_exceptions_unwind_through_the_programs_own_unwinder() {
    // libtcalloc.so carries libgcc's unwinder inside it (build.rs), kept local: a C++ program's
    // throws must still find their handlers, and the objects their unwinding destroys are
    // freed through tcalloc.
    if !available("c++") {
        return;
    }
    let dir = scratch("cpp");
    std::fs::write(
        dir.join("prog.cpp"),
        "#include <cstdio>\n#include <stdexcept>\n#include <string>\n#include <vector>\n\
         static int down(int n) { std::vector<std::string> v(n, std::string(40, 'x'));\n\
         if (n == 0) throw std::runtime_error(\"bottom of \" + std::to_string(v.size()));\n\
         return down(n - 1) + (int)v.size(); }\n\
         int main() { long caught = 0; for (int i = 0; i < 20000; i++) {\n\
         try { down(i % 50); } catch (const std::exception &e) { caught += std::string(e.what()).size(); } }\n\
         std::printf(\"%ld\\n\", caught); return 0; }\n",
    )
    .unwrap();
    let built =
        Command::new("c++").current_dir(&dir).args(["-O2", "-o", "prog", "prog.cpp"]).output();
    let built = built.expect("run c++");
    assert!(built.status.success(), "{}", text(&built.stderr));
    let (plain, preloaded) = both(|| Command::new(dir.join("prog")));
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    assert_eq!(text(&plain.stdout).trim(), "220000");
    assert_same("a C++ program that throws", &plain, &preloaded);
}

#[test]
fn the_library_loads_nothing_but_itself() {
    // Linked without libgcc_s.so.1 (build.rs): preloaded into a program that needs only libc,
    // the process maps libc, the loader and libtcalloc.so, and no other library.
    let maps = Command::new("cat").arg("/proc/self/maps").env("LD_PRELOAD", library()).output();
    let maps = text(&maps.expect("run cat").stdout);
    assert!(maps.contains("libtcalloc.so"), "not preloaded:\n{maps}");
    let libraries: std::collections::BTreeSet<&str> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter_map(|path| path.rsplit('/').next())
        .filter(|name| name.contains(".so"))
        .collect();
    let expected = |name: &&str| {
        name.starts_with("libc.so") || name.starts_with("ld-linux") || *name == "libtcalloc.so"
    };
    let others: Vec<_> = libraries.iter().filter(|name| !expected(name)).collect();
    assert!(others.is_empty(), "libtcalloc.so brought in {others:?}");
}

/// A section of an ELF file: its name, address and file offset, and its size.
#[derive(Debug)]
struct Section {
    name: String,
    address: u64,
    offset: u64,
    size: u64,
}

/// The sections of an ELF64 little-endian file, and the values of its dynamic symbols by name.
fn elf_layout(elf: &[u8]) -> (Vec<Section>, HashMap<String, u64>) {
    let (sections, dynamic, _) = elf_symbols(elf);
    (sections, dynamic)
}

/// The sections of an ELF64 little-endian file, the values of its dynamic symbols by name, and
/// those of its full symbol table (`.symtab`, empty if stripped).
fn elf_symbols(elf: &[u8]) -> (Vec<Section>, HashMap<String, u64>, HashMap<String, u64>) {
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap());
    let c_str = |at: usize| {
        let end = elf[at..].iter().position(|&b| b == 0).unwrap();
        String::from_utf8_lossy(&elf[at..at + end]).into_owned()
    };
    assert_eq!(&elf[..6], b"\x7fELF\x02\x01", "not a 64-bit little-endian ELF file");
    let header = |i: usize| u64_at(0x28) as usize + i * u16_at(0x3a);
    let names = u64_at(header(u16_at(0x3e)) + 0x18) as usize;
    let mut sections = Vec::new();
    let (mut dynsym, mut symtab) = (None, None);
    for i in 0..u16_at(0x3c) {
        let h = header(i);
        let (offset, size) = (u64_at(h + 0x18), u64_at(h + 0x20));
        let table = Some((offset as usize, size as usize, u32_at(h + 0x28)));
        match u32_at(h + 4) {
            11 => dynsym = table,
            2 => symtab = table,
            _ => {}
        }
        let name = c_str(names + u32_at(h));
        sections.push(Section { name, address: u64_at(h + 0x10), offset, size });
    }
    let read = |(offset, size, strings): (usize, usize, usize)| -> HashMap<String, u64> {
        let strings = u64_at(header(strings) + 0x18) as usize;
        (offset..offset + size)
            .step_by(24)
            .map(|symbol| (c_str(strings + u32_at(symbol)), u64_at(symbol + 8)))
            .collect()
    };
    let dynamic = read(dynsym.expect("a .dynsym section"));
    let all = symtab.map(read).unwrap_or_default();
    (sections, dynamic, all)
}

#[test]
fn the_code_a_process_runs_comes_first_in_the_library() {
    // link/text-layout.ld (build.rs): the linkage table, the C runtime's start-up and exit
    // functions and all of tcalloc's code lie in front of the standard library's panic and
    // backtrace code, in at most 128 KiB from the start of the code. The kernel maps a file
    // into a process a folio (up to 128 KiB here) at a time; laid out by default, the start-up
    // function of the standard library and the linkage table (called at exit) lay past that
    // code, and all 348 KiB of the library's code were resident in every process.
    let elf = std::fs::read(library()).expect("read libtcalloc.so");
    let (sections, symbols) = elf_layout(&elf);
    let find = |name: &str| sections.iter().find(|s| s.name == name);
    let hot = find(".text.tcalloc").expect("a .text.tcalloc section");
    let cold = find(".text").expect("a .text section");
    assert!(hot.offset < cold.offset && hot.size > 16 << 10, "{sections:#?}");
    for name in ["malloc", "free", "calloc", "realloc", "tcalloc_malloc", "_Znwm", "_ZdlPv"] {
        let at = symbols[name];
        assert!((hot.address..hot.address + hot.size).contains(&at), "{name} at {at:#x}");
    }
    let first = [".init", ".fini", ".plt"].map(|name| find(name).map(|s| (s.offset, s.size)));
    for (offset, size) in first.into_iter().flatten() {
        assert!(offset + size <= hot.offset + hot.size, "{sections:#?}");
    }
    let start = first.into_iter().flatten().map(|s| s.0).chain([hot.offset]).min().unwrap();
    let end = hot.offset + hot.size;
    assert!(end - start <= 128 << 10, "the code that runs spans {} KiB", (end - start) >> 10);
}

#[test]
fn the_paths_every_program_runs_lie_in_front_of_the_rest_of_tcalloc() {
    // link/text-layout.ld orders tcalloc's own code too: the entry points and the modules of
    // the allocation paths (thread cache, central lists, transfer caches, page heap, page map,
    // metadata, start-up) first, then the rest (statistics, pools, fork handlers, reports).
    // The kernel maps a library's code into a process some 64 KiB at a time around the pages
    // it runs; with the common paths together, a small C program (mimalloc-bench's
    // glibc-simple, cache-thrash) had 64 KiB of the library's code resident instead of 112
    // KiB (/proc/self/pagemap, the library read from disk).
    let elf = std::fs::read(library()).expect("read libtcalloc.so");
    let (sections, dynamic, all) = elf_symbols(&elf);
    assert!(!all.is_empty(), "libtcalloc.so has no symbol table");
    let hot = sections.iter().find(|s| s.name == ".text.tcalloc").expect(".text.tcalloc");
    let in_hot = |at: u64| (hot.address..hot.address + hot.size).contains(&at);
    let exports = ["malloc", "free", "calloc", "realloc", "posix_memalign", "_Znwm", "_ZdlPv"];
    let common = [
        "_ZN7tcalloc9front_end",
        "_ZN7tcalloc17central_free_list",
        "_ZN7tcalloc14transfer_cache",
        "_ZN7tcalloc9page_heap",
        "_ZN7tcalloc8page_map",
        "_ZN7tcalloc8metadata",
        "_ZN7tcalloc9lifecycle10initialize",
    ];
    let rare = [
        "_ZN7tcalloc5stats",
        "_ZN7tcalloc4pool",
        "_ZN7tcalloc9ffi_glibc",
        "_ZN7tcalloc4diag",
        "_ZN7tcalloc9lifecycle11before_fork",
    ];
    let addresses = |prefixes: &[&str]| -> Vec<(u64, String)> {
        let mut found: Vec<_> = all
            .iter()
            .filter(|(name, &at)| in_hot(at) && prefixes.iter().any(|p| name.starts_with(p)))
            .map(|(name, &at)| (at, name.clone()))
            .collect();
        found.sort();
        found
    };
    let (common, rare) = (addresses(&common), addresses(&rare));
    for prefix in ["_ZN7tcalloc9front_end", "_ZN7tcalloc5stats", "_ZN7tcalloc4pool"] {
        let listed = common.iter().chain(&rare).any(|(_, name)| name.starts_with(prefix));
        assert!(listed, "no function of {prefix} in .text.tcalloc");
    }
    let last_common = common.last().unwrap();
    let first_rare = rare.first().unwrap();
    assert!(last_common.0 < first_rare.0, "{last_common:x?} lies after {first_rare:x?}");
    for name in exports {
        let at = dynamic[name];
        assert!(at < first_rare.0, "{name} at {at:#x} lies after {first_rare:x?}");
    }
}

#[test]
fn the_library_keeps_no_big_zeroed_tables_of_its_own() {
    // The arena index (a word and two bytes per OS page of a 32 GiB arena: 80 MiB) is mapped
    // readable only when the arena is reserved, and each chunk's entries are opened for
    // writing when the heap takes the chunk. As a static it was 40 MiB (80 MiB with entries
    // per OS page) of the library's zero-initialised data, which the loader maps writable in
    // every process: charged in full under strict overcommit (`vm.overcommit_memory = 2`) and
    // counted against `RLIMIT_AS` whether or not the process ever allocates.
    let elf = std::fs::read(library()).expect("read libtcalloc.so");
    let (sections, _) = elf_layout(&elf);
    let bss = sections.iter().find(|s| s.name == ".bss").expect("a .bss section");
    assert!(bss.size < 4 << 20, ".bss is {} KiB", bss.size >> 10);
}

#[test]
fn start_up_runs_no_libc_wrapper_that_a_program_leaves_unmapped() {
    // The kernel maps libc's code into a process a 64 KiB window at a time, so every libc
    // function tcalloc calls at start-up costs that much resident memory unless the program
    // runs something near it anyway. `os::cpu_span` reads the CPU mask with `syscall` (which
    // lies beside `mmap`): glibc's `sched_getaffinity` lies among the regex and `getopt` code,
    // and calling it cost 64 KiB of libc's code in most programs (mimalloc-bench's espresso,
    // glibc-simple, glibc-thread, cache-thrash; `/proc/self/pagemap` of libc's mapping), and
    // the CPU count of `sysconf` (`get_nprocs`) parses a file of `/sys`. None of them may come
    // back as an import.
    let elf = std::fs::read(library()).expect("read libtcalloc.so");
    let (_, symbols) = elf_layout(&elf);
    assert!(symbols.contains_key("mmap") && symbols.contains_key("syscall"), "{symbols:?}");
    for name in ["sched_getaffinity", "get_nprocs", "get_nprocs_conf"] {
        assert!(!symbols.contains_key(name), "libtcalloc.so imports {name}");
    }
}

#[test]
fn sort_a_large_file() {
    if !available("sort") {
        return;
    }
    let dir = scratch("sort");
    let input = dir.join("input.txt");
    let lines: String = (0..300_000u64)
        .map(|i| format!("{:x} line {}\n", i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40, i))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let (plain, preloaded) = both(|| {
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!("sort -S 16M {} | md5sum", input.display()));
        c
    });
    assert!(plain.status.success());
    assert_same("sort", &plain, &preloaded);
}
