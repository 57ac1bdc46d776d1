//! Side-by-side benchmarks of tcalloc, glibc malloc, mimalloc and jemalloc.
//!
//! - [`workloads`]: the allocation workloads, generic over `GlobalAlloc`;
//! - [`programs`]: the whole-program workloads, each a named, fixed amount of work, run by the
//!   worker binaries (`worker_tcalloc`, `worker_glibc`, `worker_mimalloc`, `worker_jemalloc`,
//!   one per allocator installed as `#[global_allocator]`);
//! - the `tcalloc-bench` binary runs every program under every allocator in its own process,
//!   interleaved, and reports time and peak RSS (`cargo run --release -p tcalloc-bench`);
//! - `benches/alloc.rs`: the same workloads as criterion benchmarks, the four allocators side
//!   by side in one process (`cargo bench -p tcalloc-bench --bench alloc`);
//! - [`memory`]: resident memory over time through phases of growth and shrinkage, and the
//!   fragmentation case (`cargo run --release -p tcalloc-bench -- memory`);
//! - [`scaling_workloads`]: the multi-threaded workloads at any thread count, for
//!   `cargo run --release -p tcalloc-bench -- scaling`;
//! - the binary's other subcommands write the remaining results files: `criterion` (the
//!   criterion tables), `preload` (real programs), `instructions` (callgrind) and
//!   `build-time` (what tcalloc adds to a user's build).
//!
//! The binary builds the worker binaries itself, so `cargo run --release -p tcalloc-bench`
//! works on a fresh clone; `-- --smoke` runs every program once at a twentieth of its work.

pub mod memory;
pub mod programs;
pub mod scaling_workloads;
pub mod workloads;

/// The allocators compared, in the order tables list them.
pub const ALLOCATORS: [&str; 4] = ["tcalloc", "glibc", "mimalloc", "jemalloc"];
