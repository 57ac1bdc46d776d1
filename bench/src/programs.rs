//! The whole-program workloads: each is a name and a fixed amount of work, run once per
//! process by a worker binary whose `#[global_allocator]` is the allocator under test.
//!
//! A worker is called as `worker_<allocator> <program> [divisor]`; it runs the program (its
//! work divided by `divisor`, for smoke runs) and prints a checksum (so that nothing can be
//! optimised away). `memory-phases` and `fragmentation <size>`
//! run the memory workloads of `crate::memory`. `worker_<allocator> fastpath <n>` runs
//! `n` 64-byte alloc+free pairs, for the instruction count under callgrind; `fastpath-empty
//! <n>` runs the same loop without allocating, to subtract the loop's own instructions.
//! `fastpath-c <n>` and `fastpath-c-empty <n>` are the same through the C ABI: `malloc(64)`
//! and `free` from the C library, whichever allocator `LD_PRELOAD` put behind them (run by
//! `worker_glibc`, whose own Rust allocations go to `malloc` too); `fastpath-cxx <n>` and
//! `fastpath-cxx-empty <n>` through C++'s `operator new` and sized `operator delete`.
//! `worker_<allocator> scaling <workload> <threads> [divisor]` runs a workload of
//! `crate::scaling_workloads` on `threads` threads and prints its throughput.

use crate::workloads::{self, Growth, Order};
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;

/// One whole-program workload.
pub struct Program {
    pub name: &'static str,
    /// Which bar of the performance bar it belongs to.
    pub kind: Kind,
    pub what: &'static str,
}

/// The groups the report summarises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Small objects: pairs up to 1 KiB, batches, live-set replacement, std code.
    Small,
    /// Sizes above 1 KiB.
    Large,
    /// Threads exchanging or scaling.
    Threads,
    /// realloc growth.
    Realloc,
}

macro_rules! programs {
    ($($name:literal, $kind:ident, $what:literal;)*) => {
        /// Every program, in report order.
        pub const PROGRAMS: &[Program] = &[
            $(Program { name: $name, kind: Kind::$kind, what: $what },)*
        ];
    };
}

programs! {
    "pairs-16", Small, "alloc+free pairs of 16 B";
    "pairs-64", Small, "alloc+free pairs of 64 B";
    "pairs-256", Small, "alloc+free pairs of 256 B";
    "pairs-1k", Small, "alloc+free pairs of 1 KiB";
    "batch-lifo", Small, "10 000 allocations (16-512 B), freed last-in first-out";
    "batch-fifo", Small, "10 000 allocations (16-512 B), freed first-in first-out";
    "batch-random", Small, "10 000 allocations (16-512 B), freed in random order";
    "scatter-1m", Small, "1 000 000 allocations (16-512 B), freed in random order (cache-cold frees)";
    "larson-1t", Small, "random replacement in a live set of 2 000 small blocks, 1 thread";
    "larson-2t", Threads, "random replacement in a live set of 2 000 small blocks, 2 threads";
    "std-collections", Small, "HashMap of words, BTreeMap index, sorting strings, nested Vecs";
    "binary-trees", Small, "binary trees of boxed nodes, depth 4 to 20 (the classic benchmark)";
    "json-tree", Small, "nested maps, arrays and strings built, serialised and dropped";
    "pairs-4k", Large, "alloc+free pairs of 4 KiB";
    "pairs-32k", Large, "alloc+free pairs of 32 KiB";
    "pairs-256k", Large, "alloc+free pairs of 256 KiB";
    "pairs-1m", Large, "alloc+free pairs of 1 MiB";
    "pairs-8m", Large, "alloc+free pairs of 8 MiB";
    "producer-consumer", Threads, "one thread allocates 64 B blocks, another frees them all";
    "churn-1t", Threads, "thread-local churn through a 64-block window, 1 thread";
    "churn-2t", Threads, "thread-local churn through a 64-block window, 2 threads";
    "churn-4t", Threads, "thread-local churn through a 64-block window, 4 threads";
    "realloc-doubling", Realloc, "a block grown by realloc from 16 B to 1 MiB by doubling";
    "realloc-steps", Realloc, "a block grown by realloc from 16 B to 1 MiB by 1 KiB steps";
}

/// Runs program `name` on allocator `a`, its amount of work divided by `divisor` (1 for the
/// real thing); `None` if there is no such program.
pub fn run<A: GlobalAlloc + Sync>(a: &'static A, name: &str, divisor: usize) -> Option<usize> {
    let n = |count: usize| (count / divisor.max(1)).max(1);
    let sum = match name {
        "pairs-16" => workloads::pairs(a, 16, n(60_000_000)),
        "pairs-64" => workloads::pairs(a, 64, n(60_000_000)),
        "pairs-256" => workloads::pairs(a, 256, n(60_000_000)),
        "pairs-1k" => workloads::pairs(a, 1024, n(60_000_000)),
        "pairs-4k" => workloads::pairs(a, 4096, n(30_000_000)),
        "pairs-32k" => workloads::pairs(a, 32 << 10, n(20_000_000)),
        "pairs-256k" => workloads::pairs(a, 256 << 10, n(4_000_000)),
        "pairs-1m" => workloads::pairs(a, 1 << 20, n(2_000_000)),
        "pairs-8m" => workloads::pairs(a, 8 << 20, n(100_000)),
        "batch-lifo" => workloads::batch(a, Order::Lifo, 10_000, n(1_500)),
        "batch-fifo" => workloads::batch(a, Order::Fifo, 10_000, n(1_500)),
        "batch-random" => workloads::batch(a, Order::Random, 10_000, n(1_000)),
        "scatter-1m" => workloads::batch(a, Order::Random, 1_000_000, n(10)),
        "larson-1t" => workloads::larson(a, 1, 2_000, n(10_000_000)),
        "larson-2t" => workloads::larson(a, 2, 2_000, n(10_000_000)),
        "std-collections" => workloads::std_collections(n(8)),
        "binary-trees" => workloads::binary_trees(if divisor > 1 { 8 } else { 18 }),
        "json-tree" => workloads::json_tree(n(25)),
        "producer-consumer" => workloads::producer_consumer(a, n(10_000_000)),
        "churn-1t" => workloads::churn(a, 1, n(30_000_000)),
        "churn-2t" => workloads::churn(a, 2, n(30_000_000)),
        "churn-4t" => workloads::churn(a, 4, n(30_000_000)),
        "realloc-doubling" => workloads::realloc_growth(a, Growth::Doubling, n(20_000)),
        "realloc-steps" => workloads::realloc_growth(a, Growth::Steps, n(100)),
        _ => return None,
    };
    Some(sum)
}

/// The worker binaries' `main`: runs the program named by the first argument on `a` (which
/// is also the process's global allocator) and prints a checksum. A second argument divides
/// the program's work (`--smoke` runs pass 20).
pub fn worker_main<A: GlobalAlloc + Sync>(a: &'static A) {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("");
    let count = || args.get(2).and_then(|n| n.parse::<usize>().ok()).unwrap_or(1_000_000);
    let divisor = args.get(2).and_then(|n| n.parse::<usize>().ok()).unwrap_or(1);
    let sum = match name {
        "memory-phases" => crate::memory::phases(),
        "fragmentation" => crate::memory::fragmentation(count()),
        "fastpath" => fastpath(a, count(), true),
        "fastpath-empty" => fastpath(a, count(), false),
        "fastpath-c" => fastpath_c::<true>(count()),
        "fastpath-c-empty" => fastpath_c::<false>(count()),
        "fastpath-cxx" => fastpath_cxx::<true>(count()),
        "fastpath-cxx-empty" => fastpath_cxx::<false>(count()),
        "scaling" => crate::scaling_workloads::worker(a, &args[2..]),
        _ => match run(a, name, divisor) {
            Some(sum) => sum,
            None => {
                eprintln!("unknown program {name:?}; known: {:?}", names());
                std::process::exit(2);
            }
        },
    };
    println!("{name} checksum {sum}");
}

/// `n` 64-byte alloc+free pairs (or the bare loop, to measure its own cost). Never inlined,
/// so that how the loop compiles does not depend on the rest of `worker_main`.
#[inline(never)]
fn fastpath<A: GlobalAlloc>(a: &A, n: usize, allocate: bool) -> usize {
    let l = Layout::from_size_align(64, 8).expect("valid layout");
    let mut sum = 0usize;
    for _ in 0..n {
        let l = black_box(l);
        if allocate {
            // SAFETY: non-zero size; the block is freed right away with the same layout.
            unsafe {
                let p = a.alloc(l);
                sum = sum.wrapping_add(black_box(p) as usize);
                a.dealloc(p, l);
            }
        } else {
            sum = sum.wrapping_add(black_box(l.size()));
        }
    }
    sum
}

/// `n` pairs of `malloc(64)` and `free` through the C ABI (or the bare loop): the loop a C
/// program would compile to (the two calls, the move of the pointer into `free`'s argument
/// register, the counter). The pointer escapes into an empty `asm!` block, which the compiler
/// cannot see through, so the pair cannot be removed (as a `malloc` whose block is only freed
/// would be); the asm emits no instruction. Never inlined, as `fastpath`. Returns `n`.
#[inline(never)]
fn fastpath_c<const ALLOCATE: bool>(n: usize) -> usize {
    for _ in 0..n {
        if ALLOCATE {
            // SAFETY: `malloc` with any size is sound; its block is freed once, right away
            // (`free(NULL)` too would be sound if it failed).
            unsafe {
                let p = libc::malloc(64);
                escape(p);
                libc::free(p);
            }
        } else {
            escape(std::ptr::null_mut());
        }
    }
    n
}

/// C++'s `operator new(size_t)`.
type OperatorNew = unsafe extern "C" fn(usize) -> *mut libc::c_void;
/// C++'s sized `operator delete(void *, size_t)`.
type OperatorDelete = unsafe extern "C" fn(*mut libc::c_void, usize);

/// The operators a C++ program's calls reach: the C++ runtime (`libstdc++.so.6`) is loaded,
/// and the names looked up in the global scope, where a preloaded library's definitions come
/// before the runtime's own.
fn cxx_operators() -> (OperatorNew, OperatorDelete) {
    // SAFETY: loading the C++ runtime runs only its initialisers; the two names are looked
    // up with the types the Itanium C++ ABI gives them.
    unsafe {
        let runtime = libc::dlopen(c"libstdc++.so.6".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
        if runtime.is_null() {
            eprintln!(
                "fastpath-cxx needs the C++ runtime, libstdc++.so.6 (apt-get install libstdc++6)"
            );
            std::process::exit(2);
        }
        let new = libc::dlsym(libc::RTLD_DEFAULT, c"_Znwm".as_ptr());
        let delete = libc::dlsym(libc::RTLD_DEFAULT, c"_ZdlPvm".as_ptr());
        assert!(
            !new.is_null() && !delete.is_null(),
            "the C++ runtime lacks operator new or delete"
        );
        let new = std::mem::transmute::<*mut libc::c_void, OperatorNew>(new);
        let delete = std::mem::transmute::<*mut libc::c_void, OperatorDelete>(delete);
        (new, delete)
    }
}

/// `n` pairs of C++ `new` of 64 bytes and sized `delete` (or the bare loop), as
/// [`fastpath_c`]: what `auto *p = new T; use(p); delete p;` compiles to, for a 64-byte `T`,
/// called through pointers to the operators. Returns `n`.
#[inline(never)]
fn fastpath_cxx<const ALLOCATE: bool>(n: usize) -> usize {
    let (new, delete) = cxx_operators();
    for _ in 0..n {
        if ALLOCATE {
            // SAFETY: `new` of 64 bytes, deleted once, right away, with its size.
            unsafe {
                let p = new(64);
                escape(p);
                delete(p, 64);
            }
        } else {
            escape(std::ptr::null_mut());
        }
    }
    n
}

/// Makes the compiler assume that `p` is used (and anything reachable from it read or
/// written), at no cost: the block is an empty `asm!`.
#[inline(always)]
fn escape(p: *mut libc::c_void) {
    // SAFETY: the asm emits nothing and touches no register but its input.
    unsafe { std::arch::asm!("/* {0} */", in(reg) p, options(nostack, preserves_flags)) };
}

/// The names of every program.
pub fn names() -> Vec<&'static str> {
    PROGRAMS.iter().map(|p| p.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_program_runs_and_names_are_unique() {
        static SYSTEM: std::alloc::System = std::alloc::System;
        let mut seen = std::collections::HashSet::new();
        for p in PROGRAMS {
            assert!(seen.insert(p.name), "duplicate {}", p.name);
            assert!(run(&SYSTEM, p.name, 10_000).is_some(), "{} is listed but unknown", p.name);
        }
        assert!(run(&SYSTEM, "no-such-program", 1).is_none());
        assert!(fastpath(&SYSTEM, 10, true) > 0);
        assert_eq!(fastpath(&SYSTEM, 10, false), 640);
        assert_eq!(fastpath_c::<true>(10), 10);
        assert_eq!(fastpath_c::<false>(10), 10);
    }
}
