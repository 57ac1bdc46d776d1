//! Runs one whole-program workload with glibc as the global allocator (see
//! `tcalloc_bench::programs`).

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    tcalloc_bench::programs::worker_main(&GLOBAL);
}
