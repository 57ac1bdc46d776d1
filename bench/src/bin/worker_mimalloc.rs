//! Runs one whole-program workload with mimalloc as the global allocator (see
//! `tcalloc_bench::programs`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    tcalloc_bench::programs::worker_main(&GLOBAL);
}
