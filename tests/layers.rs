//! The layer rule, checked: every module under `src/` uses only the modules below it, in the
//! order that the crate docs (`src/lib.rs`) and the README's "How it is built" draw.
//!
//! The test reads the sources as text: each `crate::module` path (in `use` lines, groups such
//! as `use crate::{a, b}`, and inline calls) outside comments is a use of that module, and a
//! path to an item of the crate root (`crate::release_free_memory`) is a use of `lib`. A file
//! under `src/x/` belongs to module `x`. A new module must be given a place in [`LAYERS`]; an
//! upward use fails here, with the file and the two layers named.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, top first. A module may use the modules of the levels below its own, not of
/// its own level or above.
const LAYERS: &[&[&str]] = &[
    // The C ABI: the malloc family, glibc's extras and the prefixed twins of the Rust API.
    &["ffi", "ffi_cxx", "ffi_glibc"],
    // The crate root: the Rust API (`TcAlloc`, `stats()`, `release_free_memory`, `Pool`).
    &["lib"],
    &["pool"],
    &["global"],
    // Start-up (settings, fork handlers, the exit report).
    &["lifecycle"],
    &["stats"],
    &["router"],
    &["front_end"],
    &["release"],
    &["central_free_list"],
    &["transfer_cache"],
    &["page_heap"],
    &["large"],
    &["page_map"],
    &["size_class"],
    &["metadata"],
    &["span"],
    &["free_list"],
    &["env"],
    &["os"],
    &["sync"],
    &["config", "diag"],
];

/// Upward uses that are part of the design, each with its reason. Keep this list short.
const ALLOWED_UPWARD: &[(&str, &str, &str)] = &[(
    "front_end",
    "lifecycle",
    "a thread cache's first activation starts the process (`lifecycle::ensure_initialized`: \
     the settings, the fork handlers, the exit report); the start-up needs the front end \
     (its budget, its registry for fork) and the exit report needs `stats`, so no layer below \
     the front end can own it, and no code above the front end is sure to run first",
)];

fn level_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|level| level.contains(&module))
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file under `src/` belongs to: `src/x.rs` and `src/x/...` are `x`.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative.components().next().unwrap().as_os_str().to_str().unwrap();
    first.strip_suffix(".rs").unwrap_or(first).to_string()
}

/// The source without its comments (`//` to the end of the line, `/* */` blocks).
fn strip_comments(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let (mut i, mut in_string) = (0, false);
    let find = |from: usize, what: &[u8]| bytes[from..].windows(what.len()).position(|w| w == what);
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            if c == b'\\' {
                out.extend_from_slice(&bytes[i..(i + 2).min(bytes.len())]);
                i += 2;
                continue;
            }
            if c == b'"' {
                in_string = false;
            }
        } else if c == b'"' && (i == 0 || bytes[i - 1] != b'\'') {
            in_string = true;
        } else if bytes[i..].starts_with(b"//") {
            i = find(i, b"\n").map_or(bytes.len(), |n| i + n);
            continue;
        } else if bytes[i..].starts_with(b"/*") {
            i = find(i, b"*/").map_or(bytes.len(), |n| i + n + 2);
            continue;
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first path segment of every `crate::...` path in `code`, groups included:
/// `crate::a::b` gives `a`, `crate::{a, b::{c, d}}` gives `a` and `b`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        if at > 0 && is_ident(code[..at].chars().last().unwrap()) {
            continue; // `other_crate::`
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The segments at depth 0 of the group, each up to its `::`, `,` or `}`.
            let (mut depth, mut start) = (0, true);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && is_ident(c) => {
                        let name: String =
                            group[i..].chars().take_while(|&c| is_ident(c)).collect();
                        found.insert(name);
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

/// The modules `lib.rs` uses by bare path (`stats::stats`, `pub use pool::{...}`), which
/// the crate root writes without `crate::`.
fn root_paths(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    modules
        .iter()
        .filter(|m| {
            code.match_indices(&format!("{m}::")).any(|(at, _)| {
                let before = code[..at].chars().last();
                !before.is_some_and(|c| is_ident(c) || c == ':')
            })
        })
        .cloned()
        .collect()
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();

    let mut problems = Vec::new();
    for module in &modules {
        if level_of(module).is_none() {
            problems.push(format!("module `{module}` has no place in LAYERS (tests/layers.rs)"));
        }
    }
    let mut uses: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let code = strip_comments(&fs::read_to_string(file).unwrap());
        let mut used = crate_paths(&code);
        if module == "lib" {
            used.extend(root_paths(&code, &modules));
        }
        for name in used {
            // A path to an item of the root (not a module) uses the root.
            let target = if modules.contains(&name) { name } else { "lib".to_string() };
            if target != module {
                uses.entry((module.clone(), target)).or_insert_with(|| file.clone());
            }
        }
    }
    for ((from, to), file) in &uses {
        let (Some(a), Some(b)) = (level_of(from), level_of(to)) else { continue };
        let allowed = ALLOWED_UPWARD.iter().any(|&(f, t, _)| f == from && t == to);
        if b <= a && !allowed {
            let relation = if a == b { "its own level" } else { "a layer above it" };
            problems.push(format!(
                "{}: `{from}` uses `{to}`, {relation} (order in tests/layers.rs)",
                file.strip_prefix(src.parent().unwrap()).unwrap().display()
            ));
        }
    }
    // An allowed exception that the code no longer needs goes from the list.
    for &(from, to, _) in ALLOWED_UPWARD {
        if !uses.contains_key(&(from.to_string(), to.to_string())) {
            problems.push(format!("ALLOWED_UPWARD lists `{from}` -> `{to}`, which is unused"));
        }
    }
    assert!(problems.is_empty(), "layer rule broken:\n{}", problems.join("\n"));
}

#[test]
fn the_parser_finds_every_form_of_use() {
    let code = strip_comments(
        "use crate::a::B;\nuse crate::{c, d::{E, F}, g};\n// crate::commented\n\
         fn f() { crate::h::call(); $crate::i::j!(); other_crate::k(); \"// not a comment\"; }\n\
         /* crate::blocked */",
    );
    let found: Vec<_> = crate_paths(&code).into_iter().collect();
    assert_eq!(found, ["a", "c", "d", "g", "h", "i"]);
    let modules = ["stats", "pool"].map(String::from).into_iter().collect();
    let root = root_paths("pub use pool::Pool; fn s() { stats::stats() } x::stats::y", &modules);
    assert_eq!(root.into_iter().collect::<Vec<_>>(), ["pool", "stats"]);
}
